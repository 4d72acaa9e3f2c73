"""The kinds of schedule the phrases and Anvil's ``time_spec`` make (cron has its own module).

* ``IntervalSpec``: every N seconds, minutes or hours: elapsed time aligned to the Unix epoch,
  so every server agrees without a stored anchor and daylight saving does not touch it.
* ``DailySpec``, ``WeeklySpec``, ``MonthlySpec``: a time of day on the zone's clock, every N
  days / weeks / months counted from a fixed anchor (``wallclock`` does the zone work).

Anchors, fixed so that "every 2 weeks" is the same fortnight on every server and after every
restart: days count from 1970-01-01 (every 3 days fires on the days whose number since then
is a multiple of 3), weeks from the ISO week starting Monday 1970-01-05, months from January
1970 (every 3 months: January, April, July, October).
"""

from __future__ import annotations

import calendar
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from .wallclock import UTC, WallClockSpec, as_utc, clock

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_ANCHOR = date(1970, 1, 1)
WEEK_ANCHOR = date(1970, 1, 5)  # a Monday: weeks run Monday to Sunday, as ISO weeks do
MONTH_ANCHOR = 1970 * 12
LAST_DAY = -1  # MonthlySpec.day for "the last day of the month"

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WORKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})

_MICROSECOND = timedelta(microseconds=1)
_HOUR = 3600


def _every(n: int, singular: str, plural: str) -> str:
    return f"every {singular}" if n == 1 else f"every {n} {plural}"


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@dataclass(frozen=True)
class IntervalSpec:
    """Every ``seconds`` seconds of elapsed time, aligned to the Unix epoch; for hours, with
    ``at_minute`` the minute on the zone's clock ("every hour at :15")."""

    text: str
    tz: str
    zone: zoneinfo.ZoneInfo = field(repr=False, compare=False)
    seconds: int
    at_minute: int | None = None

    def next_after(self, after: datetime) -> datetime:
        after_utc = as_utc(after)
        if self.at_minute is None:
            return self._aligned(after_utc, 0)
        # The minute is read on the zone's clock: a zone whose offset is not whole hours
        # (Asia/Kolkata +05:30) moves it against UTC's. Whole-hour daylight-saving changes
        # leave the phase alone, so hours stay elapsed time; a fractional change (Lord Howe's
        # 30 minutes) moves it, and the phase in force at the fire time is the one that counts.
        # Each candidate uses the phase of one probe; when the change falls between them and
        # neither lands on the minute (Lord Howe's local 01:15-02:15 holds no :15 in the new
        # offset), look again past them.
        cursor = after_utc
        for _ in range(4):
            candidates = [self._aligned(cursor, self._phase(probe)) for probe in (cursor, cursor + self._period)]
            on_minute = [c for c in candidates if c.astimezone(self.zone).minute == self.at_minute]
            if on_minute:
                return min(on_minute)
            cursor = min(candidates)
        return self._aligned(after_utc, self._phase(after_utc))  # pragma: no cover - no zone changes so fast

    @property
    def _period(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def _phase(self, instant: datetime) -> int:
        """Seconds past the UTC hour at which the zone's clock shows ``at_minute``."""
        offset = instant.astimezone(self.zone).utcoffset()
        return (self.at_minute or 0) * 60 - int(offset.total_seconds() if offset else 0) % _HOUR

    def _aligned(self, after_utc: datetime, phase_seconds: int) -> datetime:
        """The first instant strictly after ``after_utc`` that is ``phase_seconds`` past a
        multiple of the period since the epoch (exact: whole microseconds, no float)."""
        period = self.seconds * 1_000_000
        shift = phase_seconds * 1_000_000
        elapsed = (after_utc - EPOCH) // _MICROSECOND - shift
        return EPOCH + timedelta(microseconds=(elapsed // period + 1) * period + shift)

    def describe(self) -> str:
        if self.seconds % _HOUR == 0:
            words = _every(self.seconds // _HOUR, "hour", "hours")
            return words if self.at_minute is None else f"{words} at :{self.at_minute:02d} {self.tz}"
        if self.seconds % 60 == 0:
            return _every(self.seconds // 60, "minute", "minutes")
        return _every(self.seconds, "second", "seconds")


@dataclass(frozen=True)
class _AtTime(WallClockSpec):
    hour: int = 0
    minute: int = 0
    second: int = 0

    @property
    def _time(self) -> time:
        return time(self.hour, self.minute, self.second)

    @property
    def _clock(self) -> str:
        return clock(self.hour, self.minute, self.second)

    def _first_day(self, local: datetime) -> date:
        """The first day whose fire time can be strictly after ``local``."""
        return local.date() if local.time() < self._time else local.date() + timedelta(days=1)


@dataclass(frozen=True)
class DailySpec(_AtTime):
    """Every ``days`` days at a time of day; days counted from 1970-01-01."""

    days: int = 1

    def _next_local(self, local: datetime) -> datetime:
        index = (self._first_day(local) - DAY_ANCHOR).days
        index = -(-index // self.days) * self.days  # up to a multiple of `days`
        return datetime.combine(DAY_ANCHOR + timedelta(days=index), self._time)

    def describe(self) -> str:
        return f"{_every(self.days, 'day', 'days')} at {self._clock} {self.tz}"


@dataclass(frozen=True)
class WeeklySpec(_AtTime):
    """On some days of the week (0 = Monday) every ``weeks`` weeks at a time of day; weeks
    counted from the one starting Monday 1970-01-05."""

    weekdays: frozenset[int] = frozenset({0})
    weeks: int = 1

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= frozenset(range(7)) or self.weeks < 1:
            raise ValueError(f"a weekly spec needs days 0-6 and weeks >= 1, not {sorted(self.weekdays)}, {self.weeks}")

    def _next_local(self, local: datetime) -> datetime:
        day = self._first_day(local)
        while True:  # at most: a jump to a counted week, then seven days
            week = (day - WEEK_ANCHOR).days // 7
            if week % self.weeks:
                day = WEEK_ANCHOR + timedelta(weeks=week + self.weeks - week % self.weeks)
            elif day.weekday() in self.weekdays:
                return datetime.combine(day, self._time)
            else:
                day += timedelta(days=1)

    def describe(self) -> str:
        if self.weekdays == WORKDAYS:
            days = "weekday (Monday to Friday)"
        elif self.weekdays == WEEKEND:
            days = "weekend day (Saturday and Sunday)"
        else:
            days = _and([WEEKDAY_NAMES[day] for day in sorted(self.weekdays)])
        if self.weeks == 1:
            return f"every {days} at {self._clock} {self.tz}"
        return f"every {self.weeks} weeks on {days} at {self._clock} {self.tz}"


@dataclass(frozen=True)
class MonthlySpec(_AtTime):
    """On a day of the month (or LAST_DAY) every ``months`` months at a time of day; months
    counted from January 1970. Day 29-31 in a shorter month fires on its last day."""

    day: int = 1
    months: int = 1

    def _next_local(self, local: datetime) -> datetime:
        index = local.year * 12 + local.month - 1 - MONTH_ANCHOR
        index += -index % self.months  # up to a counted month
        while True:  # at most twice: this month's time may be past
            candidate = datetime.combine(self._date(index), self._time)
            if candidate > local:
                return candidate
            index += self.months

    def _date(self, index: int) -> date:
        year, month = divmod(MONTH_ANCHOR + index, 12)
        last = calendar.monthrange(year, month + 1)[1]
        return date(year, month + 1, last if self.day == LAST_DAY else min(self.day, last))

    def describe(self) -> str:
        if self.day == LAST_DAY:
            day = "the last day"
        else:
            day = f"day {self.day}" + (" (the last day in shorter months)" if self.day > 28 else "")
        return f"{_every(self.months, 'month', 'months')} on {day} at {self._clock} {self.tz}"
