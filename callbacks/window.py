"""The calling window: callers are only called back at hours that suit them, in their own time
zone (by default 08:00-21:00 every day, the usual legal limit for calls to consumers).

A caller's time zone comes from their number (`phonenumbers`). Zones that keep the same clock
all year count once (a UK mobile may be in London, Jersey, Guernsey or the Isle of Man: one
clock). A number spread over clocks at most `MAX_SPREAD` apart (a country with several zones)
must be inside the window in all of them, which leaves a narrower window but never a call at
night; a number that could be anywhere across a wider span (North American toll-free numbers,
from Guam to Newfoundland) uses the line's own time zone instead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_zones

from ivr.flows.hours import BusinessHours, parse_hours

DEFAULT_HOURS = {"mon-sun": "08:00-21:00"}
MAX_SPREAD = timedelta(hours=6)  # wider than this: the number says too little about where it is


def zones_for(number: str | None, fallback: str = "UTC") -> list[str]:
    """The time zones a number may be in, one per distinct clock (`fallback` when it is not
    clear)."""
    try:
        parsed = phonenumbers.parse(number or "")
    except phonenumbers.NumberParseException:
        return [fallback]
    clocks: dict[tuple, str] = {}
    for z in number_zones.time_zones_for_number(parsed):
        if z != "Etc/Unknown":
            clocks.setdefault(_clock(z), z)
    if not clocks:
        return [fallback]
    offsets = [offset for clock in clocks for offset in clock]
    if max(offsets) - min(offsets) > MAX_SPREAD:
        return [fallback]
    return list(clocks.values())


@lru_cache(maxsize=1024)
def _clock(zone: str) -> tuple[timedelta, ...]:
    """A zone's UTC offsets through two years: zones with the same ones keep the same clock."""
    tz = ZoneInfo(zone)
    year = datetime.now(UTC).year
    return tuple(datetime(y, m, d, 12, tzinfo=UTC).astimezone(tz).utcoffset()
                 for y in (year, year + 1) for m in range(1, 13) for d in (1, 15))


@lru_cache(maxsize=512)
def _hours(spec: str, zone: str) -> BusinessHours:
    return parse_hours("calling_hours", {"timezone": zone, "open": json.loads(spec)})


def _spec(hours: Any) -> str:
    return json.dumps(hours or DEFAULT_HOURS, sort_keys=True)


def is_open(hours: Any, zones: list[str], at: datetime) -> bool:
    """True when `at` is inside the calling window in every one of the caller's zones."""
    spec = _spec(hours)
    return all(_hours(spec, z).is_open(at) for z in zones or ["UTC"])


def next_open(hours: Any, zones: list[str], after: datetime,
              until: datetime | None = None) -> datetime | None:
    """The first moment at or after `after` inside the window in every zone; None when there is
    none before `until` (or in the next 14 days)."""
    spec = _spec(hours)
    zones = zones or ["UTC"]
    limit = until or after + timedelta(days=14)
    at = after
    for _ in range(64):
        if at > limit:
            return None
        if all(_hours(spec, z).is_open(at) for z in zones):
            return at
        openings = [_hours(spec, z).next_open(at) for z in zones]
        if any(o is None for o in openings):
            return None
        nxt = max(o for o in openings)
        at = nxt if nxt > at else at + timedelta(minutes=1)
    return None
