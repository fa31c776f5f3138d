"""The line of a queue: live callers and callbacks in one order, the time each caller first
joined the queue.

One Redis sorted set per queue. Members are `call:<CallSid>` (a caller holding in Twilio's
queue, or answering the callback questions) and `cb:<id>` (a callback keeping its caller's
place); the score is the first-join time in epoch seconds. A callback takes over the score of
the call that booked it, so it stays exactly where the caller was, ahead of everyone who
joined later, whether they hold or asked for a callback too (as Amazon Connect and Genesys
order callbacks).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import keys


def epoch(value: str | float | datetime) -> float:
    """Seconds since the epoch from an ISO 8601 time, a datetime, or a number."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.timestamp()


def join(redis: Any, queue: str, member: str, since: str | float | datetime) -> None:
    """Put `member` in the line at `since`; a member already there keeps its earlier place."""
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(keys.line(queue), {member: epoch(since)}, nx=True)
    pipe.sadd(keys.LINES, queue)
    pipe.execute()


def leave(redis: Any, queue: str, member: str) -> bool:
    """Take `member` out of the line; True if it was there."""
    return bool(redis.zrem(keys.line(queue), member))


def position(redis: Any, queue: str, member: str) -> int | None:
    """1 for the head of the line, None when `member` is not in it."""
    rank = redis.zrank(keys.line(queue), member)
    return None if rank is None else int(rank) + 1


def size(redis: Any, queue: str) -> int:
    return int(redis.zcard(keys.line(queue)))


def entries(redis: Any, queue: str, start: int = 0, stop: int = -1) -> list[tuple[str, float]]:
    """(member, first-join time) from the head of the line."""
    rows = redis.zrange(keys.line(queue), start, stop, withscores=True)
    return [(_text(m), float(s)) for m, s in rows]


def queues(redis: Any) -> list[str]:
    """Every queue that has (or had) a line."""
    return sorted(_text(q) for q in redis.smembers(keys.LINES))


def is_live(member: str) -> bool:
    return member.startswith("call:")


def member_id(member: str) -> str:
    """The CallSid or callback id inside a member name."""
    return member.split(":", 1)[1]


def remove_stale(redis: Any, queue: str, members: Iterable[str]) -> int:
    members = list(members)
    return int(redis.zrem(keys.line(queue), *members)) if members else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
