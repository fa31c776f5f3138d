"""Measure an intent set: routing accuracy, false accepts and per-utterance latency.

Cases are ``{"text": ..., "route": intent-name-or-"fallback"}``. A case is *in scope*
when its route is an intent. The figures:

- ``in_scope_acc``: share of in-scope cases routed to the right intent (a match that
  needs confirmation counts as routed);
- ``false_reject_rate``: share of in-scope cases routed to fallback;
- ``misroute_rate``: share of in-scope cases routed to a wrong intent;
- ``false_accept_rate``: share of fallback cases routed to any intent;
- ``confirm_rate``: share of routed cases that would be confirmed first;
- ``p50_ms`` / ``p99_ms``: time of one ``match`` call, one utterance at a time, warm.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from speech.intents import (
    FALLBACK,
    IntentMatcher,
    IntentSpec,
    build_matcher,
    parse_intents,
)

__all__ = ["evaluate", "load_cases", "load_intents", "load_intents_and_language", "percentile"]


def load_intents(path: str | Path) -> dict[str, IntentSpec]:
    """Read an intents file (YAML or JSON): a mapping of intent name to phrases; or a flow
    file, whose `intents` are taken."""
    return load_intents_and_language(path)[0]


def load_intents_and_language(path: str | Path) -> tuple[dict[str, IntentSpec], str | None]:
    """`load_intents`, with the flow's language when the file is a flow (None otherwise)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = YAML(typ="safe").load(text)
    except (ValueError, YAMLError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: cannot parse intents: {exc}") from exc
    language = None
    if isinstance(data, dict) and "nodes" in data:  # a flow: measure the intents it declares
        language = str(data.get("language") or "en-US")
        data = data.get("intents")
        if not data:
            raise ValueError(f"{path}: this flow declares no intents")
    try:
        return parse_intents(data), language
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_cases(path: str | Path) -> list[dict[str, str]]:
    """Read JSON-lines cases ``{"text", "route"}``; blank lines are skipped."""
    path = Path(path)
    cases = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from exc
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{number}: need an object with a string 'text'")
            if not isinstance(row.get("route"), str):
                raise ValueError(f"{path}:{number}: need a string 'route'")
            cases.append({"text": row["text"], "route": row["route"], "line": number})
    if not cases:
        raise ValueError(f"{path}: no cases (one JSON object per line: {{\"text\": ..., \"route\": ...}})")
    return cases


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


def evaluate(
    intents: Mapping[str, Any],
    cases: Iterable[Mapping[str, str]],
    matcher: IntentMatcher | None = None,
    *,
    kind: str = "default",
    language: str | None = None,
    warmup: int = 5,
) -> dict[str, Any]:
    """Run every case through a matcher and return the figures as a JSON-ready dict.

    ``matcher`` defaults to ``build_matcher(intents, kind, language=language)``; the time to build it is
    reported as ``build_ms`` (it includes loading the model if this is the first use in
    the process). Raises ValueError when a case's route is neither an intent nor
    "fallback".
    """
    specs = parse_intents(intents)
    cases = list(cases)
    for i, case in enumerate(cases):
        if case["route"] != FALLBACK and case["route"] not in specs:
            where = f"line {case['line']}" if case.get("line") else f"case {i + 1}"
            raise ValueError(f"{where} ({case['text']!r}) routes to unknown intent {case['route']!r}")
    build_ms = None
    if matcher is None:
        started = time.perf_counter()
        matcher = build_matcher(specs, kind, language=language)
        build_ms = round((time.perf_counter() - started) * 1000, 1)

    for case in cases[:warmup]:
        matcher.match(case["text"])

    timings: list[float] = []
    methods: Counter[str] = Counter()
    per_intent: dict[str, Counter[str]] = {name: Counter() for name in specs}
    confusions: Counter[tuple[str, str]] = Counter()
    in_scope = correct = rejected = misrouted = 0
    fallback_cases = false_accepts = routed = confirmed = 0
    for case in cases:
        started = time.perf_counter()
        result = matcher.match(case["text"])
        timings.append((time.perf_counter() - started) * 1000)
        got = result.intent or FALLBACK
        methods[result.method] += 1
        if result.intent is not None:
            routed += 1
            confirmed += bool(result.needs_confirmation)
        want = case["route"]
        if want == FALLBACK:
            fallback_cases += 1
            false_accepts += got != FALLBACK
        else:
            in_scope += 1
            per_intent[want]["n"] += 1
            if got == want:
                correct += 1
                per_intent[want]["correct"] += 1
            elif got == FALLBACK:
                rejected += 1
            else:
                misrouted += 1
        if got != want:
            confusions[(want, got)] += 1

    report: dict[str, Any] = {
        "n": len(cases),
        "n_in_scope": in_scope,
        "n_fallback": fallback_cases,
        "in_scope_acc": _ratio(correct, in_scope),
        "false_reject_rate": _ratio(rejected, in_scope),
        "misroute_rate": _ratio(misrouted, in_scope),
        "false_accept_rate": _ratio(false_accepts, fallback_cases),
        "confirm_rate": _ratio(confirmed, routed),
        "p50_ms": round(percentile(timings, 50), 3),
        "p99_ms": round(percentile(timings, 99), 3),
        "mean_ms": round(sum(timings) / len(timings), 3) if timings else 0.0,
        "matcher": type(matcher).__name__,
        "build_ms": build_ms,
        "methods": dict(methods),
        "per_intent": {
            name: {"n": c["n"], "acc": _ratio(c["correct"], c["n"])} for name, c in per_intent.items()
        },
        "top_confusions": [
            {"route": want, "got": got, "count": count} for (want, got), count in confusions.most_common(10)
        ],
    }
    for key in ("reject_below", "confirm_below"):
        if hasattr(matcher, key):
            report[key] = getattr(matcher, key)
    return report
