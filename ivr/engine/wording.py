"""How the engine hears yes and no and the other words a caller may answer with, in the
call's language (the lists are in the message catalogue: ivr.i18n.sentences)."""

from __future__ import annotations

from ivr.i18n import Language
from ivr.i18n import sentences as S
from speech.normalize import words as _words

from . import events as E


def words(text: str) -> str:
    """Speech as lower-case words without punctuation, accents or elisions ("Rappelez-moi."
    -> "rappelez moi", "l'annuler" -> "l annuler"), the way the catalogue's word lists are
    compared."""
    return " ".join(_words(text)).replace("'", " ")


def says(text: str, phrases: tuple[str, ...]) -> bool:
    """Whether `text` (already through `words`) contains one of the phrases, as whole words."""
    padded = f" {text} "
    return any(f" {w} " in padded for w in (words(p) for p in phrases) if w)


def yes_no(event: E.Event, lang: Language) -> str | None:
    """"yes", "no" or None for a key (1 yes, 2 no) or words in the call's language."""
    if isinstance(event, E.Digits):
        return {"1": "yes", "2": "no"}.get(event.digits)
    if isinstance(event, E.Speech):
        text = words(event.text)
        yes, no = lang.words(S.YES_WORDS), lang.words(S.NO_WORDS)
        if text in {words(w) for w in yes}:
            return "yes"
        said_no = says(text, no)
        if says(text, yes) and not said_no:
            return "yes"
        if said_no:
            return "no"
    return None


def yes_no_hints(lang: Language) -> tuple[str, ...]:
    """Words that help Twilio's recognizer hear a yes or a no."""
    return lang.words(S.YES_WORDS)[:4] + lang.words(S.NO_WORDS)[:3]


def whole(value: float | None) -> int | None:
    """Seconds as the step log keeps them."""
    return None if value is None else int(round(value))
