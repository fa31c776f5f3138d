"""Streaming speech recognition with vosk, and transcription of recorded files.

``StreamingRecognizer`` wraps one vosk ``KaldiRecognizer`` (one per call, never shared between
threads) over a shared ``LoadedModel``. Feed it 16-bit PCM as it arrives; it returns a ``Result``
each time vosk detects the end of an utterance. Give it a list of phrases and it listens in
grammar mode, which is far more accurate for short menu answers, as long as the model knows
every word.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speech.audio import WavAudio, read_wav
from speech.models import LoadedModel, load_model

log = logging.getLogger(__name__)

TRANSCRIBE_CHUNK_S = 0.25  # how much audio transcribe_file hands vosk at a time


@dataclass(frozen=True)
class Word:
    """One recognised word with vosk's confidence (0..1) and times in seconds from stream start."""

    word: str
    confidence: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Result:
    """One finished utterance.

    ``text`` leaves out the model's unknown-word token; ``raw_text`` is vosk's text as given.
    ``confidence`` is 0..1 (see utterance_confidence). ``phrase`` is set in grammar mode: the
    phrase of the list that the caller most likely said, or None when none was heard.
    """

    text: str
    confidence: float
    words: tuple[Word, ...] = ()
    raw_text: str = ""
    phrase: str | None = None

    @property
    def start_s(self) -> float | None:
        return self.words[0].start_s if self.words else None

    @property
    def end_s(self) -> float | None:
        return self.words[-1].end_s if self.words else None

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "confidence": round(self.confidence, 4),
            "phrase": self.phrase,
            "words": [
                {"word": w.word, "conf": round(w.confidence, 4), "start": w.start_s, "end": w.end_s}
                for w in self.words
            ],
        }


def parse_words(vosk_result: dict) -> tuple[Word, ...]:
    """The per-word entries of a vosk result made with SetWords(True)."""
    return tuple(
        Word(
            word=str(item.get("word", "")),
            confidence=float(item.get("conf", 0.0)),
            start_s=float(item.get("start", 0.0)),
            end_s=float(item.get("end", 0.0)),
        )
        for item in vosk_result.get("result") or ()
    )


def utterance_confidence(
    vosk_result: dict | Sequence[Word], unknown_tokens: Iterable[str] = ("[unk]", "<UNK>")
) -> float:
    """Utterance confidence (0..1) from vosk's per-word confidences.

    The mean of the word confidences weighted by each word's duration, so a long word the
    recogniser is sure of outweighs a short filler it guessed. Unknown-word tokens count as
    confidence 0 (the model heard speech it could not name). No words gives 0.0.
    """
    words = parse_words(vosk_result) if isinstance(vosk_result, dict) else tuple(vosk_result)
    if not words:
        return 0.0
    unknown = set(unknown_tokens)
    confs = [0.0 if w.word in unknown else min(max(w.confidence, 0.0), 1.0) for w in words]
    durations = [max(w.end_s - w.start_s, 0.0) for w in words]
    total = sum(durations)
    if total <= 0:
        return sum(confs) / len(confs)
    return sum(c * d for c, d in zip(confs, durations, strict=True)) / total


def normalise_phrase(phrase: str) -> str:
    """Collapse whitespace and lower-case (vosk vocabularies are lower-case) a phrase."""
    return re.sub(r"\s+", " ", phrase).strip().lower()


@dataclass(frozen=True)
class Grammar:
    """What grammar mode will listen for, decided against a model's vocabulary.

    ``usable`` is False when some phrase has a word the model does not know: vosk would silently
    drop that word and then mis-hear the phrase, so recognition stays free-form instead.
    """

    phrases: tuple[str, ...]
    unknown_words: tuple[str, ...]
    unknown_token: str

    @property
    def usable(self) -> bool:
        return bool(self.phrases) and not self.unknown_words

    def vosk_json(self) -> str:
        """The grammar string for KaldiRecognizer. Non-ASCII must stay unescaped for vosk 0.3.45;
        the unknown token lets out-of-list speech come out as unknown instead of a forced match."""
        return json.dumps([*self.phrases, self.unknown_token], ensure_ascii=False)


def build_grammar(phrases: Iterable[str], model: LoadedModel) -> Grammar:
    """Check phrases against the model's vocabulary; see Grammar."""
    seen: dict[str, None] = {}
    for phrase in phrases:
        norm = normalise_phrase(phrase)
        if norm:
            seen.setdefault(norm, None)
    normalised = tuple(seen)
    unknown: dict[str, None] = {}
    for phrase in normalised:
        for word in phrase.split(" "):
            if not model.knows(word):
                unknown.setdefault(word, None)
    return Grammar(normalised, tuple(unknown), model.unknown_token)


def match_phrase(words: Sequence[Word], phrases: Sequence[str]) -> tuple[str, float] | None:
    """The phrase heard in words, with its confidence, or None.

    Grammar mode can return several phrases in a row ("네 상담원") when a caller hesitates or
    noise sounds like a short word; the phrase whose words the recogniser was surest of wins,
    longer phrases breaking ties.
    """
    tokens = [w.word for w in words]
    best: tuple[float, int, str] | None = None
    for phrase in phrases:
        parts = phrase.split(" ")
        n = len(parts)
        for i in range(len(tokens) - n + 1):
            if tokens[i : i + n] == parts:
                conf = sum(w.confidence for w in words[i : i + n]) / n
                key = (conf, n, phrase)
                if best is None or key[:2] > best[:2]:
                    best = key
    return (best[2], best[0]) if best else None


class StreamingRecognizer:
    """Recognises one audio stream (one call) as it arrives. Not thread-safe: one per stream.

    ``accept(pcm)`` takes 16-bit little-endian mono PCM at sample_rate and returns a Result when
    vosk detects the end of an utterance (about half a second of silence after speech), else None.
    ``finish()`` flushes what is left at the end of the stream.

    batch_ms > 0 hands vosk the audio in blocks of at least that many milliseconds instead of
    frame by frame (five times fewer calls at 100 ms); a result comes at most that much later.
    """

    def __init__(
        self,
        model: LoadedModel,
        sample_rate: int = 8000,
        phrases: Iterable[str] | None = None,
        *,
        max_alternatives: int = 0,
        batch_ms: int = 0,
    ):
        import vosk

        self.model = model
        self.sample_rate = sample_rate
        self.grammar = build_grammar(phrases or (), model) if phrases is not None else None
        if self.grammar is not None and self.grammar.unknown_words:
            log.warning(
                "grammar mode off: the model at %s does not know %s; recognising free-form",
                model.path,
                ", ".join(self.grammar.unknown_words),
            )
        if self.grammar_active:
            self._recognizer = vosk.KaldiRecognizer(
                model.vosk_model, float(sample_rate), self.grammar.vosk_json()
            )
        else:
            self._recognizer = vosk.KaldiRecognizer(model.vosk_model, float(sample_rate))
        self._recognizer.SetWords(True)
        if max_alternatives:
            self._recognizer.SetMaxAlternatives(max_alternatives)
        self.unknown_tokens = {model.unknown_token, "[unk]", "<UNK>"}
        self.samples_accepted = 0
        self.finished = False
        self._batch_bytes = sample_rate * batch_ms // 1000 * 2
        self._pending = bytearray()

    @property
    def grammar_active(self) -> bool:
        return self.grammar is not None and self.grammar.usable

    @property
    def seconds_accepted(self) -> float:
        return self.samples_accepted / self.sample_rate

    def accept(self, pcm: bytes) -> Result | None:
        """Feed audio; returns the utterance's Result at an endpoint with speech, else None."""
        if self.finished:
            raise RuntimeError("this recognizer has finished; make a new one for a new stream")
        if not pcm:
            return None
        self.samples_accepted += len(pcm) // 2
        if self._batch_bytes:
            self._pending += pcm
            if len(self._pending) < self._batch_bytes:
                return None
            pcm = bytes(self._pending)
            self._pending.clear()
        if self._recognizer.AcceptWaveform(pcm):
            return self._result(self._recognizer.Result())
        return None

    def partial(self) -> str:
        """The words heard so far in the current utterance (may still change)."""
        return json.loads(self._recognizer.PartialResult()).get("partial", "")

    def finish(self) -> list[Result]:
        """End of stream: the Results of what was left (usually one; none if it held no words)."""
        if self.finished:
            return []
        results = []
        if self._pending:
            pcm = bytes(self._pending)
            self._pending.clear()
            if self._recognizer.AcceptWaveform(pcm):
                results.append(self._result(self._recognizer.Result()))
        self.finished = True
        results.append(self._result(self._recognizer.FinalResult()))
        return [r for r in results if r is not None]

    def _result(self, raw_json: str) -> Result | None:
        raw = json.loads(raw_json)
        if "result" not in raw and "alternatives" in raw:  # SetMaxAlternatives output
            best = (raw.get("alternatives") or [{}])[0]
            raw = {"text": best.get("text", ""), "result": best.get("result", [])}
        words = parse_words(raw)
        raw_text = str(raw.get("text", "")).strip()
        if not words and not raw_text:
            return None
        known = [w for w in words if w.word not in self.unknown_tokens]
        text = " ".join(w.word for w in known) if words else raw_text
        confidence = utterance_confidence(words, self.unknown_tokens)
        phrase = None
        if self.grammar_active:
            match = match_phrase(known, self.grammar.phrases)
            if match is not None:
                phrase = match[0]
        return Result(text=text, confidence=confidence, words=words, raw_text=raw_text, phrase=phrase)


@dataclass(frozen=True)
class Transcript:
    """A recording's transcript: all utterances joined, one confidence, and the audio length."""

    text: str
    confidence: float
    duration_s: float
    results: tuple[Result, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "confidence": round(self.confidence, 4),
            "duration_s": round(self.duration_s, 3),
        }


def transcribe_audio(audio: WavAudio, model: LoadedModel, phrases: Iterable[str] | None = None) -> Transcript:
    """Transcribe decoded audio; see transcribe_file."""
    recognizer = StreamingRecognizer(model, audio.sample_rate, phrases)
    chunk = max(int(audio.sample_rate * TRANSCRIBE_CHUNK_S) * 2, 2)
    results: list[Result] = []
    for start in range(0, len(audio.pcm), chunk):
        result = recognizer.accept(audio.pcm[start : start + chunk])
        if result is not None:
            results.append(result)
    results += recognizer.finish()
    words = [w for r in results for w in r.words]
    return Transcript(
        text=" ".join(r.text for r in results if r.text),
        confidence=utterance_confidence(words, recognizer.unknown_tokens),
        duration_s=audio.duration_s,
        results=tuple(results),
    )


def transcribe_file(
    path: str | Path,
    model: LoadedModel | str | Path,
    phrases: Iterable[str] | None = None,
) -> Transcript:
    """Transcribe a mono WAV file (16-bit PCM or mu-law, 8 or 16 kHz) with a vosk model.

    model is a LoadedModel (shared, preferred) or a model folder to load now. With phrases, the
    recording is recognised in grammar mode (see StreamingRecognizer). Raises AudioFormatError for
    a file it cannot read and ModelUnavailable for a model it cannot load.
    """
    audio = read_wav(path)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    return transcribe_audio(audio, loaded, phrases)
