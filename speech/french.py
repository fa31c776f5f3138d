"""French speech understanding: route what a French caller says to a flow's intents.

The meaning model of :mod:`speech.intents` is English, so French is matched on words and
their synonyms, and on meaning with a multilingual model (:mod:`speech.multilingual`):

1. **Analysis** (:class:`FrenchAnalyzer`). Lowercase; elisions undone (``j'ai`` is ``je ai``,
   ``l'installation`` is ``le installation``); hyphens split (``passez-moi``); numbers said in
   words become digits (``vingt-neuf`` is ``29``, so ``deux fois`` and ``2 fois`` are the
   same); every word reduced to its stem with Snowball's French stemmer (PyStemmer), then
   accents removed, so ``facturé``, ``factures``, ``facturation`` and ``facturee`` meet.
2. **Synonyms** (``speech/data/fr/synonyms.txt``). Words and expressions that mean the same
   for routing a support call (``prélèvement``, ``débiter``, ``pris de l'argent``) become one
   *concept*; expressions are matched before single words. Related concepts share a *topic*
   (a bill, a payment and a direct debit are all money). Words that say nothing about what
   the caller wants (``speech/data/fr/stopwords.txt``: articles, pronouns, ``je voudrais``,
   ``bonjour``, ``euh``, common verbs...) are dropped.
3. **Scoring** (:class:`FrenchMatcher`). Each intent is the set of concepts of its example
   phrases, keywords and name. A concept weighs more the fewer intents have it (inverse
   document frequency), twice as much when it is a keyword, and less when the word said for
   it is also common in off-topic speech (``speech/data/fr/background.txt``). A concept the
   intent lacks but whose topic it has counts for part. An utterance's *evidence* for an
   intent is that weight, less a part for each word neither the intents nor their topics
   know (an off-topic sentence is mostly such words), less a part of the best other intent's.
4. **Meaning** (:class:`_SemanticIndex`). The utterance's similarity to each intent's
   phrases under the multilingual model, in standard deviations above off-topic French
   speech, is added to the word evidence (floored at :data:`LEXICAL_FLOOR`) with a small
   weight; without the model's package the word evidence decides alone.
   Evidence maps to a confidence like the English matcher's, with the same meaning of
   :data:`REJECT_BELOW` (fall back) and :data:`CONFIRM_BELOW` (confirm first).

Exact phrases and keywords decide first, with confidence 1, as in
:class:`speech.intents.KeywordMatcher`: phrases on concepts ("ma facturation" is the phrase
"question sur ma facture" said another way), unless the words said are common off-topic;
keywords on the stems of their words (``conseillère`` finds the keyword ``conseiller``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from speech.errors import ModelUnavailable
from speech.intents import (
    BLEND,
    MIN_SPREAD,
    NO_MATCH,
    TOP_K,
    IntentMatch,
    IntentSpec,
    intent_label,
    parse_intents,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from speech.multilingual import MultilingualEncoder

logger = logging.getLogger("speech.intents")

__all__ = ["CONFIRM_BELOW", "REJECT_BELOW", "FrenchAnalyzer", "FrenchMatcher", "get_analyzer", "parse_number"]

# --- Calibration (tuned on shared/bench/intents-fr/dev.jsonl; see docs/intents.md) ------
#: Weight of each word no intent knows, against the evidence. Weights are in units of a concept
#: that only one intent has, whatever the number of intents.
UNKNOWN_WEIGHT = 0.26
#: Weight of the runner-up intent's shared concepts, against the evidence.
RUNNER_UP_WEIGHT = 0.25
#: How much a concept that off-topic speech also uses (speech/data/fr/background.txt) is
#: discounted: its weight is divided by ``1 + BACKGROUND_WEIGHT * lines using it``.
BACKGROUND_WEIGHT = 1.0
#: A concept the intent does not have, but whose topic it has (a caller says "prélèvement" to an
#: intent written with "facture"), counts this share of the topic's IDF weight.
TOPIC_WEIGHT = 0.5
#: A word the caller says alone that the intent has only inside an expression ("carte" to an
#: intent written with "carte bancaire") counts this share of its IDF weight.
PART_WEIGHT = 0.5
#: A keyword's concept counts this many times its IDF weight.
KEYWORD_BOOST = 2.0
#: Evidence -> confidence: ``1 / (1 + exp(-(evidence - EVIDENCE_MID) / EVIDENCE_SCALE))``.
EVIDENCE_MID = 0.3
EVIDENCE_SCALE = 0.32
#: With the multilingual model (speech/multilingual.py): intents are ranked by their lexical
#: evidence (never below LEXICAL_FLOOR: a word the intents do not know must not outvote meaning)
#: plus SEMANTIC_RANK_WEIGHT times the model's evidence (standard deviations above off-topic
#: speech); the best one's evidence is its floored lexical evidence plus SEMANTIC_WEIGHT times
#: the model's.
LEXICAL_FLOOR = 0.0
SEMANTIC_RANK_WEIGHT = 0.1
SEMANTIC_WEIGHT = 0.2
#: How close the utterance comes to off-topic speech itself (the mean similarity of its 3
#: nearest background utterances, in standard deviations of the same figure among the
#: background utterances) counts this much against every intent.
BACKGROUND_PENALTY = 0.2
#: Evidence -> confidence with the model: the same curve, its own middle and scale.
HYBRID_MID = 0.625
HYBRID_SCALE = 0.4
#: Below this confidence the match is rejected (evidence EVIDENCE_MID, or HYBRID_MID).
REJECT_BELOW = 0.5
#: Below this confidence (and at or above REJECT_BELOW) the flow should confirm.
CONFIRM_BELOW = 0.88


# --------------------------------------------------------------------------- numbers

_UNITS = {
    "zero": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6,
    "sept": 7, "huit": 8, "neuf": 9, "dix": 10, "onze": 11, "douze": 12, "treize": 13,
    "quatorze": 14, "quinze": 15, "seize": 16, "vingt": 20, "vingts": 20, "trente": 30,
    "quarante": 40, "cinquante": 50, "soixante": 60, "septante": 70, "huitante": 80,
    "octante": 80, "nonante": 90,
}  # fmt: skip
_SCALES = {"cent": 100, "cents": 100, "mille": 1000, "million": 1_000_000, "millions": 1_000_000}


def parse_number(words: list[str]) -> int | None:
    """The value of French number words (accents removed, hyphens split): ``["vingt", "et",
    "un"]`` -> 21, ``["quatre", "vingt", "dix", "neuf"]`` -> 99; None if they are not one
    number."""
    total = current = 0
    seen = False
    for i, word in enumerate(words):
        if word == "et" and 0 < i < len(words) - 1:
            continue
        if word in _UNITS:
            value = _UNITS[word]
            # quatre-vingt(s): a multiplier, not an addition
            if value == 20 and current and current % 10 == 4 and current < 10:
                current *= 20
            else:
                current += value
            seen = True
        elif word in _SCALES:
            scale = _SCALES[word]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total += (current or 1) * scale
                current = 0
            seen = True
        else:
            return None
    return total + current if seen else None


# --------------------------------------------------------------------------- analysis

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
#: Elided words and their full form: j'ai -> je ai.
_ELISIONS = {
    "j": "je", "l": "le", "d": "de", "m": "me", "t": "te", "s": "se", "n": "ne", "c": "ce",
    "qu": "que", "jusqu": "jusque", "lorsqu": "lorsque", "puisqu": "puisque", "presqu": "presque",
}  # fmt: skip
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


_FEMININE = (("ères", "er"), ("ère", "er"), ("ieres", "ier"), ("iere", "ier"), ("euses", "eur"),
             ("euse", "eur"), ("rices", "eur"), ("rice", "eur"), ("iennes", "ien"), ("ienne", "ien"))


def _base_form(word: str) -> str:
    """A word in the masculine singular, roughly, so that the stemmer sees one form: Snowball
    leaves conseiller, conseillers and conseillère with three stems."""
    for ending, replacement in _FEMININE:
        if word.endswith(ending) and len(word) > len(ending) + 2:
            return word[: -len(ending)] + replacement
    if len(word) > 4 and word[-1] == "s" and word[-2] not in "su":
        return word[:-1]
    return word


def _root(stem: str) -> str:
    """A stem without its final vowels, when enough is left: Snowball leaves some verb forms
    apart (résilie -> resil, résilier -> resili) that mean the same for routing."""
    root = stem.rstrip("aeiouy")
    return root if len(root) >= 4 else stem


def _words(text: str) -> list[str]:
    """Lowercase words, elisions undone and hyphens split; accents kept (the stemmer uses them)."""
    out: list[str] = []
    for raw in _WORD.findall(unicodedata.normalize("NFC", text.translate(_APOSTROPHES)).lower()):
        head, sep, tail = raw.partition("'")
        if sep and _strip_accents(head) in _ELISIONS:
            out.append(_ELISIONS[_strip_accents(head)])
            raw = tail
        if raw == "aujourd'hui" or "'" not in raw:  # quelqu'un, aujourd'hui stay whole
            out.append(raw)
        else:
            out.extend(part for part in raw.split("'") if part)
    return out


def _numbers_as_digits(words: list[str]) -> list[str]:
    """Runs of number words become one token of digits: "vingt neuf euros" -> "29 euros".
    ``un``/``une`` alone stay words (they are articles far more often than numbers)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and (
            _strip_accents(words[j]) in _UNITS or _strip_accents(words[j]) in _SCALES
            or (words[j] == "et" and j > i and j + 1 < len(words) and _strip_accents(words[j + 1]) in _UNITS)
        ):
            j += 1
        run = [_strip_accents(w) for w in words[i:j]]
        if run and run not in (["un"], ["une"]):
            value = parse_number(run)
            if value is not None:
                out.append(str(value))
                i = j
                continue
        out.append(words[i])
        i += 1
    return out


@dataclass(frozen=True)
class Analysis:
    """An utterance as concepts, in order: synonym groups (``~factur``) and the stems of
    other content words; ``words`` holds what was said for each (a stem, or an expression's
    stems joined by spaces). ``empty`` when nothing but filler was said."""

    concepts: tuple[str, ...]
    words: tuple[str, ...]
    #: the content words inside the expressions matched (``carte`` of ``carte bancaire``)
    parts: tuple[str, ...] = ()
    #: the stems of every content word, in order (expressions included)
    stems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.concepts


class FrenchAnalyzer:
    """Turns French text into concepts: stems, numbers, synonym groups, no stop words.

    Loaded once per process (:func:`get_analyzer`); thread-safe (the stemmer is guarded by a
    lock, everything else is read-only once built)."""

    def __init__(
        self,
        synonyms: Iterable[str] | None = None,
        stopwords: Iterable[str] | None = None,
        background: Iterable[str] | None = None,
    ) -> None:
        try:
            import Stemmer
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise RuntimeError(f"French intents need PyStemmer ({exc})") from exc
        self._stemmer = Stemmer.Stemmer("french")
        self._lock = threading.Lock()
        self._stem_cache: dict[str, str] = {}
        if stopwords is None:
            stopwords = _data_lines("stopwords.txt")
        self.stopwords = frozenset(_strip_accents(w) for line in stopwords for w in line.split())
        if synonyms is None:
            synonyms = _data_lines("synonyms.txt")
        # concept of a single stem; expressions (several stems) in longest-first order
        self.single: dict[str, str] = {}
        self.expressions: dict[tuple[str, ...], str] = {}
        #: words matched as written ("=opérateur": not opération, which has the same stem)
        self.exact_words: dict[str, str] = {}
        #: the topic of each synonym group (its "[topic]" section), if any
        self.topics: dict[str, str] = {}
        topic = ""
        for line in synonyms:
            if line.strip().startswith("[") and line.strip().endswith("]"):
                topic = line.strip()[1:-1].strip()
                continue
            items = [item.strip() for item in line.split(",") if item.strip()]
            if not items:
                continue
            concept = "" if items[0] == "-" else "~" + "_".join(self.stems(items[0]))
            if concept and topic:
                self.topics[concept] = topic
            for item in items[1:] if not concept else items:
                if item.startswith("="):  # this word as written, not every word of its stem
                    self.exact_words[_strip_accents(item[1:].strip().lower())] = concept
                    continue
                stems = tuple(self.stems(item))
                if len(stems) == 1:
                    self.single.setdefault(stems[0], concept)
                elif stems:
                    self.expressions.setdefault(stems, concept)
        self._longest = max((len(e) for e in self.expressions), default=1)
        #: how many off-topic lines use each word (a stem or an expression)
        self.background: dict[str, int] = {}
        for line in _data_lines("background.txt") if background is None else background:
            for word in set(self.analyze(line).words):
                self.background[word] = self.background.get(word, 0) + 1

    def stem(self, word: str) -> str:
        found = self._stem_cache.get(word)
        if found is None:
            if word.isdigit():
                found = word
            else:
                with self._lock:
                    found = self._stemmer.stemWord(_base_form(word))
                found = _root(_strip_accents(found))
            if len(self._stem_cache) < 50_000:
                self._stem_cache[word] = found
        return found

    def stems(self, text: str) -> list[str]:
        """Every word's stem, stop words included (expressions are matched on these)."""
        return [self.stem(w) for w in _numbers_as_digits(_words(text))]

    def analyze(self, text: str) -> Analysis:
        words = _numbers_as_digits(_words(text))
        stems = [self.stem(w) for w in words]
        bare = [_strip_accents(w) for w in words]
        concepts: list[str] = []
        said: list[str] = []
        parts: list[str] = []
        content = [stems[j] for j in range(len(stems))
                   if bare[j] not in self.stopwords and not stems[j].isdigit()]
        i = 0
        while i < len(stems):
            for size in range(min(self._longest, len(stems) - i), 1, -1):
                concept = self.expressions.get(tuple(stems[i : i + size]))
                if concept is not None:
                    if concept:  # "" is an expression that says nothing
                        concepts.append(concept)
                        said.append(" ".join(stems[i : i + size]))
                        parts.extend(self._word_concept(stems[j], bare[j]) for j in range(i, i + size)
                                     if bare[j] not in self.stopwords and not stems[j].isdigit())
                    i += size
                    break
            else:
                if bare[i] not in self.stopwords and not stems[i].isdigit():
                    concepts.append(self._word_concept(stems[i], bare[i]))
                    said.append(stems[i])
                i += 1
        return Analysis(tuple(concepts), tuple(said), tuple(parts), tuple(content))

    def _word_concept(self, stem: str, bare: str) -> str:
        return self.exact_words.get(bare) or self.single.get(stem, stem)


def _data_lines(name: str) -> list[str]:
    text = (resources.files("speech") / "data" / "fr" / name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


_ANALYZER: FrenchAnalyzer | None = None
_ANALYZER_LOCK = threading.Lock()


def get_analyzer() -> FrenchAnalyzer:
    """The process-wide analyzer with the shipped synonyms and stop words (built on first use)."""
    global _ANALYZER
    if _ANALYZER is None:
        with _ANALYZER_LOCK:
            if _ANALYZER is None:
                _ANALYZER = FrenchAnalyzer()
    return _ANALYZER


# --------------------------------------------------------------------------- matcher


def evidence_to_confidence(evidence: float) -> float:
    return 1.0 / (1.0 + math.exp(-(evidence - EVIDENCE_MID) / EVIDENCE_SCALE))


@dataclass
class _Intent:
    """What the matcher keeps of one intent."""

    concepts: set[str]  # of its phrases, name and keywords
    keywords: set[str]  # the concepts of its keywords
    parts: set[str]  # the words inside its phrases' expressions, not otherwise its concepts
    topic_share: dict[str, float]  # topic -> share of its phrases that name it


class FrenchMatcher:
    """Exact phrases and keywords (on stems), then shared concepts weighed by rarity.

    ``match`` returns :class:`speech.intents.IntentMatch` like the English matcher, with
    ``method`` "exact", "keyword", "embedding" (words and meaning), "lexical" (words alone,
    without the model) or "none"."""

    def __init__(
        self,
        intents: Mapping[str, Any],
        *,
        analyzer: FrenchAnalyzer | None = None,
        reject_below: float = REJECT_BELOW,
        confirm_below: float = CONFIRM_BELOW,
        semantic: bool = True,
        encoder: MultilingualEncoder | None = None,
    ) -> None:
        if not 0.0 <= reject_below <= confirm_below <= 1.0:
            raise ValueError("need 0 <= reject_below <= confirm_below <= 1")
        self.intents: dict[str, IntentSpec] = parse_intents(intents)
        self.reject_below = reject_below
        self.confirm_below = confirm_below
        self.analyzer = analyzer or get_analyzer()
        self._keywords: list[tuple[tuple[str, ...], str]] = []  # (content stems, intent)
        self._index: dict[str, _Intent] = {}
        exact: dict[tuple[str, ...], set[str]] = {}
        for name, spec in self.intents.items():
            self._index[name] = self._read_intent(name, spec, exact)
        # a phrase two intents share decides nothing
        self._exact = {p: next(iter(n)) for p, n in exact.items() if len(n) == 1}
        # IDF in units of a concept one intent alone has, so that evidence means the same for 2
        # intents or 20 (a concept every intent has weighs next to nothing)
        count = len(self._index)
        unit = math.log((count + 1) / 1.5)

        def idf(sets: Iterable[set[str]]) -> dict[str, float]:
            frequency: dict[str, int] = {}
            for items in sets:
                for item in items:
                    frequency[item] = frequency.get(item, 0) + 1
            return {item: math.log((count + 1) / (n + 0.5)) / unit for item, n in frequency.items()}

        self._idf = idf(i.concepts | i.parts for i in self._index.values())
        self._topic_idf = idf(set(i.topic_share) for i in self._index.values())
        #: the meaning model's view of the intents; None: words alone (no model installed)
        self.semantic: _SemanticIndex | None = None
        if semantic:
            try:
                if encoder is None:
                    from speech.multilingual import get_multilingual_encoder

                    encoder = get_multilingual_encoder()
                self.semantic = _SemanticIndex(encoder, self.intents)
            except ModelUnavailable as exc:
                logger.warning("%s; French intents are matched on words alone", exc)

    def _read_intent(self, name: str, spec: IntentSpec, exact: dict[tuple[str, ...], set[str]]) -> _Intent:
        topics = self.analyzer.topics
        concepts: set[str] = set()
        parts: set[str] = set()
        named: dict[str, int] = {}
        phrases = (*spec.phrases, intent_label(name))
        for phrase in phrases:
            analysis = self.analyzer.analyze(phrase)
            analysed = analysis.concepts
            parts.update(analysis.parts)
            if analysed:
                exact.setdefault(analysed, set()).add(name)
            concepts.update(analysed)
            for topic in {topics[c] for c in analysed if c in topics}:
                named[topic] = named.get(topic, 0) + 1
        keywords: set[str] = set()
        for keyword in spec.keywords:
            analysis = self.analyzer.analyze(keyword)
            if analysis.stems:
                self._keywords.append((analysis.stems, name))
            concepts.update(analysis.concepts)
            if len(analysis.stems) == 1:  # "fuite de gaz" must not make every gas a leak
                keywords.update(analysis.concepts)
        share = {topic: n / len(phrases) for topic, n in named.items()}
        return _Intent(concepts, keywords, parts - concepts, share)

    def _match_keywords(self, stems: tuple[str, ...]) -> str | None:
        """The intent whose longest keyword the utterance says (its words, on stems)."""
        best: dict[str, int] = {}
        for keyword, name in self._keywords:
            if _contains(stems, keyword):
                best[name] = max(best.get(name, 0), len(keyword))
        ranked = sorted(best.items(), key=lambda item: -item[1])
        if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
            return None
        return ranked[0][0]

    def evidence(self, text: str) -> tuple[tuple[str, ...], list[tuple[str, float]]]:
        """The utterance's concepts and every intent's evidence, best first."""
        analysis = self.analyzer.analyze(text)
        return analysis.concepts, self._evidence(analysis)

    def _evidence(self, analysis: Analysis) -> list[tuple[str, float]]:
        background = self.analyzer.background
        topics = self.analyzer.topics
        # each concept once, through the word said for it that off-topic speech uses least
        said: dict[str, float] = {}
        for concept, word in zip(analysis.concepts, analysis.words, strict=True):
            specific = 1.0 / (1.0 + BACKGROUND_WEIGHT * background.get(word, 0))
            said[concept] = max(said.get(concept, 0.0), specific)
        # words no intent has, nor any topic of the intents, count against every intent
        unknown = UNKNOWN_WEIGHT * sum(
            1 for c in said if c not in self._idf and topics.get(c) not in self._topic_idf)
        shares = {}
        for name, intent in self._index.items():
            share = 0.0
            related: dict[str, float] = {}  # topic -> the most specific word said for it
            for concept, specific in said.items():
                if concept in intent.concepts:
                    boost = KEYWORD_BOOST if concept in intent.keywords else 1.0
                    share += self._idf[concept] * boost * specific
                elif concept in intent.parts:
                    share += self._idf[concept] * PART_WEIGHT * specific
                elif topics.get(concept) in intent.topic_share:
                    topic = topics[concept]
                    related[topic] = max(related.get(topic, 0.0), specific)
            for topic, specific in related.items():
                share += TOPIC_WEIGHT * self._topic_idf[topic] * intent.topic_share[topic] * specific
            shares[name] = share
        ranked = sorted(shares.items(), key=lambda item: -item[1])
        scored = []
        for i, (name, share) in enumerate(ranked):
            rival = ranked[1][1] if i == 0 and len(ranked) > 1 else ranked[0][1]
            scored.append((name, share - unknown - RUNNER_UP_WEIGHT * rival))
        scored.sort(key=lambda item: -item[1])
        return scored

    def match(self, text: str) -> IntentMatch:
        analysis = self.analyzer.analyze(text)
        concepts = analysis.concepts
        # words that say nothing to the word matcher ("combien je vous dois") can still mean
        # something to the model; nothing but hesitations cannot
        if not concepts and (self.semantic is None or not _words(text)):
            return NO_MATCH
        shown = " ".join(concepts)
        name = self._exact.get(concepts)
        # a phrase said in words off-topic speech also uses ("il y a quelqu'un") is not sure
        if name is not None and not any(self.analyzer.background.get(w) for w in analysis.words):
            return IntentMatch(name, 1.0, False, "exact", text=shown)
        name = self._match_keywords(analysis.stems)
        if name is not None:
            return IntentMatch(name, 1.0, False, "keyword", text=shown)
        scored = self._evidence(analysis)
        if self.semantic is None:
            confidences = [(n, round(evidence_to_confidence(e), 4)) for n, e in scored]
            method = "lexical"
        else:
            confidences = self._with_meaning(text, dict(scored))
            method = "embedding"
        best, confidence = confidences[0]
        alternatives = tuple(confidences[1:4])
        if confidence < self.reject_below:
            closest = ((best, confidence), *alternatives)
            return IntentMatch(None, confidence, False, "none", closest, text=shown)
        unsure = confidence < self.confirm_below
        return IntentMatch(best, confidence, unsure, method, alternatives, text=shown)

    def _with_meaning(self, text: str, lexical: dict[str, float]) -> list[tuple[str, float]]:
        """Every intent's confidence from its words and the model's evidence, best first."""
        assert self.semantic is not None
        meaning, off_topic = self.semantic.evidence(text)
        floored = {n: max(e, LEXICAL_FLOOR) for n, e in lexical.items()}
        ranked = sorted(floored, key=lambda n: -(floored[n] + SEMANTIC_RANK_WEIGHT * meaning[n]))
        against = BACKGROUND_PENALTY * off_topic
        return [(n, round(hybrid_confidence(floored[n] + SEMANTIC_WEIGHT * meaning[n] - against), 4))
                for n in ranked]


def hybrid_confidence(evidence: float) -> float:
    return 1.0 / (1.0 + math.exp(-(evidence - HYBRID_MID) / HYBRID_SCALE))


class _SemanticIndex:
    """An intent set as the multilingual model sees it: the vectors of each intent's phrases,
    name and keywords, and how close off-topic speech comes to each intent (the English
    matcher's scoring: half the nearest phrase, half the mean of the TOP_K nearest)."""

    def __init__(self, encoder: MultilingualEncoder, intents: Mapping[str, IntentSpec]) -> None:
        np_ = encoder._np
        self.encoder = encoder
        self.names = list(intents)
        phrases: list[str] = []
        groups: list[list[int]] = []
        for name, spec in intents.items():
            own = list(dict.fromkeys((*spec.phrases, intent_label(name), *spec.keywords)))
            groups.append(list(range(len(phrases), len(phrases) + len(own))))
            phrases.extend(own)
        self.vectors = encoder.encode_cached(phrases)
        width = max(len(g) for g in groups)
        self.slots = np_.full((len(groups), width), -1, dtype=np_.int64)
        for i, g in enumerate(groups):
            self.slots[i, : len(g)] = g
        self.k = np_.array([min(TOP_K, len(g)) for g in groups], dtype=np_.int64)
        background = self._similarity(encoder.background("fr") @ self.vectors.T)
        self.mean = background.mean(0)
        self.spread = np_.maximum(background.std(0), MIN_SPREAD)

    def _similarity(self, sims: np.ndarray) -> np.ndarray:
        """(n_texts, n_phrases) similarities -> (n_texts, n_intents)."""
        np_ = self.encoder._np
        padded = np_.where(self.slots >= 0, sims[:, self.slots], -np_.inf)
        ordered = -np_.sort(-padded, axis=2)
        cols = np_.arange(ordered.shape[2])
        in_top = cols[None, :] < self.k[:, None]
        top_mean = np_.where(in_top[None], ordered, 0.0).sum(2) / self.k[None, :]
        return BLEND * ordered[:, :, 0] + (1.0 - BLEND) * top_mean

    def evidence(self, text: str) -> tuple[dict[str, float], float]:
        """Each intent's similarity to ``text`` in standard deviations above off-topic speech,
        and how close ``text`` comes to off-topic speech itself (see BACKGROUND_PENALTY)."""
        vector = self.encoder.encode([text])
        similarity = self._similarity(vector @ self.vectors.T)[0]
        z = (similarity - self.mean) / self.spread
        return ({name: float(value) for name, value in zip(self.names, z, strict=True)},
                self.encoder.off_topic(vector[0], "fr"))


def _contains(concepts: tuple[str, ...], keyword: tuple[str, ...]) -> bool:
    size = len(keyword)
    return any(concepts[i : i + size] == keyword for i in range(len(concepts) - size + 1))

