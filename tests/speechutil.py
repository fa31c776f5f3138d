"""Helpers for the speech tests: synthesised Korean telephone audio and Twilio-style messages.

Audio is made at test time with espeak-ng (Korean voice) and converted with sox to what a phone
call carries: 8 kHz mono G.711 mu-law.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

TOOLS_MISSING = "espeak-ng and sox are needed to synthesise test speech: apt-get install -y espeak-ng sox"


def have_audio_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


def _espeak(text: str, out: Path, speed: int | None = None) -> None:
    cmd = ["espeak-ng", "-v", "ko", "-w", str(out)]
    if speed:
        cmd += ["-s", str(speed)]
    subprocess.run([*cmd, text], check=True, capture_output=True)


def synthesise_wav(
    text: str,
    out: Path,
    *,
    rate: int = 8000,
    encoding: str = "mu-law",
    pad: tuple[float, float] | None = None,
) -> Path:
    """Speak text in Korean into a mono WAV at rate; encoding "mu-law" or "signed" (16-bit)."""
    raw = out.with_suffix(".espeak.wav")
    _espeak(text, raw)
    bits = ["-b", "8"] if encoding == "mu-law" else ["-b", "16"]
    effects = ["pad", str(pad[0]), str(pad[1])] if pad else []
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-e", encoding, *bits, str(out), *effects],
        check=True,
        capture_output=True,
    )
    raw.unlink()
    return out


def synthesise_mulaw(text: str, work: Path) -> bytes:
    """Headerless 8 kHz mu-law bytes of text spoken in Korean, as Twilio carries a call."""
    raw = work / "utterance.espeak.wav"
    ulaw = work / "utterance.ul"
    _espeak(text, raw)
    subprocess.run(
        ["sox", str(raw), "-r", "8000", "-c", "1", "-t", "ul", str(ulaw)],
        check=True,
        capture_output=True,
    )
    data = ulaw.read_bytes()
    raw.unlink()
    ulaw.unlink()
    return data


def mulaw_silence(seconds: float) -> bytes:
    return b"\xff" * int(8000 * seconds)


def twilio_stream(
    mulaw: bytes,
    *,
    stream_sid: str = "MZ" + "1" * 32,
    call_sid: str = "CA" + "2" * 32,
    account_sid: str = "AC" + "3" * 32,
    custom_parameters: dict[str, str] | None = None,
) -> list[dict]:
    """The messages Twilio sends for a call leg carrying this audio, in order.

    Written independently of speech.media_stream.twilio_messages, from Twilio's documented
    format: sequenceNumber/chunk/timestamp are strings, payload is base64 of 160 mu-law bytes.
    """
    out: list[dict] = [{"event": "connected", "protocol": "Call", "version": "1.0.0"}]
    out.append(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": custom_parameters or {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    )
    frames = [mulaw[i : i + 160] for i in range(0, len(mulaw), 160)]
    for n, frame in enumerate(frames, start=1):
        out.append(
            {
                "event": "media",
                "sequenceNumber": str(n + 1),
                "media": {
                    "track": "inbound",
                    "chunk": str(n),
                    "timestamp": str((n - 1) * 20),
                    "payload": base64.b64encode(frame).decode("ascii"),
                },
                "streamSid": stream_sid,
            }
        )
    out.append(
        {
            "event": "stop",
            "sequenceNumber": str(len(frames) + 2),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
            "streamSid": stream_sid,
        }
    )
    return out
