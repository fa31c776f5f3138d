"""The calling window: callers are only called back at hours that suit them, in their own time
zone (by default 08:00-21:00 every day, the usual legal limit for calls to consumers).

A caller's time zone comes from their number (`phonenumbers`). A number spread over a few
zones (a country with several) must be inside the window in all of them; a number that could
be in many (North American non-geographic numbers) uses the line's own time zone instead.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import timezone as number_zones

from ivr.hours import BusinessHours, parse_hours

DEFAULT_HOURS = {"mon-sun": "08:00-21:00"}
MAX_ZONES = 3  # more candidate zones than this: the number says too little about where it is


def zones_for(number: str | None, fallback: str = "UTC") -> list[str]:
    """The time zones a number may be in (`fallback` when it is not clear)."""
    try:
        parsed = phonenumbers.parse(number or "")
    except phonenumbers.NumberParseException:
        return [fallback]
    zones = [z for z in number_zones.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    if not zones or len(zones) > MAX_ZONES:
        return [fallback]
    return zones


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
