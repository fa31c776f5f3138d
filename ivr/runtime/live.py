"""Calls in progress now, for live screens: one Redis hash of every live call's place.

    ivr:live:calls   hash   CallSid -> {"flow", "node", "wait", "at", "test"} (JSON)

Each webhook's save script writes its call's entry with the new state (`commands`), and the
status callback that ends the call deletes it, so the hash is exactly the calls the server is
running, whichever web process answered them. A call whose end never arrived (its state
expired in Redis) is dropped by the next reader once its entry is older than the state's
time to live. Reading it is one HGETALL, whatever the number of web processes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from ivr.engine.states import Wait, is_over

KEY = "ivr:live:calls"


def commands(call_sid: str, state: Mapping[str, Any], now: float | None = None) -> list[list[Any]]:
    """The Redis command that keeps `call_sid`'s entry in step with its new state; it runs in
    the script that saves the state."""
    if not call_sid:
        return []
    if state.get("hung_up") or not state:
        return [["HDEL", KEY, call_sid]]
    entry = {"flow": state.get("flow"), "node": state.get("node"), "wait": state.get("wait"),
             "at": round(time.time() if now is None else now, 1), "test": bool(state.get("test"))}
    return [["HSET", KEY, call_sid, orjson.dumps(entry).decode()]]


def calls(redis: Any, max_age_s: float, now: float | None = None) -> dict[str, dict]:
    """Every live call by CallSid: {"flow", "node", "wait", "at", "test"}. Entries older than
    `max_age_s` (the state's time to live: their call's state is gone) are deleted."""
    now = time.time() if now is None else now
    out: dict[str, dict] = {}
    stale: list[str] = []
    for sid, raw in redis.hgetall(KEY).items():
        sid = sid.decode() if isinstance(sid, bytes) else sid
        try:
            entry = orjson.loads(raw)
        except ValueError:
            stale.append(sid)
            continue
        if now - float(entry.get("at") or 0) > max_age_s:
            stale.append(sid)
            continue
        out[sid] = entry
    if stale:
        redis.hdel(KEY, *stale)
    return out


def by_node(live: Mapping[str, dict], include_tests: bool = False) -> list[dict]:
    """Live calls counted by flow and node, busiest first: [{"flow", "node", "wait", "calls"}].
    A call the flow is done with (ended, or handed over after an error) is not counted."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for entry in live.values():
        if (entry.get("test") and not include_tests) or is_over(entry.get("wait")):
            continue
        wait = Wait.of(entry.get("wait"))
        counts[(entry.get("flow") or "", entry.get("node") or "", str(wait) if wait else "")] += 1
    return [{"flow": f, "node": n, "wait": w, "calls": c}
            for (f, n, w), c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
