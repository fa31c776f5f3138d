"""How long a caller will wait: an observed-rate estimate from live data.

For a caller with `ahead` callers and callbacks in front of them in the line of a queue
staffed by `staffed` agents (taking calls: not away or offline), `available` of them free right now, and
agents who recently took `handle_time` seconds per call:

    needed = max(0, ahead + 1 - available)     calls that must finish before an agent is free
    wait   = needed * handle_time / staffed    agents finish calls at staffed / handle_time a second

So a caller who would be served by an agent already free waits 0 s; the 5th in line with
2 agents busy on 5-minute calls waits 5 * 300 / 2 = 750 s. With nobody staffed there is no
estimate (wait None), and when no agent is available the wait counts as longer than any
threshold (`Estimate.longer_than`), so the callback offer is always made.

`handle_time` is the mean handling time of the last 100 calls of the queue in the last 24 h of
the call log (calls bridged from the queue, and callbacks connected to an agent). Workers
compute it from SQL (`refresh_stats`, on every sweep) and keep it in Redis, so the webhook
reads one hash and never the database. Until a queue has 5 such calls, IVR_CALLBACK_HANDLE_TIME
(300 s) is used.

Why not Erlang C: it gives the average wait of a random new caller from the arrival rate, but
a caller in line knows their position; counting the calls that must finish ahead of them is
both simpler and more accurate for them, and it needs no arrival rate.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ivr.engine.runner import Estimate
from ivr.engine.states import CallbackStatus

from . import agent_state, keys
from .agents import Agents

MIN_SAMPLES = 5
MAX_SAMPLES = 100
WINDOW = timedelta(hours=24)


def compute(ahead: int, available: int, staffed: int, handle_time: float) -> Estimate:
    """The estimate for a caller with `ahead` others in front of them (see the module doc)."""
    staffed = max(staffed, available)
    if staffed <= 0:
        return Estimate(position=ahead + 1, wait_s=None, agents_available=0)
    needed = max(0, ahead + 1 - available)
    return Estimate(position=ahead + 1, wait_s=needed * handle_time / staffed,
                    agents_available=available)


def handle_time(redis: Any, queue: str, default: float) -> float:
    """The queue's recent mean handling time, or `default` without enough calls in the log."""
    aht, samples = redis.hmget(keys.stats(queue), "handle_time", "samples")
    if aht is None or int(samples or 0) < MIN_SAMPLES:
        return float(default)
    return float(aht)


def reads(agents: Agents, queue: str, member: str | None) -> list[list[str]]:
    """The Redis reads an estimate for `member` of the queue's line needs: its rank, the
    line's size, the queue's handling time and the status of each agent who takes it."""
    names = [a.name for a in agents.roster.agents().values() if queue in a.queues]
    line = keys.line(queue)
    return ([["ZRANK", line, member or ""], ["ZCARD", line],
             ["HMGET", keys.stats(queue), "handle_time", "samples"]]
            + [["HMGET", keys.agent(name), *agent_state.FIELDS] for name in names])


def from_replies(replies: list[Any], default_handle_time: float,
                 twilio_position: int | None = None) -> Estimate:
    """The estimate from the replies to `reads`.

    Twilio's own queue position, when known, is a lower bound: it counts every live caller,
    even one the line missed; the line adds the callbacks, which Twilio does not know.
    """
    rank, size, (aht, samples), *live = replies
    ahead = int(rank) if rank is not None else int(size)
    if twilio_position:
        ahead = max(ahead, twilio_position - 1)
    now = time.time()
    states = [agent_state.from_fields("", fields, now)["state"] for fields in live]
    available = sum(1 for s in states if s == "available")
    staffed = sum(1 for s in states if s in agent_state.WORKING)
    handle = float(aht) if aht is not None and int(samples or 0) >= MIN_SAMPLES else default_handle_time
    return compute(ahead, available, staffed, handle)


def for_caller(redis: Any, agents: Agents, queue: str, member: str | None,
               default_handle_time: float, twilio_position: int | None = None) -> Estimate:
    """The estimate for `member` of the queue's line (a new arrival when it is not in it)."""
    pipe = redis.pipeline(transaction=False)  # one round trip
    for command in reads(agents, queue, member):
        pipe.execute_command(*command)
    return from_replies(pipe.execute(), default_handle_time, twilio_position)


# -- handling times from the call log ---------------------------------------------------------


def handling_times(store: Any, now: datetime | None = None) -> dict[str, list[float]]:
    """Recent handling times per queue from the SQL call log, newest first.

    A call bridged from a queue is logged as its `queue_left` step when the conversation ends,
    with the seconds it spent in the queue; the conversation is what came after the bridge. A
    callback's is from its agent connecting to its end.
    """
    import sqlalchemy as sa

    from ivr.calllog.store import callbacks as callbacks_table
    from ivr.calllog.store import steps

    now = now or datetime.now(UTC)
    since = now - WINDOW
    out: dict[str, list[tuple[datetime, float]]] = {}
    with store.engine.connect() as conn:
        left = conn.execute(
            sa.select(steps.c.call_sid, steps.c.seq, steps.c.node, steps.c.at, steps.c.detail)
            .where(steps.c.event == "queue_left", steps.c.at >= since)
            .order_by(steps.c.at.desc()).limit(2000)).all()
        bridged = []
        for row in left:
            detail = json.loads(row.detail) if row.detail else {}
            if detail.get("result") == "bridged" and detail.get("queue_time") is not None:
                bridged.append((row, float(detail["queue_time"])))
        if bridged:
            sids = sorted({row.call_sid for row, _ in bridged})
            enters = conn.execute(
                sa.select(steps.c.call_sid, steps.c.seq, steps.c.node, steps.c.at, steps.c.action)
                .where(steps.c.call_sid.in_(sids), steps.c.event == "enter",
                       steps.c.action.like("enqueue:%"))).all()
            for row, queue_time in bridged:
                entered = [e for e in enters if e.call_sid == row.call_sid and e.node == row.node
                           and e.seq < row.seq]
                if not entered:
                    continue
                enter = max(entered, key=lambda e: e.seq)
                talk = (row.at - enter.at).total_seconds() - queue_time
                if talk > 0:
                    out.setdefault(enter.action.split(":", 1)[1], []).append((row.at, talk))
        done = conn.execute(
            sa.select(callbacks_table.c.queue, callbacks_table.c.connected_at,
                      callbacks_table.c.ended_at)
            .where(callbacks_table.c.status == CallbackStatus.COMPLETED, callbacks_table.c.ended_at >= since,
                   callbacks_table.c.connected_at.is_not(None))).all()
        for row in done:
            talk = (row.ended_at - row.connected_at).total_seconds()
            if talk > 0:
                out.setdefault(row.queue, []).append((row.ended_at, talk))
    return {q: [t for _, t in sorted(v, key=lambda x: x[0], reverse=True)][:MAX_SAMPLES]
            for q, v in out.items()}


def refresh_stats(redis: Any, store: Any, now: datetime | None = None) -> dict[str, dict]:
    """Compute every queue's handling time from the log and keep it in Redis for estimates."""
    stats = {}
    pipe = redis.pipeline(transaction=False)
    for queue, times in handling_times(store, now).items():
        if not times:
            continue
        stats[queue] = {"handle_time": round(sum(times) / len(times), 1), "samples": len(times)}
        pipe.hset(keys.stats(queue), mapping={**stats[queue], "at": repr(time.time())})
        pipe.expire(keys.stats(queue), int(WINDOW.total_seconds()) * 2)
    pipe.execute()
    return stats
