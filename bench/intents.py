"""Benchmark the default intent matcher on shared/bench/intents and the unseen sets.

Usage (from the repository root)::

    .venv/bin/python bench/intents.py                 # dev split + generalisation checks
    .venv/bin/python bench/intents.py --split test    # the held-out test split (report once)
    .venv/bin/python bench/intents.py --json          # one JSON object instead of text

The process pins itself to one CPU core (``--cores all`` to disable), so latency is the
per-utterance figure on one core. Start-up (import, load the model, build the index for
the benchmark's intent set) is measured in a fresh subprocess, cold.

Figures reported: the split(s) asked for; the leave-one-intent-out check on dev (each
intent removed in turn, its cases relabelled fallback: the same threshold must still
hold); and the intent sets under tests/fixtures/intents, which were never tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speech.evaluate import evaluate, load_cases, load_intents  # noqa: E402
from speech.intents import FALLBACK, build_matcher  # noqa: E402

DEFAULT_BENCH = Path(os.environ.get("IVR_INTENT_BENCH", ROOT.parent / "shared/bench/intents"))
FIXTURES = ROOT / "tests/fixtures/intents"
KEYS = ("n", "in_scope_acc", "false_reject_rate", "false_accept_rate", "confirm_rate", "p50_ms", "p99_ms")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def startup_seconds(examples: Path) -> dict:
    """Cold start-up in a fresh interpreter: imports + model load + index build."""
    code = (
        "import json, time; t0 = time.perf_counter()\n"
        "from speech.evaluate import load_intents\n"
        "from speech.intents import build_matcher, get_encoder\n"
        f"specs = load_intents({str(examples)!r})\n"
        "t1 = time.perf_counter(); get_encoder(); t2 = time.perf_counter()\n"
        "m = build_matcher(specs); t3 = time.perf_counter()\n"
        "print(json.dumps({'startup_s': round(t3 - t0, 3), 'model_load_s': round(t2 - t1, 3),"
        " 'index_build_s': round(t3 - t2, 3), 'matcher': type(m).__name__}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def leave_one_out(intents: dict, cases: list[dict]) -> dict:
    """Remove each intent in turn; its cases become fallback cases."""
    out = {}
    for dropped in intents:
        rest = {k: v for k, v in intents.items() if k != dropped}
        relabelled = [{**c, "route": FALLBACK} if c["route"] == dropped else c for c in cases]
        report = evaluate(rest, relabelled, build_matcher(rest))
        out[dropped] = {k: report[k] for k in ("in_scope_acc", "false_accept_rate")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-dir", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--split", choices=["dev", "test", "both"], default="dev")
    parser.add_argument("--cores", choices=["one", "all"], default="one")
    parser.add_argument("--no-generalisation", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    examples = args.bench_dir / "examples.yaml"
    if not examples.exists():
        parser.error(f"no benchmark at {args.bench_dir} (set --bench-dir or IVR_INTENT_BENCH)")
    if args.cores == "one" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    result: dict = {
        "machine": {
            "cpu": cpu_name(),
            "cores_visible": os.cpu_count(),
            "pinned_to_one_core": args.cores == "one",
            "python": platform.python_version(),
        },
        "startup": startup_seconds(examples),
    }
    intents = load_intents(examples)
    splits = ["dev", "test"] if args.split == "both" else [args.split]
    for split in splits:
        report = evaluate(intents, load_cases(args.bench_dir / f"{split}.jsonl"))
        result[split] = {k: report[k] for k in KEYS} | {
            "misroute_rate": report["misroute_rate"],
            "per_intent": report["per_intent"],
        }
    if not args.no_generalisation:
        started = time.perf_counter()
        dev_cases = load_cases(args.bench_dir / "dev.jsonl")
        result["dev_leave_one_intent_out"] = leave_one_out(intents, dev_cases)
        for fixture in sorted(FIXTURES.glob("*_intents.yaml")):
            name = fixture.name.removesuffix("_intents.yaml")
            report = evaluate(load_intents(fixture), load_cases(FIXTURES / f"{name}_cases.jsonl"))
            result[f"unseen_{name}"] = {k: report[k] for k in KEYS}
        result["generalisation_s"] = round(time.perf_counter() - started, 1)

    if args.json:
        print(json.dumps(result))
        return 0
    m = result["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores_visible']} cores visible, "
        f"pinned to one core: {m['pinned_to_one_core']}, Python {m['python']}"
    )
    s = result["startup"]
    print(
        f"start-up (cold, fresh process): {s['startup_s']:.2f} s "
        f"(model load {s['model_load_s']:.2f} s, index build {s['index_build_s']:.2f} s)"
    )
    header = f"{'set':<24}" + "".join(f"{k:>18}" for k in KEYS)
    print(header)
    for key, value in result.items():
        if isinstance(value, dict) and "in_scope_acc" in value and "n" in value:
            print(f"{key:<24}" + "".join(f"{value[k]:>18}" for k in KEYS))
    if "dev_leave_one_intent_out" in result:
        print("dev, leave one intent out (in_scope_acc / false_accept_rate):")
        for name, v in result["dev_leave_one_intent_out"].items():
            print(f"  without {name:<20} {v['in_scope_acc']:.3f} / {v['false_accept_rate']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
