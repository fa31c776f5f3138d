"""Business hours and holidays, so a flow knows whether anyone is there to answer.

Operators write hours in the flow YAML::

    hours:
      support:
        timezone: America/New_York
        open:
          mon-fri: "08:00-20:00"
          sat: "09:00-13:00"
          sun: closed
        holidays:
          - 2026-12-25
          - {date: 2026-11-26, name: Thanksgiving}
          - {date: 2026-12-24, open: "08:00-12:00"}

Hours are wall-clock times in the line's timezone, so they follow daylight
saving time. An interval that ends before it starts ("22:00-02:00") runs past
midnight into the next day; that spill-over belongs to the day it started on,
so a holiday closes its own day but not the end of the night before.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from ivr.errors import IvrError
from ivr.i18n import Language
from ivr.i18n import language as spoken_in

__all__ = ["BusinessHours", "Holiday", "HoursError", "parse_hours"]

Path = tuple[str | int, ...]
Interval = tuple[int, int]  # minutes from the day's midnight; end may pass 1440

DAY = 24 * 60
LOOKAHEAD_DAYS = 14
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_NUMBERS = {name: number for names in (DAY_NAMES, FULL_DAY_NAMES) for number, name in enumerate(names)}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_EXAMPLE = 'e.g. "08:00-20:00", "08:00-12:00, 13:00-17:00", 24h or closed'


class HoursError(IvrError, ValueError):
    """Bad hours data; ``path`` is the key path inside the hours mapping."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = tuple(path)
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if not self.path:
            return self.message
        return f"{'.'.join(str(part) for part in self.path)}: {self.message}"


@dataclass(frozen=True)
class Holiday:
    """A date when the usual hours do not apply; ``open`` is empty when closed all day."""

    date: dt.date
    name: str = ""
    open: tuple[Interval, ...] = ()


@dataclass(frozen=True)
class BusinessHours:
    """When one line is open. Build it with ``parse_hours``."""

    name: str
    timezone: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]  # indexed by weekday, Monday = 0
    holidays: Mapping[dt.date, Holiday] = field(default_factory=dict)

    def is_open(self, at: dt.datetime) -> bool:
        """True when ``at`` (timezone-aware) falls inside opening hours."""
        local = self._local(at)
        minute = local.hour * 60 + local.minute + local.second / 60
        today = local.date()
        yesterday = today - dt.timedelta(days=1)
        return any(start <= minute < end for start, end in self._intervals(today)) or any(
            start <= minute + DAY < end for start, end in self._intervals(yesterday)
        )

    def holiday(self, at: dt.datetime) -> str | None:
        """The name of the holiday on ``at``'s local date ("holiday" if unnamed), or None.

        Days listed with special hours count as holidays too; ask ``is_open``
        whether the line is actually open.
        """
        found = self.holidays.get(self._local(at).date())
        if found is None:
            return None
        return found.name or "holiday"

    def next_open(self, at: dt.datetime) -> dt.datetime | None:
        """The next instant the line opens, in local time; ``at`` itself if already open.

        None when it stays closed for the next 14 days.
        """
        local = self._local(at)
        if self.is_open(local):
            return local
        for offset in range(LOOKAHEAD_DAYS + 1):
            day = local.date() + dt.timedelta(days=offset)
            for start, _ in self._intervals(day):
                wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=start)
                opening = self._aware(wall)
                if opening > local:
                    return opening
        return None

    def describe_next_open(self, at: dt.datetime, language: str | Language = "en-US") -> str:
        """The next opening in words a caller hears, in the flow's language: "at 1 PM",
        "tomorrow at 8 AM", "Monday at 9 AM", "Monday, January 4 at 9 AM" ("demain à 8 h",
        "lundi à 9 h" in French).

        "now" when open, and "" when closed for the next 14 days, so a flow can
        choose its own words for that.
        """
        local = self._local(at)
        opening = self.next_open(local)
        if opening is None:
            return ""
        lang = language if isinstance(language, Language) else spoken_in(language)
        return lang.next_time(opening, local)

    def _local(self, at: dt.datetime) -> dt.datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("business hours need a timezone-aware datetime")
        return at.astimezone(self.timezone)

    def _aware(self, wall: dt.datetime) -> dt.datetime:
        # A round trip through UTC moves times that do not exist (the hour
        # skipped when clocks spring forward) to the real instant after the gap.
        return wall.replace(tzinfo=self.timezone).astimezone(dt.UTC).astimezone(self.timezone)

    def _intervals(self, day: dt.date) -> tuple[Interval, ...]:
        special = self.holidays.get(day)
        if special is not None:
            return special.open
        return self.weekly[day.weekday()]


def parse_hours(name: str, data: Any) -> BusinessHours:
    """Build the hours called ``name`` from parsed YAML; raise HoursError on bad input."""
    if not isinstance(data, Mapping):
        raise HoursError((), f"hours '{name}' must be a mapping with timezone, open and holidays")
    for key in data:
        if key not in ("timezone", "open", "holidays"):
            raise HoursError((key,), _unknown("key", key, ("timezone", "open", "holidays")))
    if "timezone" not in data:
        raise HoursError(("timezone",), f"hours '{name}' need a timezone, e.g. timezone: America/New_York")
    if "open" not in data:
        raise HoursError(("open",), f"hours '{name}' need open hours, e.g. mon-fri: \"08:00-20:00\"")
    return BusinessHours(
        name=name,
        timezone=_parse_timezone(data["timezone"]),
        weekly=_parse_week(data["open"]),
        holidays=_parse_holidays(data.get("holidays") or []),
    )


def _unknown(kind: str, value: Any, choices: tuple[str, ...]) -> str:
    text = f"unknown {kind} '{value}'"
    close = difflib.get_close_matches(str(value).lower(), choices, n=1)
    if close:
        text += f" (did you mean '{close[0]}'?)"
    return text + f"; use {', '.join(choices)}"


@cache
def _timezone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


def _parse_timezone(value: Any) -> ZoneInfo:
    if not isinstance(value, str) or not value.strip():
        raise HoursError(("timezone",), "timezone must be a name like America/New_York")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        pass
    text = f"unknown timezone '{value}'"
    candidates = {n.lower(): n for n in _timezone_names()}
    close = difflib.get_close_matches(value.strip().lower().replace(" ", "_"), candidates, n=1)
    if close:
        text += f" (did you mean '{candidates[close[0]]}'?)"
    raise HoursError(("timezone",), text + "; use an IANA name like America/New_York")


def _parse_week(value: Any) -> tuple[tuple[Interval, ...], ...]:
    if not isinstance(value, Mapping):
        raise HoursError(("open",), 'open must map days to hours, e.g. mon-fri: "08:00-20:00"')
    week: list[tuple[Interval, ...]] = [() for _ in DAY_NAMES]
    given_by: dict[int, str] = {}
    for key, hours in value.items():
        path = ("open", key)
        days = _parse_days(path, key)
        intervals = _parse_intervals(path, hours)
        for day in days:
            if day in given_by:
                raise HoursError(path, f"{DAY_NAMES[day]} is already given by '{given_by[day]}'")
            given_by[day] = str(key)
            week[day] = intervals
    return tuple(week)


def _parse_days(path: Path, key: Any) -> list[int]:
    if not isinstance(key, str) or not key.strip():
        raise HoursError(path, f"'{key}' is not a day; use mon, tue, ... or ranges like mon-fri")
    days: list[int] = []
    for item in key.split(","):
        first, sep, last = (part.strip().lower() for part in item.partition("-"))
        start = _day_number(path, first)
        if not sep:
            days.append(start)
            continue
        end = _day_number(path, last)
        # Ranges may wrap around the weekend: fri-mon is fri, sat, sun, mon.
        days.extend((start + step) % 7 for step in range((end - start) % 7 + 1))
    return days


def _day_number(path: Path, name: str) -> int:
    if name in _DAY_NUMBERS:
        return _DAY_NUMBERS[name]
    text = f"unknown day '{name}'"
    close = difflib.get_close_matches(name, list(_DAY_NUMBERS), n=1, cutoff=0.5)
    if close:
        text += f" (did you mean '{DAY_NAMES[_DAY_NUMBERS[close[0]]]}'?)"
    raise HoursError(path, text + "; use mon, tue, ... or ranges like mon-fri")


def _parse_intervals(path: Path, value: Any) -> tuple[Interval, ...]:
    if isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, str):
        items = value.split(",")
    else:
        raise HoursError(path, f"hours must be text in quotes, {_EXAMPLE}")
    parts = [str(item).strip() for item in items]
    lowered = [part.lower() for part in parts]
    if lowered == ["closed"]:
        return ()
    if lowered == ["24h"]:
        return ((0, DAY),)
    if "closed" in lowered or "24h" in lowered or not all(parts):
        raise HoursError(path, f"cannot read hours '{value}'; {_EXAMPLE}")
    return tuple(sorted(_parse_interval(path, part) for part in parts))


def _parse_interval(path: Path, text: str) -> Interval:
    start_text, sep, end_text = text.replace("\u2013", "-").partition("-")
    if not sep:
        raise HoursError(path, f"cannot read hours '{text}'; {_EXAMPLE}")
    start = _parse_time(path, start_text.strip(), allow_24=False)
    end = _parse_time(path, end_text.strip(), allow_24=True)
    if start == end:
        raise HoursError(path, f"'{text}' opens and closes at the same time; for all day use 24h")
    if end < start:
        end += DAY  # past midnight, into the next day
    return start, end


def _parse_time(path: Path, text: str, allow_24: bool) -> int:
    match = _TIME.match(text)
    if match:
        hour, minute = int(match[1]), int(match[2])
        if minute < 60 and (hour < 24 or (allow_24 and hour == 24 and minute == 0)):
            return hour * 60 + minute
    raise HoursError(path, f"'{text}' is not a time; write HH:MM, {_EXAMPLE}")


def _parse_holidays(value: Any) -> dict[dt.date, Holiday]:
    if not isinstance(value, list):
        raise HoursError(("holidays",), "holidays must be a list of dates, e.g. - 2026-12-25")
    holidays: dict[dt.date, Holiday] = {}
    for index, item in enumerate(value):
        path: Path = ("holidays", index)
        if isinstance(item, Mapping):
            holiday = _parse_holiday_entry(path, item)
        else:
            holiday = Holiday(_parse_date(path, item))
        if holiday.date in holidays:
            raise HoursError(path, f"{holiday.date.isoformat()} is listed twice")
        holidays[holiday.date] = holiday
    return holidays


def _parse_holiday_entry(path: Path, item: Mapping[Any, Any]) -> Holiday:
    for key in item:
        if key not in ("date", "name", "open"):
            raise HoursError((*path, key), _unknown("key", key, ("date", "name", "open")))
    if "date" not in item:
        raise HoursError((*path, "date"), "holiday needs a date, e.g. date: 2026-12-25")
    name = item.get("name") or ""
    if not isinstance(name, str):
        raise HoursError((*path, "name"), "name must be text")
    hours = _parse_intervals((*path, "open"), item["open"]) if "open" in item else ()
    return Holiday(_parse_date((*path, "date"), item["date"]), name.strip(), hours)


def _parse_date(path: Path, value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise HoursError(path, f"'{value}' is not a date; write YYYY-MM-DD, e.g. 2026-12-25")
