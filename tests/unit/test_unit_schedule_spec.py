"""Schedule specs: every form's next run in UTC, Europe/Paris, America/New_York and
Australia/Lord_Howe across both 2026 transitions of each, iteration over DST days, properties
of next_after, describe() and the messages of bad specs. Fast: no server, no clock.

The 2026 transitions (checked with zoneinfo):
* Paris: 2026-03-29 01:00Z (02:00 -> 03:00), 2026-10-25 01:00Z (03:00 -> 02:00);
* New York: 2026-03-08 07:00Z (02:00 -> 03:00), 2026-11-01 06:00Z (02:00 -> 01:00);
* Lord Howe: 2026-04-04 15:00Z (local 04-05 02:00 -> 01:30), 2026-10-03 15:30Z (local 10-04 02:00 -> 02:30).
"""

from __future__ import annotations

import itertools
import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_anvil.host.schedules.spec import ScheduleSpecError, Spec, parse_spec

UTC = timezone.utc
PARIS, NEW_YORK, LORD_HOWE = "Europe/Paris", "America/New_York", "Australia/Lord_Howe"
ZONES = ("UTC", PARIS, NEW_YORK, LORD_HOWE)
# one day around each transition (local dates), per zone; UTC gets the Paris dates
TRANSITION_DAYS = {
    "UTC": (date(2026, 3, 29), date(2026, 10, 25)),
    PARIS: (date(2026, 3, 29), date(2026, 10, 25)),
    NEW_YORK: (date(2026, 3, 8), date(2026, 11, 1)),
    LORD_HOWE: (date(2026, 4, 5), date(2026, 10, 4)),
}
ZONE_DAYS = [(zone, day) for zone, days in TRANSITION_DAYS.items() for day in days]


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


def local(zone: str, *fields: int, fold: int = 0) -> datetime:
    return datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold)  # type: ignore[misc]


def fires(spec: Spec, start: datetime, end: datetime, limit: int = 100_000) -> list[datetime]:
    """Every fire time in (start, end], by iterating next_after."""
    found: list[datetime] = []
    at = start
    for _ in range(limit):
        at = spec.next_after(at)
        if at > end:
            return found
        found.append(at)
    raise AssertionError("too many fires")


def local_day(zone: str, day: date) -> tuple[datetime, datetime]:
    """The local day's start (just before its midnight) and end, as instants."""
    start = datetime.combine(day, datetime.min.time(), ZoneInfo(zone))
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), ZoneInfo(zone))
    return start - timedelta(microseconds=1), end - timedelta(microseconds=1)


def wall(instant: datetime, zone: str) -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


# ---- elapsed intervals: aligned to the epoch, untouched by DST ------------------------------


@pytest.mark.parametrize(("zone", "day"), ZONE_DAYS)
@pytest.mark.parametrize(
    ("phrase", "period"),
    [
        ("every second", 1),
        ("every 30 seconds", 30),
        ("every minute", 60),
        ("every 10 minutes", 600),
        ("every 7 minutes", 420),
        ("every hour", 3600),
        ("every 2 hours", 7200),
    ],
)
def test_intervals_are_elapsed_time_aligned_to_the_epoch(phrase: str, period: int, zone: str, day: date) -> None:
    spec = parse_spec(phrase, zone)
    start, end = local_day(zone, day)
    if period == 1:  # a day of seconds is slow to iterate: the two hours around the change
        start, end = start + timedelta(hours=1), start + timedelta(hours=3)
    found = fires(spec, start, end)
    assert found, phrase
    assert all(t.tzinfo == UTC for t in found)
    assert all(t.timestamp() % period == 0 for t in found)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(found)}
    assert gaps == {period}, (phrase, zone, day)
    assert (found[0] - start).total_seconds() <= period


def test_every_ten_minutes_fires_on_the_tens_and_thirty_seconds_on_the_half_minutes() -> None:
    ten = parse_spec("every 10 minutes")
    assert ten.next_after(utc(2026, 5, 1, 9, 3, 12)) == utc(2026, 5, 1, 9, 10)
    assert ten.next_after(utc(2026, 5, 1, 9, 10)) == utc(2026, 5, 1, 9, 20)  # strictly after
    half = parse_spec("every 30 seconds", PARIS)
    assert half.next_after(utc(2026, 5, 1, 9, 0, 0)) == utc(2026, 5, 1, 9, 0, 30)
    assert half.next_after(utc(2026, 5, 1, 9, 0, 29, 999999)) == utc(2026, 5, 1, 9, 0, 30)


@pytest.mark.parametrize(("zone", "day"), ZONE_DAYS)
def test_every_hour_at_a_minute_reads_the_minute_on_the_zone_clock(zone: str, day: date) -> None:
    spec = parse_spec("every hour at :15", zone)
    start, end = local_day(zone, day)
    found = fires(spec, start, end)
    assert all(t.astimezone(ZoneInfo(zone)).minute == 15 for t in found)
    assert all(t.second == 0 for t in found)
    assert len(found) == len(set(found))
    gaps = sorted({(b - a).total_seconds() for a, b in itertools.pairwise(found)})
    if zone == LORD_HOWE:  # a 30-minute change moves local :15 against UTC once
        assert gaps in ([1800.0, 3600.0], [3600.0, 5400.0])
    else:  # whole-hour changes: elapsed hours, UTC minute 15
        assert gaps == [3600.0]
        assert all(t.minute == 15 for t in found)


def test_every_hour_at_a_minute_in_a_half_hour_zone() -> None:
    spec = parse_spec("every hour at :15", "Asia/Kolkata")  # +05:30
    assert spec.next_after(utc(2026, 5, 1, 9, 0)) == utc(2026, 5, 1, 9, 45)
    assert wall(utc(2026, 5, 1, 9, 45), "Asia/Kolkata").endswith("15:15:00")


# ---- wall-clock forms: once a day at the time, across both transitions ---------------------


@pytest.mark.parametrize(("zone", "day"), ZONE_DAYS)
@pytest.mark.parametrize("phrase", ["every day at 09:00", "0 9 * * *", "at 9:00"])
def test_a_daily_time_fires_once_a_day_at_that_local_time(phrase: str, zone: str, day: date) -> None:
    spec = parse_spec(phrase, zone)
    start, _ = local_day(zone, day - timedelta(days=2))
    _, end = local_day(zone, day + timedelta(days=2))
    found = fires(spec, start, end)
    assert [wall(t, zone) for t in found] == [f"{day + timedelta(days=d)} 09:00:00" for d in range(-2, 3)]


@pytest.mark.parametrize(
    "form", ["every day at 02:30", "30 2 * * *", {"every": "day", "at": {"hour": 2, "minute": 30}}]
)
def test_a_time_skipped_by_spring_forward_fires_once_shifted_by_the_gap(form: object) -> None:
    spec = parse_spec(form, PARIS)  # type: ignore[arg-type]
    found = fires(spec, *local_day(PARIS, date(2026, 3, 29)))
    assert found == [utc(2026, 3, 29, 1, 30)]  # 03:30 CEST: 02:30 moved forward by the hour
    assert wall(found[0], PARIS) == "2026-03-29 03:30:00"
    # from just after the jump (03:10 local), the shifted 02:30 is still ahead: not skipped
    assert spec.next_after(local(PARIS, 2026, 3, 29, 3, 10)) == utc(2026, 3, 29, 1, 30)
    # and once it has fired, the next one is tomorrow's
    assert spec.next_after(utc(2026, 3, 29, 1, 30)) == local(PARIS, 2026, 3, 30, 2, 30)

    new_york = parse_spec(form, NEW_YORK)  # type: ignore[arg-type]
    assert fires(new_york, *local_day(NEW_YORK, date(2026, 3, 8))) == [utc(2026, 3, 8, 7, 30)]  # 03:30 EDT


def test_lord_howe_spring_forward_shifts_by_thirty_minutes() -> None:
    for form in ("every day at 02:15", "15 2 * * *"):
        spec = parse_spec(form, LORD_HOWE)
        found = fires(spec, *local_day(LORD_HOWE, date(2026, 10, 4)))
        assert [wall(t, LORD_HOWE) for t in found] == ["2026-10-04 02:45:00"]  # 02:00 -> 02:30
        assert found == [utc(2026, 10, 3, 15, 45)]


@pytest.mark.parametrize(
    ("zone", "form", "first"),
    [
        (NEW_YORK, "every day at 01:30", utc(2026, 11, 1, 5, 30)),  # 01:30 EDT, not 01:30 EST (06:30Z)
        (NEW_YORK, "30 1 * * *", utc(2026, 11, 1, 5, 30)),
        (PARIS, "every day at 02:30", utc(2026, 10, 25, 0, 30)),  # 02:30 CEST, not CET (01:30Z)
        (PARIS, "30 2 * * *", utc(2026, 10, 25, 0, 30)),
        (LORD_HOWE, "every day at 01:45", utc(2026, 4, 4, 14, 45)),  # 01:45 +11, not +10:30 (15:15Z)
        (LORD_HOWE, "45 1 * * *", utc(2026, 4, 4, 14, 45)),
    ],
)
def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence(zone: str, form: str, first: datetime) -> None:
    spec = parse_spec(form, zone)
    day = TRANSITION_DAYS[zone][1 if zone != LORD_HOWE else 0]
    assert fires(spec, *local_day(zone, day)) == [first]
    # from inside the repeated hour, after the first occurrence: not again, tomorrow
    second_pass = first + timedelta(minutes=45 if zone != LORD_HOWE else 20)
    assert spec.next_after(second_pass).astimezone(ZoneInfo(zone)).date() == day + timedelta(days=1)


@pytest.mark.parametrize(("zone", "day"), ZONE_DAYS)
def test_iterating_an_hourly_cron_over_a_dst_day_fires_each_scheduled_time_once(zone: str, day: date) -> None:
    spec = parse_spec("0 * * * *", zone)
    found = fires(spec, *local_day(zone, day))
    assert len(found) == len(set(found))
    assert found == sorted(found)
    walls = [wall(t, zone)[11:] for t in found]
    if (zone, day) in ((PARIS, date(2026, 3, 29)), (NEW_YORK, date(2026, 3, 8))):
        # 02:00 does not exist: it fires at 03:00, the same instant as 03:00's own run
        assert len(found) == 23 and "02:00:00" not in walls
    elif zone == LORD_HOWE and day == date(2026, 10, 4):
        # 02:00 does not exist (02:00 -> 02:30): it fires once, at 02:30
        assert len(found) == 24 and "02:30:00" in walls and "02:00:00" not in walls
    else:  # a repeated hour fires once: one run per local hour
        assert walls == [f"{h:02d}:00:00" for h in range(24)]


def test_a_half_hourly_cron_over_fall_back_skips_the_repeated_times() -> None:
    spec = parse_spec("*/30 * * * *", NEW_YORK)
    found = fires(spec, utc(2026, 11, 1, 4, 45), utc(2026, 11, 1, 7, 45))
    # 01:00 and 01:30 EDT run; their EST repeats (06:00Z, 06:30Z) do not; then 02:00 EST
    assert found == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 7), utc(2026, 11, 1, 7, 30)]


def test_a_half_hourly_cron_over_spring_forward_never_fires_an_instant_twice() -> None:
    spec = parse_spec("*/30 * * * *", PARIS)
    found = fires(spec, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0))
    assert found == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2)]


@pytest.mark.parametrize("zone", ZONES)
def test_weekly_monthly_and_every_n_days_across_the_transitions(zone: str) -> None:
    year_start = local(zone, 2026, 1, 1)
    year_end = local(zone, 2026, 12, 31, 23, 59)
    mondays = fires(parse_spec("every monday at 08:30", zone), year_start, year_end)
    assert len(mondays) == 52
    assert all(wall(t, zone)[11:] == "08:30:00" and t.astimezone(ZoneInfo(zone)).weekday() == 0 for t in mondays)

    weekdays = fires(parse_spec("every weekday at 07:00", zone), year_start, year_end)
    assert len(weekdays) == 261 and {t.astimezone(ZoneInfo(zone)).weekday() for t in weekdays} == set(range(5))

    firsts = fires(parse_spec("every month on day 1 at 06:00", zone), year_start, year_end)
    assert [wall(t, zone) for t in firsts] == [f"2026-{m:02d}-01 06:00:00" for m in range(1, 13)]

    lasts = fires(parse_spec("every month on the last day at 23:00", zone), year_start, year_end)
    assert [wall(t, zone)[5:10] for t in lasts][:4] == ["01-31", "02-28", "03-31", "04-30"]

    threes = fires(parse_spec("every 3 days at 06:00", zone), year_start, year_end)
    anchor = date(1970, 1, 1)
    assert all((t.astimezone(ZoneInfo(zone)).date() - anchor).days % 3 == 0 for t in threes)
    assert all(wall(t, zone)[11:] == "06:00:00" for t in threes)
    assert {
        (b.astimezone(ZoneInfo(zone)).date() - a.astimezone(ZoneInfo(zone)).date()).days
        for a, b in itertools.pairwise(threes)
    } == {3}


def test_every_two_weeks_is_the_same_fortnight_from_any_starting_point() -> None:
    spec = parse_spec("every 2 weeks on friday at 17:00", PARIS)
    found = fires(spec, local(PARIS, 2026, 3, 1), local(PARIS, 2026, 11, 30))
    assert {(b - a).days for a, b in itertools.pairwise(found)} <= {13, 14}  # 13 days + 23/25 hours over DST
    assert all(wall(t, PARIS)[11:] == "17:00:00" for t in found)
    for t in found:  # counted from the ISO week of Monday 1970-01-05
        day = t.astimezone(ZoneInfo(PARIS)).date()
        assert day.weekday() == 4 and ((day - date(1970, 1, 5)).days // 7) % 2 == 0
    # any instant of a fortnight gives the same next run: servers and restarts agree
    first = found[3]
    for back in (timedelta(seconds=1), timedelta(days=5), timedelta(days=13, hours=23)):
        assert spec.next_after(first - back) == first


def test_defaults_every_day_is_midnight_and_every_week_is_monday_midnight() -> None:
    assert parse_spec("every day", PARIS).next_after(local(PARIS, 2026, 3, 28, 12)) == local(PARIS, 2026, 3, 29)
    assert parse_spec("every week", NEW_YORK).next_after(local(NEW_YORK, 2026, 3, 4)) == local(NEW_YORK, 2026, 3, 9)
    assert parse_spec("every month", "UTC").next_after(utc(2026, 1, 31)) == utc(2026, 2, 1)
    assert parse_spec("daily at 5pm", "UTC").next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 17)


def test_case_and_spaces_do_not_matter_and_seconds_are_allowed() -> None:
    after = utc(2026, 6, 1, 12)
    plain = parse_spec("every day at 09:00", PARIS).next_after(after)
    assert parse_spec("  EVERY   Day  At 9:00 ", PARIS).next_after(after) == plain
    assert parse_spec("at 09:00:30", "UTC").next_after(after) == utc(2026, 6, 2, 9, 0, 30)
    assert parse_spec("Every Monday and Thursday at 08:00", "UTC").next_after(after) == utc(2026, 6, 1, 8) + timedelta(
        days=3
    )


def test_a_month_day_past_the_month_end_fires_on_its_last_day() -> None:
    spec = parse_spec("every month on day 31 at 12:00", "UTC")
    assert spec.next_after(utc(2026, 4, 1)) == utc(2026, 4, 30, 12)
    assert spec.next_after(utc(2026, 4, 30, 12)) == utc(2026, 5, 31, 12)


# ---- Anvil's time_spec ----------------------------------------------------------------------


def test_time_spec_forms() -> None:
    after = utc(2026, 3, 4, 10, 7)  # a Wednesday
    assert parse_spec({"every": "minute", "n": 10, "at": {}}).next_after(after) == utc(2026, 3, 4, 10, 10)
    assert parse_spec({"every": "hour", "at": {"minute": 15}}).next_after(after) == utc(2026, 3, 4, 10, 15)
    assert parse_spec({"every": "hour", "n": 2}).next_after(after) == utc(2026, 3, 4, 12)
    day = parse_spec({"every": "day", "n": 1, "at": {"hour": 3, "minute": 0}})
    assert day.next_after(after) == utc(2026, 3, 5, 3)
    sunday = parse_spec({"every": "week", "at": {"day": 1, "hour": 3, "minute": 0}})
    assert sunday.next_after(after) == utc(2026, 3, 8, 3)  # 1 = Sunday
    saturday = parse_spec({"every": "week", "at": {"day": 7, "hour": 3, "minute": 0}})
    assert saturday.next_after(after) == utc(2026, 3, 7, 3)  # 7 = Saturday
    month = parse_spec({"every": "month", "n": 1, "at": {"hour": 10, "minute": 0, "day": 21}})
    assert month.next_after(after) == utc(2026, 3, 21, 10)
    assert month.text == '{"every":"month","n":1,"at":{"hour":10,"minute":0,"day":21}}'
    assert month.tz == "UTC"
    # another zone reads the times on that zone's clock, like the phrase would
    paris = parse_spec({"every": "day", "at": {"hour": 9, "minute": 0}}, PARIS)
    assert paris.next_after(after) == parse_spec("every day at 09:00", PARIS).next_after(after)


def test_time_spec_without_a_minute_takes_a_stable_minute_from_the_seed() -> None:
    spec = {"every": "day", "at": {"hour": 3}}
    after = utc(2026, 3, 4, 12)
    first = parse_spec(spec, seed="QMUPCYEH").next_after(after)
    assert parse_spec(spec, seed="QMUPCYEH").next_after(after) == first  # after a restart, on another server
    assert first.hour == 3 and first.minute < 30
    minutes = {parse_spec(spec, seed=f"job{i}").next_after(after).replace(hour=0) for i in range(50)}
    assert len(minutes) > 10  # spread, as Anvil's random minute is
    weekly = parse_spec({"every": "week", "at": {"day": 2, "hour": 8}}, seed="x").next_after(after)
    assert weekly.weekday() == 0 and weekly.hour == 8 and weekly.minute < 30


# ---- properties -----------------------------------------------------------------------------

FORMS: list[str | dict[str, object]] = [
    "every 30 seconds",
    "every 7 minutes",
    "every hour at :15",
    "every 2 hours",
    "every day at 02:30",
    "every day at 01:30",
    "every day at 01:45",
    "every 3 days at 06:00",
    "every monday at 08:30",
    "every weekday at 07:00",
    "every 2 weeks on friday at 17:00",
    "every month on day 31 at 02:15",
    "every month on the last day at 23:00",
    "*/30 * * * *",
    "15 2 * * *",
    "0 9 * * mon-fri",
    "@daily",
    {"every": "week", "n": 2, "at": {"day": 1, "hour": 2, "minute": 30}},
]
INSTANTS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))
TRANSITION_INSTANTS = st.sampled_from(
    [
        utc(2026, 3, 29, 1),
        utc(2026, 10, 25, 1),
        utc(2026, 3, 8, 7),
        utc(2026, 11, 1, 6),
        utc(2026, 4, 4, 15),
        utc(2026, 10, 3, 15, 30),
    ]
).flatmap(lambda t: st.integers(-4 * 3600, 4 * 3600).map(lambda s: t + timedelta(seconds=s)))


@settings(max_examples=300, deadline=None)
@given(
    form=st.sampled_from(FORMS),
    zone=st.sampled_from(ZONES),
    start=st.one_of(INSTANTS, TRANSITION_INSTANTS),
    later=st.integers(0, 3 * 86400),
)
def test_next_after_is_strictly_later_monotonic_and_never_repeats(
    form: str | dict[str, object], zone: str, start: datetime, later: int
) -> None:
    spec = parse_spec(form, zone, seed="s")
    first = spec.next_after(start)
    assert first > start and first.tzinfo == UTC
    assert spec.next_after(start.astimezone(ZoneInfo(zone))) == first  # any zone in, same instant out
    assert spec.next_after(first - timedelta(microseconds=1)) == first  # nothing between start and first
    assert spec.next_after(start + timedelta(seconds=later)) >= first  # monotonic
    seen = [first]
    for _ in range(6):
        seen.append(spec.next_after(seen[-1]))
    assert all(a < b for a, b in itertools.pairwise(seen))


def test_next_after_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_spec("every day").next_after(datetime(2026, 1, 1))


def test_parse_spec_returns_a_spec() -> None:
    for form in FORMS:
        spec = parse_spec(form, PARIS)
        assert isinstance(spec, Spec) and spec.tz == PARIS
    assert parse_spec("Every Day at 09:00").text == "Every Day at 09:00"  # as written


def test_cron_hashed_fields_come_from_the_seed() -> None:
    after = utc(2026, 1, 1)
    one = parse_spec("H 9 * * *", seed="a").next_after(after)
    assert parse_spec("H 9 * * *", seed="a").next_after(after) == one
    assert len({parse_spec("H 9 * * *", seed=str(i)).next_after(after) for i in range(20)}) > 3


# ---- describe() -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "zone", "words"),
    [
        ("every day at 09:00", PARIS, "every day at 09:00 Europe/Paris"),
        ("every 30 seconds", "UTC", "every 30 seconds"),
        ("every second", "UTC", "every second"),
        ("every 10 minutes", NEW_YORK, "every 10 minutes"),
        ("every hour", "UTC", "every hour"),
        ("every 2 hours", "UTC", "every 2 hours"),
        ("every hour at :15", PARIS, "every hour at :15 Europe/Paris"),
        ("every day", "UTC", "every day at 00:00 UTC"),
        ("every 3 days at 06:00", "UTC", "every 3 days at 06:00 UTC"),
        ("every monday at 08:30", NEW_YORK, "every Monday at 08:30 America/New_York"),
        ("every weekday at 07:00", "UTC", "every weekday (Monday to Friday) at 07:00 UTC"),
        ("every 2 weeks on friday at 17:00", "UTC", "every 2 weeks on Friday at 17:00 UTC"),
        ("every month on day 1 at 06:00", "UTC", "every month on day 1 at 06:00 UTC"),
        ("every month on the last day at 23:00", "UTC", "every month on the last day at 23:00 UTC"),
        ("at 09:00:30", "UTC", "every day at 09:00:30 UTC"),
        ("0 9 * * mon-fri", "UTC", "at 09:00 on Monday through Friday (UTC)"),
        ("*/5 * * * *", "UTC", "every 5 minutes (UTC)"),
        ("@daily", LORD_HOWE, "at 00:00 every day (Australia/Lord_Howe)"),
        ("0 */2 * * *", "UTC", "at minute 0 past every 2nd hour (UTC)"),
        ("0 0 1,15 * *", "UTC", "at 00:00 on day 1 and 15 of the month (UTC)"),
        ("30 6 * 1-3 sun", "UTC", "at 06:30 on Sunday in January through March (UTC)"),
        ({"every": "day", "at": {"hour": 3, "minute": 0}}, "UTC", "every day at 03:00 UTC"),
        ({"every": "week", "at": {"day": 1, "hour": 3, "minute": 0}}, "UTC", "every Sunday at 03:00 UTC"),
    ],
)
def test_describe(form: str | dict[str, object], zone: str, words: str) -> None:
    assert parse_spec(form, zone).describe() == words


# ---- bad specs: what is wrong, and an example ------------------------------------------------


@pytest.mark.parametrize(
    ("form", "zone", "named"),
    [
        ("every dya at 09:00", "UTC", "unknown unit 'dya' (did you mean 'day'?)"),
        ("every day at 25:00", "UTC", "bad time '25:00': the hour is 0-23"),
        ("every day at 09:75", "UTC", "minutes and seconds are 0-59"),
        ("every day at nine", "UTC", "bad time 'nine'"),
        ("every day", "Mars/Olympus", "'Mars/Olympus' is not a time zone"),
        ("every day", "europe/paris", "did you mean 'Europe/Paris'?"),
        ("every day", "localtime", "'localtime' is not a time zone"),
        ("0 0 9 * * mon-fri", "UTC", "cron with 6 fields (seconds or years) is not supported"),
        ("0 0 9 * * mon-fri 2026", "UTC", "cron with 7 fields"),
        ("0 9 * *", "UTC", "a cron expression has 5 fields"),
        ("61 * * * *", "UTC", "not a valid cron expression"),
        ("0 0 30 2 *", "UTC", "never fire"),
        ("R 9 * * *", "UTC", "random 'R'"),
        ("@reboot", "UTC", "unknown cron shorthand '@reboot'"),
        ("every 0 minutes", "UTC", "the count of minutes is 1 to"),
        ("every -5 minutes", "UTC", "the count is a whole number of at least 1"),
        ("every 1.5 hours", "UTC", "the count is a whole number"),
        ("every", "UTC", "a unit is missing"),
        ("at", "UTC", "'at' needs a time"),
        ("every minute at :30", "UTC", "'at' does not go with a schedule in minutes"),
        ("every hour at 09:00", "UTC", "an hourly schedule takes ':MM'"),
        ("every day on monday", "UTC", "'on' goes with weeks or months"),
        ("every month on day 32", "UTC", "bad day of the month 'day 32'"),
        ("every 2 mondays", "UTC", "a count does not go with 'mondays'"),
        ("hello there", "UTC", "a schedule is a phrase starting with 'every' or 'at'"),
        ("", "UTC", "a schedule is a phrase"),
        (42, "UTC", "not int 42"),
        (None, "UTC", "not NoneType"),
        (["every day"], "UTC", "not list"),
        ("every day", 3, "not int 3"),
        (
            {"every": "day", "at": {"hours": 3}},
            "UTC",
            "'at' for every 'day' takes only 'hour' and 'minute', not 'hours'",
        ),
        ({"every": "day", "when": 3}, "UTC", "unknown key 'when'"),
        ({"every": "dya"}, "UTC", "'every' is 'dya': it is one of 'minute', 'hour', 'day', 'week', 'month'"),
        ({"n": 2}, "UTC", "'every' is missing"),
        ({"every": "day", "n": 0}, "UTC", "'n' is a whole number 1-"),
        ({"every": "day", "n": "2"}, "UTC", "'n' is a whole number 1-36525, not '2'"),
        ({"every": "day", "n": True}, "UTC", "'n' is a whole number"),
        ({"every": "hour", "at": {"minute": 60}}, "UTC", "at 'minute' is a whole number 0-59, not 60"),
        ({"every": "day", "at": {"hour": 24}}, "UTC", "at 'hour' is a whole number 0-23"),
        ({"every": "week", "at": {"day": 0}}, "UTC", "at 'day' is a whole number 1-7 (1 = Sunday ... 7 = Saturday)"),
        ({"every": "month", "at": {"day": 32}}, "UTC", "at 'day' is a whole number 1-31"),
        ({"every": "minute", "at": {"minute": 5}}, "UTC", "'at' for every 'minute' takes no keys"),
        ({"every": "day", "at": [3]}, "UTC", "'at' is a dict of hour, minute"),
    ],
)
def test_bad_specs_say_what_is_wrong_with_an_example(form: object, zone: object, named: str) -> None:
    with pytest.raises(ScheduleSpecError) as raised:
        parse_spec(form, zone)  # type: ignore[arg-type]
    message = str(raised.value)
    assert named in message
    assert "Example" in message or "such as 'Europe/Paris'" in message
    assert isinstance(raised.value, ValueError)


def test_a_huge_spec_is_cut_short_in_the_message() -> None:
    with pytest.raises(ScheduleSpecError) as raised:
        parse_spec("every " + "x" * 100_000)
    assert len(str(raised.value)) < 1000


# ---- start-up cost: 10,000 schedules parsed and their next runs computed --------------------


def test_ten_thousand_specs_parse_and_compute_next_runs_quickly() -> None:
    forms = [*FORMS, "every day at 09:00", "0 9 * * mon-fri", {"every": "day", "at": {"hour": 3}}]
    zones = [*ZONES, "Asia/Tokyo", "America/Los_Angeles"]
    now = utc(2026, 3, 29, 0, 30)  # near Paris's spring forward, where the search works hardest
    began = time.perf_counter()
    specs = [parse_spec(forms[i % len(forms)], zones[i % len(zones)], seed=f"s{i}") for i in range(10_000)]
    parsed = time.perf_counter()
    runs = [spec.next_after(now) for spec in specs]
    done = time.perf_counter()
    assert len(runs) == 10_000 and all(run > now for run in runs)
    print(f"\n10,000 specs: parse {parsed - began:.2f} s, next runs {done - parsed:.2f} s")
    assert done - began < 30  # a loose bound for a loaded machine; the measured time is printed


WALL_CLOCK_FORMS = [
    "every day at 02:30",
    "every day at 01:45",
    "every day at 02:15",
    "every weekday at 02:00",
    "every month on the last day at 01:30",
    "*/30 * * * *",
    "*/20 1-3 * * *",
    "15 2 * * *",
    "0 * * * *",
]


@settings(max_examples=300, deadline=None)
@given(
    form=st.sampled_from(WALL_CLOCK_FORMS),
    zone=st.sampled_from(ZONES),
    start=TRANSITION_INSTANTS,
)
def test_next_after_is_the_earliest_resolved_local_match(form: str, zone: str, start: datetime) -> None:
    """Against brute force: every local match over two days, each resolved by the two rules
    (a skipped time moved forward by the gap, a repeated one at its first occurrence)."""
    spec = parse_spec(form, zone)
    tzinfo = ZoneInfo(zone)
    local_start = start.astimezone(tzinfo).replace(tzinfo=None) - timedelta(hours=6)
    naive_matches = []
    candidate = local_start
    while candidate < local_start + timedelta(days=2):
        candidate = spec._next_local(candidate)  # type: ignore[attr-defined]
        naive_matches.append(candidate)
    instants = sorted({m.replace(tzinfo=tzinfo, fold=0).astimezone(UTC) for m in naive_matches})
    expected = next(t for t in instants if t > start)
    assert spec.next_after(start) == expected


def test_one_cron_spec_is_safe_to_share_between_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    spec = parse_spec("*/5 9-17 * * mon-fri", PARIS)
    starts = [utc(2026, 3, 20) + timedelta(minutes=7 * i) for i in range(2000)]
    expected = [spec.next_after(t) for t in starts]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(spec.next_after, starts)) == expected


@pytest.mark.parametrize(
    ("form", "same_as"),
    [
        ("hourly", "every hour"),
        ("daily", "every day"),
        ("weekly", "every week on monday at 00:00"),
        ("monthly", "every month on day 1 at 00:00"),
        ("everyday at 9am", "every day at 09:00"),
        ("every day at 5:30 PM", "every day at 17:30"),
        ("every day at noon", "every day at 12:00"),
        ("every day at midnight", "every day"),
        ("every 12am", None),
        ("every sat and sun at noon", "every weekend at 12:00"),
        ("every mon, wed and fri at 08:00", "every monday, wednesday, friday at 08:00"),
        ("every mondays at 08:00", "every monday at 08:00"),
        ("every 1 weeks on thu at 08:00", "every thursday at 08:00"),
        ("every month on the 15th at 08:00", "every month on day 15 at 08:00"),
        ("every month on the last day of the month", "every month on the last day at 00:00"),
        ("every 60 minutes", "every hour"),
        ("every 1 secs", "every second"),
    ],
)
def test_phrase_variants_mean_the_same(form: str, same_as: str | None) -> None:
    if same_as is None:  # not a schedule: a time is not a unit
        with pytest.raises(ScheduleSpecError, match="unknown unit 'am'"):
            parse_spec(form)
        return
    for start in (utc(2026, 3, 7, 23, 59), utc(2026, 10, 31, 12, 1), utc(2026, 2, 27, 0, 0, 0, 1)):
        assert parse_spec(form, NEW_YORK).next_after(start) == parse_spec(same_as, NEW_YORK).next_after(start)


def test_an_unfinished_day_list_is_refused() -> None:
    with pytest.raises(ScheduleSpecError, match="unknown unit ''"):
        parse_spec("every monday and")
