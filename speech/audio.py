"""Telephone audio helpers: G.711 mu-law, WAV files, and 20 ms frames.

Twilio sends call audio as 8 kHz mono mu-law (one byte per sample, 160 bytes per 20 ms frame) and
stores recordings as WAV files. Vosk wants 16-bit little-endian PCM. Everything here is pure Python
with lookup tables, so it works on Python versions without the removed ``audioop`` module.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from speech.errors import AudioFormatError

MULAW_SAMPLE_RATE = 8000
FRAME_MS = 20
MULAW_FRAME_BYTES = MULAW_SAMPLE_RATE * FRAME_MS // 1000  # 160: one Twilio media frame
MULAW_SILENCE = 0xFF  # mu-law code for a zero sample

_BIG_ENDIAN = struct.pack("=H", 1) == b"\x00\x01"

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _mulaw_decode_sample(code: int) -> int:
    """ITU-T G.711 mu-law code (0-255) to a linear 16-bit sample (range +-32124)."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


MULAW_TO_LINEAR: tuple[int, ...] = tuple(_mulaw_decode_sample(c) for c in range(256))
"""Linear 16-bit value of each mu-law code (index = code)."""

# The same table as little-endian byte pairs, so decoding is one join over a map.
_MULAW_TO_PCM_BYTES: tuple[bytes, ...] = tuple(struct.pack("<h", v) for v in MULAW_TO_LINEAR)


def _mulaw_encode_sample(sample: int) -> int:
    """A linear 16-bit sample to its G.711 mu-law code (the 14-bit reference algorithm)."""
    value = sample >> 2  # G.711 works on 14-bit magnitudes; the shift floors negatives
    sign = 0x80 if value < 0 else 0
    value = min(-value if sign else value, 8159) + 0x21
    segment = max(value.bit_length() - 6, 0)
    if segment > 7:  # at the clipping level: the largest code of that sign
        return ~(sign | 0x7F) & 0xFF
    mantissa = (value >> (segment + 1)) & 0x0F
    return ~(sign | (segment << 4) | mantissa) & 0xFF


_linear_to_mulaw_table: bytes | None = None


def _encode_table() -> bytes:
    """65536-entry table indexed by the unsigned 16-bit pattern of a sample; built once."""
    global _linear_to_mulaw_table
    if _linear_to_mulaw_table is None:
        _linear_to_mulaw_table = bytes(
            _mulaw_encode_sample(i - 65536 if i >= 32768 else i) for i in range(65536)
        )
    return _linear_to_mulaw_table


def mulaw_to_pcm16(data: bytes) -> bytes:
    """Decode mu-law bytes to 16-bit little-endian signed PCM (twice as many bytes)."""
    return b"".join(map(_MULAW_TO_PCM_BYTES.__getitem__, data))


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian signed PCM to mu-law (half as many bytes)."""
    if len(pcm) % 2:
        raise AudioFormatError("16-bit PCM must have an even number of bytes")
    samples = array("H")
    samples.frombytes(pcm)
    if _BIG_ENDIAN:
        samples.byteswap()
    table = _encode_table()
    return bytes(map(table.__getitem__, samples))


@dataclass(frozen=True)
class WavAudio:
    """A mono recording as 16-bit little-endian PCM, whatever encoding the file used."""

    pcm: bytes
    sample_rate: int
    source_encoding: str  # "pcm16" or "mulaw"

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


def read_wav(path: str | Path) -> WavAudio:
    """Read a mono WAV file: 16-bit PCM or 8-bit G.711 mu-law (as Twilio stores calls).

    Any sample rate from 8 kHz up is accepted (vosk resamples internally); 8 and 16 kHz are the
    usual ones. Raises AudioFormatError naming the file and the problem otherwise.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise AudioFormatError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    return parse_wav(blob, name=str(path))


def parse_wav(blob: bytes, name: str = "<wav>") -> WavAudio:
    """Parse WAV bytes; see read_wav."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise AudioFormatError(f"{name}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None  # format, channels, rate, bits
    data: bytes | None = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = blob[pos + 8 : pos + 8 + size]  # a truncated or unsized last chunk: take the rest
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(body, name)
        elif chunk_id == b"data":
            data = body
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise AudioFormatError(f"{name}: no 'fmt ' chunk")
    if data is None:
        raise AudioFormatError(f"{name}: no 'data' chunk")
    audio_format, channels, rate, bits = fmt
    if channels != 1:
        raise AudioFormatError(
            f"{name}: {channels} channels; only mono is supported "
            "(for a dual-channel call recording, split the caller's channel first, "
            "e.g. `sox in.wav out.wav remix 1`)"
        )
    if rate < 8000:
        raise AudioFormatError(f"{name}: sample rate {rate} Hz is below 8000 Hz")
    if rate > 192_000:  # a broken header: vosk's resampler would abort the process
        raise AudioFormatError(f"{name}: sample rate {rate} Hz is not a real audio rate")
    if audio_format == _WAVE_FORMAT_PCM and bits == 16:
        if len(data) % 2:
            data = data[:-1]
        if _BIG_ENDIAN:
            swapped = array("h")
            swapped.frombytes(data)
            swapped.byteswap()
            data = swapped.tobytes()
        return WavAudio(pcm=bytes(data), sample_rate=rate, source_encoding="pcm16")
    if audio_format == _WAVE_FORMAT_MULAW and bits == 8:
        return WavAudio(pcm=mulaw_to_pcm16(data), sample_rate=rate, source_encoding="mulaw")
    raise AudioFormatError(
        f"{name}: unsupported encoding (format tag {audio_format:#06x}, {bits} bits); "
        "expected 16-bit PCM or 8-bit mu-law"
    )


def _parse_fmt(body: bytes, name: str) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise AudioFormatError(f"{name}: 'fmt ' chunk too short")
    audio_format, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if audio_format == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
        # WAVEFORMATEXTENSIBLE: the real format tag is the first two bytes of the sub-format GUID.
        (audio_format,) = struct.unpack_from("<H", body, 24)
    return audio_format, channels, rate, bits


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write mono 16-bit PCM as a WAV file (handy for tests and saving decoded streams)."""
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)


def split_frames(data: bytes, frame_bytes: int = MULAW_FRAME_BYTES) -> Iterator[bytes]:
    """Cut a buffer into frames of frame_bytes; the last one may be shorter.

    With the default size, mu-law audio comes out in Twilio's 20 ms media frames.
    """
    if frame_bytes <= 0:
        raise ValueError("frame_bytes must be positive")
    for start in range(0, len(data), frame_bytes):
        yield data[start : start + frame_bytes]


def pcm16_frame_bytes(sample_rate: int, frame_ms: int = FRAME_MS) -> int:
    """Bytes of 16-bit mono PCM in one frame of frame_ms at sample_rate."""
    return sample_rate * frame_ms // 1000 * 2
