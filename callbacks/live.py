"""Every queue as it is now, from Redis: who waits, for how long, who can answer them, and the
callbacks on their way. The wallboard (/dashboard/live), its JSON and the Prometheus metrics
read this; nothing here touches SQL, so any web process answers the same.

Per queue:

    waiting            live callers in the queue's line (holding, or answering the callback
                       questions they asked for while holding)
    longest_wait_s     how long the first of them has waited: now minus the time they first
                       joined the queue (the line's score; a caller who comes back keeps it)
    estimated_wait_s   the wait a caller joining now would be told (estimate.py), None when
                       nobody is staffed
    agents             the agents who take the queue, counted by state
    callbacks          pending (booked, waiting for their turn or their next attempt), due
                       (pending whose next attempt may start now) and dialling (an attempt is
                       under way: ringing the caller, or connecting the agent)
"""

from __future__ import annotations

import time
from collections import Counter

from ivr.engine.states import CallbackStatus, callback_is_live

from . import estimate, line
from .runtime import Runtime

# The order agents' states are shown in: ready, then busy with a caller, then not taking calls.
AGENT_STATES = ("available", "ringing", "on_call", "wrap_up", "away", "offline")


def agent_state(agent: dict) -> str:
    """What an agent is doing, from `Agents.list()` (callbacks/agent_state.py)."""
    return agent.get("state") or "offline"


def queue_names(rt: Runtime) -> list[str]:
    """Every queue an agent takes or that has had a line."""
    return sorted(rt.agents.queues() | set(line.queues(rt.redis)))


def snapshot(rt: Runtime, now: float | None = None) -> list[dict]:
    """Every queue now (see the module doc), by name."""
    now = time.time() if now is None else now
    agents = rt.agents.list()
    callbacks = rt.callbacks.list()
    out = []
    for name in queue_names(rt):
        members = line.entries(rt.redis, name)
        live = [since for member, since in members if line.is_live(member)]
        est = estimate.for_caller(rt.redis, rt.agents, name, None, rt.config.callback_handle_time)
        states = Counter(agent_state(a) for a in agents if name in a["queues"])
        mine = [c for c in callbacks if c.get("queue") == name]
        pending = [c for c in mine if c["status"] == CallbackStatus.PENDING]
        out.append({
            "queue": name,
            "waiting": len(live),
            "longest_wait_s": round(max(0.0, now - min(live)), 1) if live else None,
            "estimated_wait_s": None if est.wait_s is None else round(est.wait_s),
            "agents": {s: states[s] for s in _ordered(states)},
            "agents_staffed": sum(n for s, n in states.items() if s not in ("away", "offline")),
            "callbacks": {
                "pending": len(pending),
                "due": sum(1 for c in pending if (c.get("not_before") or 0) <= now
                           and not (c.get("expires_at") and c["expires_at"] <= now)),
                "dialling": sum(1 for c in mine if callback_is_live(c["status"])),
            },
        })
    return out


def agents_by_state(rt: Runtime) -> dict[str, int]:
    """Every agent once, counted by state (in AGENT_STATES order)."""
    states = Counter(agent_state(a) for a in rt.agents.list())
    return {s: states[s] for s in _ordered(states)}


def _ordered(states: Counter) -> list[str]:
    known = [s for s in AGENT_STATES if states.get(s)]
    return known + sorted(s for s in states if s not in AGENT_STATES and states[s])


def callbacks_by_status(rt: Runtime) -> dict[tuple[str, str], int]:
    """Callbacks not finished yet, counted by (queue, status)."""
    counts: Counter[tuple[str, str]] = Counter()
    for c in rt.callbacks.list():
        counts[(c.get("queue") or "", str(c["status"]))] += 1
    return dict(counts)
