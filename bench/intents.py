"""Benchmark the default intent matcher of a language on its shared benchmark and the unseen sets.

Usage (from the repository root)::

    .venv/bin/python bench/intents.py                 # English: dev split + generalisation checks
    .venv/bin/python bench/intents.py --split test    # the held-out test split (report once)
    .venv/bin/python bench/intents.py --language fr-FR --split both   # French, shared/bench/intents-fr
    .venv/bin/python bench/intents.py --json          # one JSON object instead of text

The process pins itself to one CPU core (``--cores all`` to disable), so latency is the
per-utterance figure on one core. Start-up (import, load the model or the French word lists,
build the index for the benchmark's intent set) and the resident memory it adds are measured
in a fresh subprocess, cold.

Figures reported: the split(s) asked for; the leave-one-intent-out check on dev (each
intent removed in turn, its cases relabelled fallback: the same threshold must still
hold); and the intent sets in the language under tests/fixtures/intents (``fr_*`` are
French), which were never tuned on.
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
from speech.intents import FALLBACK, build_matcher, language_kind  # noqa: E402

#: The shared benchmark of each language, beside the repository (IVR_INTENT_BENCH overrides).
BENCHES = {"embedding": "shared/bench/intents", "french": "shared/bench/intents-fr"}
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


def startup_seconds(examples: Path, language: str) -> dict:
    """Cold start-up in a fresh interpreter: imports + model (or word lists) + index build, and
    the resident memory (RSS) the process gained from just after the interpreter started."""
    load = "get_analyzer" if language_kind(language) == "french" else "get_encoder"
    module = "speech.french" if load == "get_analyzer" else "speech.intents"
    code = (
        "import json, time; t0 = time.perf_counter()\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024\n"
        "r0 = rss()\n"
        "from speech.evaluate import load_intents\n"
        f"from speech.intents import build_matcher\nfrom {module} import {load}\n"
        f"specs = load_intents({str(examples)!r})\n"
        f"t1 = time.perf_counter(); {load}(); t2 = time.perf_counter()\n"
        f"m = build_matcher(specs, language={language!r}); t3 = time.perf_counter()\n"
        "print(json.dumps({'startup_s': round(t3 - t0, 3), 'model_load_s': round(t2 - t1, 3),"
        " 'index_build_s': round(t3 - t2, 3), 'matcher': type(m).__name__,"
        " 'rss_added_mib': round(rss() - r0, 1)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fixture_language(name: str) -> str:
    """The language of an intent set under tests/fixtures/intents, from its name."""
    return "fr-FR" if name.startswith("fr_") else "en-US"


def leave_one_out(intents: dict, cases: list[dict], language: str) -> dict:
    """Remove each intent in turn; its cases become fallback cases."""
    out = {}
    for dropped in intents:
        rest = {k: v for k, v in intents.items() if k != dropped}
        relabelled = [{**c, "route": FALLBACK} if c["route"] == dropped else c for c in cases]
        report = evaluate(rest, relabelled, build_matcher(rest, language=language))
        out[dropped] = {k: report[k] for k in ("in_scope_acc", "false_accept_rate")}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", default="en-US", help="en-US (default) or fr-FR")
    parser.add_argument("--bench-dir", type=Path, default=None,
                        help="default: the language's benchmark beside the repository")
    parser.add_argument("--split", choices=["dev", "test", "both"], default="dev")
    parser.add_argument("--cores", choices=["one", "all"], default="one")
    parser.add_argument("--no-generalisation", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    kind = language_kind(args.language)
    if kind not in BENCHES:
        parser.error(f"no benchmark for {args.language}: use en-US or fr-FR")
    if args.bench_dir is None:
        args.bench_dir = Path(os.environ.get("IVR_INTENT_BENCH", ROOT.parent / BENCHES[kind]))

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
        "language": args.language,
        "startup": startup_seconds(examples, args.language),
    }
    intents = load_intents(examples)
    splits = ["dev", "test"] if args.split == "both" else [args.split]
    for split in splits:
        report = evaluate(intents, load_cases(args.bench_dir / f"{split}.jsonl"), language=args.language)
        result[split] = {k: report[k] for k in KEYS} | {
            "misroute_rate": report["misroute_rate"],
            "per_intent": report["per_intent"],
        }
    if not args.no_generalisation:
        started = time.perf_counter()
        dev_cases = load_cases(args.bench_dir / "dev.jsonl")
        result["dev_leave_one_intent_out"] = leave_one_out(intents, dev_cases, args.language)
        for fixture in sorted(FIXTURES.glob("*_intents.yaml")):
            name = fixture.name.removesuffix("_intents.yaml")
            language = fixture_language(name)
            if language_kind(language) != kind:
                continue
            cases = load_cases(FIXTURES / f"{name}_cases.jsonl")
            report = evaluate(load_intents(fixture), cases, language=language)
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
        f"(model load {s['model_load_s']:.2f} s, index build {s['index_build_s']:.2f} s), "
        f"{s['rss_added_mib']:.0f} MiB resident memory added, {s['matcher']}"
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
