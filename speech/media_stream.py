"""Recognise a call's live audio from Twilio Media Streams, independent of any WebSocket server.

Twilio's ``<Start><Stream>`` / ``<Connect><Stream>`` opens a WebSocket and sends JSON text
messages: ``connected``, then ``start`` (streamSid, callSid, customParameters, mediaFormat:
audio/x-mulaw, 8000 Hz, 1 channel), then one ``media`` message per 20 ms of audio (a base64
payload of 160 mu-law bytes, with sequenceNumber, chunk and timestamp), ``mark`` and ``dtmf``
messages, and finally ``stop``. The web layer parses nothing itself: it hands each message to
``MediaStreamSession.handle`` and gets back the finished utterances::

    session = MediaStreamSession(registry, language="ko", phrases=["요금", "상담원"],
                                 on_final=lambda text, confidence: ...)
    for raw in websocket:                  # any server: flask-sock, websockets, ...
        for result in session.handle(raw):
            ...                            # result.text, result.confidence, result.phrase
        if session.stopped:
            break

Custom parameters sent with ``<Stream><Parameter name="language" value="ko-KR"/>`` choose the
model when the session was given a ModelRegistry, and ``phrases`` (a JSON list) turns on
grammar mode when the session was given no phrases itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from speech.audio import MULAW_FRAME_BYTES, MULAW_SAMPLE_RATE, MULAW_SILENCE, mulaw_to_pcm16
from speech.errors import MediaStreamError
from speech.models import LoadedModel, ModelRegistry
from speech.recognizer import Result, StreamingRecognizer

log = logging.getLogger(__name__)

MULAW_ENCODING = "audio/x-mulaw"

OnFinal = Callable[[str, float], None]


@dataclass
class StreamInfo:
    """What the ``start`` message said about the stream."""

    stream_sid: str | None = None
    call_sid: str | None = None
    account_sid: str | None = None
    tracks: list[str] = field(default_factory=lambda: ["inbound"])
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = MULAW_ENCODING
    sample_rate: int = MULAW_SAMPLE_RATE
    channels: int = 1


class MediaStreamSession:
    """One Media Stream (one call leg): feeds its audio to a vosk recognizer.

    model: a LoadedModel, or a ModelRegistry to pick from by ``language`` (the ``language``
    custom parameter overrides it). phrases: grammar mode (see StreamingRecognizer); None means
    free-form unless the stream's ``phrases`` custom parameter lists some.
    on_final(text, confidence) is called for every finished utterance; on_result(Result) too,
    with the words and the matched phrase. batch_ms groups 20 ms frames before vosk sees them
    (less CPU, at most that much added delay); max_gap_fill_ms caps the silence put in place of
    lost frames, so word times stay on the call's clock.

    ``handle`` raises ModelUnavailable on ``start`` when the language has no usable model (the
    caller should fall back to Twilio speech or the keypad), and MediaStreamError for audio it
    cannot decode. Not thread-safe: one session per WebSocket, fed from one thread at a time.
    """

    def __init__(
        self,
        model: LoadedModel | ModelRegistry,
        *,
        language: str | None = None,
        phrases: Iterable[str] | None = None,
        on_final: OnFinal | None = None,
        on_result: Callable[[Result], None] | None = None,
        track: str = "inbound",
        max_gap_fill_ms: int = 1000,
        batch_ms: int = 100,
    ):
        if isinstance(model, ModelRegistry) and language is None:
            raise ValueError("a ModelRegistry needs a default language")
        self._model_source = model
        self.language = language
        self.phrases = list(phrases) if phrases is not None else None
        self.on_final = on_final
        self.on_result = on_result
        self.track = track
        self.max_gap_fill_ms = max_gap_fill_ms
        self.batch_ms = batch_ms

        self.info = StreamInfo()
        self.protocol: str | None = None
        self.recognizer: StreamingRecognizer | None = None
        self.started = False
        self.stopped = False
        self.results: list[Result] = []
        self.marks: list[str] = []
        self.digits: list[str] = []
        self.last_sequence: int | None = None
        self.last_chunk: int | None = None
        self.frames = 0
        self.frames_missing = 0  # gaps in the chunk numbers, filled with silence
        self.frames_late = 0  # repeated or out-of-order chunks, dropped
        self._frame_bytes = MULAW_FRAME_BYTES

    # -- public API ---------------------------------------------------------------------------

    def handle(self, message: dict | str | bytes) -> list[Result]:
        """Process one message (a parsed dict or the raw JSON text); returns finished utterances."""
        if isinstance(message, bytes | bytearray):
            message = message.decode("utf-8")
        if isinstance(message, str):
            try:
                message = json.loads(message)
            except json.JSONDecodeError as exc:
                raise MediaStreamError(f"not a JSON message: {exc}") from exc
        if not isinstance(message, dict):
            raise MediaStreamError("a Media Streams message must be a JSON object")
        self._note_sequence(message)
        event = message.get("event")
        if event == "media":
            return self._on_media(message)
        if event == "start":
            self._on_start(message)
        elif event == "stop":
            return self._on_stop()
        elif event == "connected":
            self.protocol = message.get("protocol")
        elif event == "mark":
            name = (message.get("mark") or {}).get("name")
            if name is not None:
                self.marks.append(str(name))
        elif event == "dtmf":
            digit = (message.get("dtmf") or {}).get("digit")
            if digit is not None:
                self.digits.append(str(digit))
        else:
            log.debug("ignoring Media Streams event %r", event)
        return []

    def close(self) -> list[Result]:
        """End the stream without a ``stop`` message (the socket closed); flushes the last words."""
        return self._on_stop()

    @property
    def stream_sid(self) -> str | None:
        return self.info.stream_sid

    @property
    def call_sid(self) -> str | None:
        return self.info.call_sid

    @property
    def seconds_received(self) -> float:
        return self.recognizer.seconds_accepted if self.recognizer else 0.0

    def partial(self) -> str:
        """Words heard so far in the utterance under way (for barge-in or live display)."""
        return self.recognizer.partial() if self.recognizer else ""

    # -- events -------------------------------------------------------------------------------

    def _on_start(self, message: dict) -> None:
        if self.started:
            raise MediaStreamError("a second 'start' on the same stream")
        start = message.get("start") or {}
        fmt = start.get("mediaFormat") or {}
        params = start.get("customParameters") or {}
        if not isinstance(start, dict) or not isinstance(fmt, dict) or not isinstance(params, dict):
            raise MediaStreamError("a 'start' message with fields of the wrong type")
        try:
            info = StreamInfo(
                stream_sid=start.get("streamSid") or message.get("streamSid"),
                call_sid=start.get("callSid"),
                account_sid=start.get("accountSid"),
                tracks=list(start.get("tracks") or ["inbound"]),
                custom_parameters={str(k): str(v) for k, v in params.items()},
                encoding=str(fmt.get("encoding", MULAW_ENCODING)),
                sample_rate=int(fmt.get("sampleRate", MULAW_SAMPLE_RATE)),
                channels=int(fmt.get("channels", 1)),
            )
        except (TypeError, ValueError) as exc:
            raise MediaStreamError(f"a 'start' message with a bad media format: {exc}") from None
        if info.sample_rate != MULAW_SAMPLE_RATE:  # Twilio streams 8 kHz mu-law, nothing else
            raise MediaStreamError(f"stream {info.stream_sid}: sample rate {info.sample_rate} Hz "
                                   f"(expected {MULAW_SAMPLE_RATE})")
        if info.encoding != MULAW_ENCODING:
            raise MediaStreamError(
                f"stream {info.stream_sid}: unsupported encoding {info.encoding!r} "
                f"(expected {MULAW_ENCODING})"
            )
        if info.channels != 1:
            raise MediaStreamError(f"stream {info.stream_sid}: {info.channels} channels")
        self.info = info
        self._begin()

    def _begin(self) -> None:
        params = self.info.custom_parameters
        if isinstance(self._model_source, ModelRegistry):
            language = params.get("language") or self.language
            model = self._model_source.get(language)
        else:
            model = self._model_source
        phrases = self.phrases
        if phrases is None and params.get("phrases"):
            phrases = _phrases_parameter(params["phrases"])
        self._frame_bytes = self.info.sample_rate * 20 // 1000
        self.recognizer = StreamingRecognizer(
            model, self.info.sample_rate, phrases, batch_ms=self.batch_ms
        )
        self.started = True

    def _on_media(self, message: dict) -> list[Result]:
        if self.stopped:
            return []
        media = message.get("media") or {}
        track = media.get("track")
        if track is not None and track != self.track:
            return []
        if not self.started:
            log.warning("media before start on stream %s; assuming 8 kHz mu-law", self.stream_sid)
            self._begin()
        try:
            audio = base64.b64decode(media.get("payload") or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaStreamError(f"media payload is not base64: {exc}") from exc
        gap = self._check_chunk(media.get("chunk"))
        if gap is None:
            return []
        if gap:
            audio = bytes([MULAW_SILENCE]) * (gap * self._frame_bytes) + audio
        self.frames += 1
        result = self.recognizer.accept(mulaw_to_pcm16(audio))
        return self._emit(result)

    def _on_stop(self) -> list[Result]:
        if self.stopped:
            return []
        self.stopped = True
        if self.recognizer is None:
            return []
        return [r for result in self.recognizer.finish() for r in self._emit(result)]

    # -- helpers ------------------------------------------------------------------------------

    def _note_sequence(self, message: dict) -> None:
        seq = message.get("sequenceNumber")
        if seq is not None:
            try:
                self.last_sequence = int(seq)
            except (TypeError, ValueError):
                pass

    def _check_chunk(self, chunk) -> int | None:
        """Frames of silence to insert before this one (0 normally), or None to drop it."""
        try:
            number = int(chunk)
        except (TypeError, ValueError):
            return 0
        last, self.last_chunk = self.last_chunk, number
        if last is None:
            return 0
        if number <= last:
            self.last_chunk = last
            self.frames_late += 1
            return None
        missing = number - last - 1
        if missing:
            self.frames_missing += missing
            return min(missing, self.max_gap_fill_ms // 20)
        return 0

    def _emit(self, result: Result | None) -> list[Result]:
        if result is None:
            return []
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        if self.on_final is not None:
            self.on_final(result.text, result.confidence)
        return [result]


def _phrases_parameter(value: str) -> list[str]:
    """The ``phrases`` custom parameter: a JSON list, or phrases separated by ``|``."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list):
        return [str(p) for p in parsed]
    return [p for p in value.split("|") if p.strip()]


def twilio_messages(
    mulaw: bytes,
    *,
    stream_sid: str = "MZ00000000000000000000000000000000",
    call_sid: str = "CA00000000000000000000000000000000",
    account_sid: str = "AC00000000000000000000000000000000",
    custom_parameters: dict[str, str] | None = None,
    frame_bytes: int = MULAW_FRAME_BYTES,
) -> list[dict]:
    """The messages Twilio would send for this mu-law audio: connected, start, media..., stop.

    For tests, benchmarks and the simulator; sequence numbers, chunks and timestamps follow
    Twilio's (strings, sequence from 1, chunk from 1, timestamp in ms from the stream start).
    """
    messages: list[dict] = [{"event": "connected", "protocol": "Call", "version": "1.0.0"}]
    seq = 1
    messages.append(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(custom_parameters or {}),
                "mediaFormat": {
                    "encoding": MULAW_ENCODING,
                    "sampleRate": MULAW_SAMPLE_RATE,
                    "channels": 1,
                },
            },
            "streamSid": stream_sid,
        }
    )
    ms_per_frame = frame_bytes * 1000 // MULAW_SAMPLE_RATE
    for index, start in enumerate(range(0, len(mulaw), frame_bytes)):
        seq += 1
        messages.append(
            {
                "event": "media",
                "sequenceNumber": str(seq),
                "media": {
                    "track": "inbound",
                    "chunk": str(index + 1),
                    "timestamp": str(index * ms_per_frame),
                    "payload": base64.b64encode(mulaw[start : start + frame_bytes]).decode(),
                },
                "streamSid": stream_sid,
            }
        )
    seq += 1
    messages.append(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
            "streamSid": stream_sid,
        }
    )
    return messages
