"""Text normalisation for speech-recogniser output and operator phrases.

Recognisers disagree on surface form: Twilio's ``SpeechResult`` is capitalised and
punctuated ("Um, I was charged twice."), vosk gives lowercase words with no punctuation
("um i was charged twice"). Intent matching compares both against phrases an operator
typed, so everything goes through :func:`normalize` first: lowercase, punctuation removed
(apostrophes inside words kept), hesitation fillers dropped, leading discourse markers
("yeah so", "okay", "hi") dropped, whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FILLERS", "LEADING_MARKERS", "normalize", "words"]

#: Hesitation sounds removed wherever they occur.
FILLERS: frozenset[str] = frozenset(
    {
        "um", "umm", "ummm", "uh", "uhh", "uhm", "uhhm", "er", "erm", "err", "hmm", "hm",
        "hmmm", "mm", "mmm", "mhm", "ah", "ahh", "eh", "huh",
    }
)  # fmt: skip

#: Discourse markers removed only at the start of an utterance ("yeah so my bill...").
#: They carry no intent there, but can elsewhere ("i'd like to", "so i can pay").
LEADING_MARKERS: frozenset[str] = frozenset(
    {
        "yeah", "yea", "yep", "yes", "ok", "okay", "so", "well", "oh", "like", "hi", "hello",
        "hey", "and", "but", "right", "alright", "basically", "actually", "just", "um",
        "please", "sorry", "sir", "maam",
    }
)  # fmt: skip

#: Multi-word fillers removed anywhere.
_FILLER_PHRASES = re.compile(r"\b(?:you know|i mean|kind of like|sort of like)\b")

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
_NON_WORD = re.compile(r"[^\w' ]+")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    """Lowercased words of ``text`` with punctuation removed; fillers are kept."""
    text = _strip_accents(text.translate(_APOSTROPHES)).lower()
    text = text.replace("_", " ")
    text = _NON_WORD.sub(" ", text)
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return text.split()


def normalize(text: str) -> str:
    """Canonical form of an utterance or phrase for matching.

    >>> normalize("Um, yeah so... I was CHARGED twice!")
    'i was charged twice'
    >>> normalize("  Agent. ")
    'agent'

    If removing fillers would leave nothing (the caller said only "okay"), the words are
    kept as they were, so a bare "yes" or "okay" is still there to match.
    """
    tokens = words(text)
    if not tokens:
        return ""
    joined = _FILLER_PHRASES.sub(" ", " ".join(tokens))
    kept = [w for w in joined.split() if w not in FILLERS]
    start = 0
    while start < len(kept) and kept[start] in LEADING_MARKERS:
        start += 1
    kept = kept[start:]
    if not kept:
        kept = [w for w in tokens if w not in FILLERS] or tokens
    return _SPACES.sub(" ", " ".join(kept)).strip()
