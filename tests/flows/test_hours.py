import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from ivr.flows.hours import HoursError, parse_hours

NY = ZoneInfo("America/New_York")
UTC = dt.UTC

SUPPORT = {
    "timezone": "America/New_York",
    "open": {"mon-fri": "08:00-20:00", "sat": "09:00-13:00", "sun": "closed"},
    "holidays": [
        dt.date(2026, 12, 25),
        {"date": dt.date(2026, 11, 26), "name": "Thanksgiving"},
        {"date": "2026-12-24", "open": "08:00-12:00"},
    ],
}


def ny(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=NY)


@pytest.fixture
def support():
    return parse_hours("support", SUPPORT)


# --- is_open ---


def test_weekday_hours(support):
    assert not support.is_open(ny(2026, 12, 16, 7, 59))
    assert support.is_open(ny(2026, 12, 16, 8, 0))
    assert support.is_open(ny(2026, 12, 16, 19, 59, 59))
    assert not support.is_open(ny(2026, 12, 16, 20, 0))
    assert support.is_open(ny(2026, 12, 19, 12, 0))  # Saturday
    assert not support.is_open(ny(2026, 12, 20, 12, 0))  # Sunday


def test_times_in_other_zones_are_converted(support):
    # 13:30 UTC is 08:30 in New York in December
    assert support.is_open(dt.datetime(2026, 12, 16, 13, 30, tzinfo=UTC))
    assert not support.is_open(dt.datetime(2026, 12, 16, 12, 30, tzinfo=UTC))


def test_naive_datetimes_are_refused(support):
    with pytest.raises(ValueError):
        support.is_open(dt.datetime(2026, 12, 16, 9, 0))


def test_holidays_close_the_day(support):
    christmas = ny(2026, 12, 25, 10, 0)  # a Friday
    assert not support.is_open(christmas)
    assert support.holiday(christmas) == "holiday"
    assert support.holiday(ny(2026, 11, 26, 10, 0)) == "Thanksgiving"
    assert support.holiday(ny(2026, 12, 23, 10, 0)) is None


def test_special_short_day(support):
    eve = ny(2026, 12, 24, 11, 0)
    assert support.is_open(eve)
    assert support.holiday(eve) == "holiday"
    assert not support.is_open(ny(2026, 12, 24, 13, 0))


def test_overnight_interval_runs_into_the_next_day():
    hours = parse_hours(
        "night",
        {
            "timezone": "Europe/London",
            "open": {"fri": "22:00-02:00"},
            "holidays": ["2026-12-19"],  # the Saturday: its own day, not Friday's night
        },
    )
    london = ZoneInfo("Europe/London")
    assert not hours.is_open(dt.datetime(2026, 12, 18, 21, 59, tzinfo=london))
    assert hours.is_open(dt.datetime(2026, 12, 18, 23, 0, tzinfo=london))
    assert hours.is_open(dt.datetime(2026, 12, 19, 1, 59, tzinfo=london))
    assert not hours.is_open(dt.datetime(2026, 12, 19, 2, 0, tzinfo=london))
    assert not hours.is_open(dt.datetime(2026, 12, 19, 23, 0, tzinfo=london))


def test_all_day_and_several_intervals():
    hours = parse_hours(
        "x",
        {
            "timezone": "UTC",
            "open": {"mon": "24h", "tue": "00:00-24:00", "wed": "08:00-12:00, 13:00-17:00"},
        },
    )
    assert hours.is_open(dt.datetime(2026, 12, 14, 0, 0, tzinfo=UTC))
    assert hours.is_open(dt.datetime(2026, 12, 15, 23, 59, tzinfo=UTC))
    assert hours.is_open(dt.datetime(2026, 12, 16, 11, 0, tzinfo=UTC))
    assert not hours.is_open(dt.datetime(2026, 12, 16, 12, 30, tzinfo=UTC))
    assert hours.is_open(dt.datetime(2026, 12, 16, 13, 0, tzinfo=UTC))
    # mon to tue midnight is not an opening: the line never closed
    assert hours.next_open(dt.datetime(2026, 12, 16, 12, 30, tzinfo=UTC)) == dt.datetime(
        2026, 12, 16, 13, 0, tzinfo=UTC
    )


def test_day_lists_ranges_and_full_names():
    hours = parse_hours(
        "x",
        {
            "timezone": "UTC",
            "open": {"Fri-Mon": "10:00-11:00", "Wednesday, thu": "12:00-13:00"},
        },
    )
    # 2026-12-14 is a Monday
    opened = [hours.is_open(dt.datetime(2026, 12, 14 + day, 10, 30, tzinfo=UTC)) for day in range(7)]
    assert opened == [True, False, False, False, True, True, True]
    assert hours.is_open(dt.datetime(2026, 12, 16, 12, 30, tzinfo=UTC))
    assert hours.is_open(dt.datetime(2026, 12, 17, 12, 30, tzinfo=UTC))


# --- daylight saving time ---

SPRING_FORWARD = dt.date(2026, 3, 8)  # New York: 02:00 EST becomes 03:00 EDT


def test_hours_are_wall_clock_across_spring_forward():
    hours = parse_hours("x", {"timezone": "America/New_York", "open": {"sun": "01:00-04:00"}})
    # 06:30 UTC is 01:30 EST; 07:30 UTC is 03:30 EDT; 08:30 UTC is 04:30 EDT
    assert hours.is_open(dt.datetime(2026, 3, 8, 6, 30, tzinfo=UTC))
    assert hours.is_open(dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC))
    assert not hours.is_open(dt.datetime(2026, 3, 8, 8, 30, tzinfo=UTC))


def test_next_open_over_spring_forward_uses_the_new_offset():
    hours = parse_hours("x", {"timezone": "America/New_York", "open": {"mon-sun": "08:00-20:00"}})
    saturday_night = dt.datetime(2026, 3, 7, 22, 0, tzinfo=NY)  # EST, UTC-5
    opening = hours.next_open(saturday_night)
    assert opening.astimezone(UTC) == dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # 08:00 EDT
    assert (opening.hour, opening.utcoffset()) == (8, dt.timedelta(hours=-4))


def test_opening_inside_the_skipped_hour_moves_to_the_real_instant():
    hours = parse_hours("x", {"timezone": "America/New_York", "open": {"sun": "02:30-05:00"}})
    opening = hours.next_open(dt.datetime(2026, 3, 8, 0, 0, tzinfo=NY))
    assert opening.astimezone(UTC) == dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert (opening.hour, opening.minute) == (3, 30)


# --- next_open and its description ---


def test_next_open_over_a_weekend(support):
    saturday_afternoon = ny(2026, 12, 19, 14, 0)
    assert support.next_open(saturday_afternoon) == ny(2026, 12, 21, 8, 0)
    assert support.describe_next_open(saturday_afternoon) == "Monday at 8 AM"


def test_next_open_skips_holidays(support):
    christmas_eve_afternoon = ny(2026, 12, 24, 13, 0)
    # Friday is Christmas, Saturday opens at nine
    assert support.next_open(christmas_eve_afternoon) == ny(2026, 12, 26, 9, 0)
    assert support.describe_next_open(christmas_eve_afternoon) == "Saturday at 9 AM"


def test_describe_today_and_tomorrow(support):
    assert support.describe_next_open(ny(2026, 12, 16, 6, 0)) == "at 8 AM"
    assert support.describe_next_open(ny(2026, 12, 16, 21, 0)) == "tomorrow at 8 AM"
    # 01:00 UTC is still yesterday evening in New York; 06:00 UTC is 1 AM there
    assert support.describe_next_open(dt.datetime(2026, 12, 17, 1, 0, tzinfo=UTC)) == ("tomorrow at 8 AM")
    assert support.describe_next_open(dt.datetime(2026, 12, 17, 6, 0, tzinfo=UTC)) == "at 8 AM"


def test_describe_minutes_afternoons_and_far_dates():
    hours = parse_hours(
        "x",
        {
            "timezone": "UTC",
            "open": {"mon": "13:30-14:00"},
            "holidays": ["2026-12-21"],
        },
    )
    assert hours.describe_next_open(dt.datetime(2026, 12, 14, 9, 0, tzinfo=UTC)) == "at 1:30 PM"
    # the next Monday is a holiday, so it is more than a week away
    assert (
        hours.describe_next_open(dt.datetime(2026, 12, 15, 9, 0, tzinfo=UTC))
        == "Monday, December 28 at 1:30 PM"
    )


def test_when_open_next_open_is_now(support):
    at = ny(2026, 12, 16, 9, 0)
    assert support.next_open(at) == at
    assert support.describe_next_open(at) == "now"


def test_closed_for_more_than_two_weeks():
    hours = parse_hours("x", {"timezone": "UTC", "open": {"mon-sun": "closed"}})
    at = dt.datetime(2026, 12, 16, tzinfo=UTC)
    assert hours.next_open(at) is None
    assert hours.describe_next_open(at) == ""


# --- operator mistakes ---


def broken(data):
    with pytest.raises(HoursError) as caught:
        parse_hours("support", data)
    return caught.value


def with_open(open_hours):
    return {"timezone": "UTC", "open": open_hours}


def test_unknown_day_names_the_key_and_suggests():
    error = broken(with_open({"mon-fry": "08:00-20:00"}))
    assert error.path == ("open", "mon-fry")
    assert "unknown day 'fry' (did you mean 'fri'?)" in error.message
    assert "ranges like mon-fri" in error.message
    assert str(error).startswith("open.mon-fry: ")

    error = broken(with_open({"tues": "08:00-20:00"}))
    assert error.message == (
        "unknown day 'tues' (did you mean 'tue'?); use mon, tue, ... or ranges like mon-fri"
    )


@pytest.mark.parametrize(
    ("hours", "words"),
    [
        ("8-20", "'8' is not a time"),
        ("08:00-25:00", "'25:00' is not a time"),
        ("08:60-20:00", "'08:60' is not a time"),
        ("24:00-08:00", "'24:00' is not a time"),
        ("09:00-09:00", "for all day use 24h"),
        ("08:00", "cannot read hours"),
        ("closed, 08:00-12:00", "cannot read hours"),
        ("08:00-12:00,", "cannot read hours"),
        (480, "must be text in quotes"),
    ],
)
def test_bad_intervals(hours, words):
    error = broken(with_open({"mon": hours}))
    assert error.path == ("open", "mon")
    assert words in error.message


def test_a_day_given_twice():
    error = broken(with_open({"mon-fri": "08:00-20:00", "fri": "08:00-16:00"}))
    assert error.path == ("open", "fri")
    assert "fri is already given by 'mon-fri'" in error.message


def test_timezone_is_required_with_an_example():
    error = broken({"open": {"mon": "24h"}})
    assert error.path == ("timezone",)
    assert "timezone: America/New_York" in error.message


def test_unknown_timezone_suggests():
    error = broken({"timezone": "America/New York", "open": {"mon": "24h"}})
    assert error.path == ("timezone",)
    assert "did you mean 'America/New_York'?" in error.message


def test_unknown_keys_suggest():
    error = broken({"timezone": "UTC", "open": {}, "holiday": []})
    assert error.path == ("holiday",)
    assert "did you mean 'holidays'?" in error.message


@pytest.mark.parametrize(
    ("holidays", "path", "words"),
    [
        (["2026-02-30"], ("holidays", 0), "is not a date"),
        ([dt.datetime(2026, 12, 25, 9, 0)], ("holidays", 0), "is not a date"),
        (["2026-12-25", {"date": "2026-13-01"}], ("holidays", 1, "date"), "is not a date"),
        ([{"name": "Christmas"}], ("holidays", 0, "date"), "holiday needs a date"),
        ([{"date": "2026-12-24", "opens": "08:00-12:00"}], ("holidays", 0, "opens"), "did you mean 'open'?"),
        ([{"date": "2026-12-24", "open": "8am"}], ("holidays", 0, "open"), "cannot read hours"),
        (["2026-12-25", dt.date(2026, 12, 25)], ("holidays", 1), "listed twice"),
        ("2026-12-25", ("holidays",), "must be a list"),
    ],
)
def test_bad_holidays(holidays, path, words):
    error = broken({"timezone": "UTC", "open": {"mon": "24h"}, "holidays": holidays})
    assert error.path == path
    assert words in error.message


def test_not_a_mapping():
    assert broken("mon-fri 8-8").path == ()
