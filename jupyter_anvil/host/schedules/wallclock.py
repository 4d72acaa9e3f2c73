"""Wall-clock schedules: fire times read on a zone's clock, made into instants across
daylight-saving changes.

A wall-clock spec only says which local (naive) times match: ``_next_local(n)`` is the first
matching local time strictly after the local time ``n``. This module turns those into
instants with two rules, the ones people expect of "every day at 02:30":

* a local time that does not exist (the clock jumps from 02:00 to 03:00) fires once, shifted
  forward by the gap: 02:30 becomes 03:30 local. Never skipped;
* a local time that happens twice (the clock goes back from 03:00 to 02:00) fires once, at
  its first occurrence. Never twice.

Both are what PEP 495 gives for ``fold=0``: the offset in force before the transition. So a
local time resolves with ``naive.replace(tzinfo=zone)``, and the care is in the search:
around a transition the resolved instants are not in the order of the local times (02:30
resolves later than 03:00 on a spring-forward day) and two local times can resolve to one
instant (02:00 and 03:00 both become 03:00); ``next_after`` takes the earliest instant
strictly after ``after``, so each instant fires once.

(croniter's own time-zone mode fires a repeated 02:30 twice and moves a skipped 02:30 to
03:00, which is why cron goes through here too, with croniter only matching local times.)
"""

from __future__ import annotations

import itertools
import zoneinfo
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

UTC = timezone.utc

# Wider than any daylight-saving or zone change a real zone still makes (the largest is
# Antarctica/Troll's two hours; Lord Howe's is 30 minutes). Within this window of a
# transition the search looks at every local candidate; elsewhere the first one is the answer.
WINDOW = timedelta(hours=3)

# A guard against a spec whose matches are far apart near a transition (never hit by the
# forms we build: they all match at least once a year).
MAX_CANDIDATES = 10_000


def resolve(local: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The instant (aware UTC) of the naive local time ``local`` in ``zone``: a skipped time
    shifted forward by the gap, a repeated time at its first occurrence."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def local_time(instant: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The naive wall-clock time of the aware ``instant`` in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


def as_utc(after: datetime) -> datetime:
    """``after`` in UTC; a naive datetime is refused (it names no instant)."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"next_after needs an aware datetime (with a zone), not the naive {after.isoformat()}")
    return after.astimezone(UTC)


def _steady(instant: datetime, zone: zoneinfo.ZoneInfo) -> bool:
    """No zone change within WINDOW of ``instant``: the local times there map one to one."""
    before = (instant - WINDOW).astimezone(zone).utcoffset()
    return before == (instant + WINDOW).astimezone(zone).utcoffset() == instant.astimezone(zone).utcoffset()


@dataclass(frozen=True)
class WallClockSpec(ABC):
    """Base of the specs whose times are read on the zone's clock (days, weeks, months, cron)."""

    text: str
    tz: str
    zone: zoneinfo.ZoneInfo = field(repr=False, compare=False)

    @abstractmethod
    def _next_local(self, local: datetime) -> datetime:
        """The first matching naive local time strictly after the naive ``local``."""

    @abstractmethod
    def describe(self) -> str: ...

    def _local_times(self, local: datetime) -> Iterator[datetime]:
        """The matching naive local times after ``local``, in order (cron overrides it to
        keep one croniter for the whole walk)."""
        while True:
            local = self._next_local(local)
            yield local

    def next_after(self, after: datetime) -> datetime:
        after_utc = as_utc(after)
        first = self._next_local(local_time(after_utc, self.zone))
        instant = resolve(first, self.zone)
        if instant > after_utc and _steady(after_utc, self.zone) and _steady(instant, self.zone):
            return instant  # the common case: no zone change near either end
        return self._search(after_utc)

    def _search(self, after_utc: datetime) -> datetime:
        """Near a transition: every local candidate from WINDOW before ``after``'s local time,
        the earliest resolved instant strictly after ``after``. Once a candidate is WINDOW past
        the best one's local time, no later candidate can resolve earlier."""
        best: datetime | None = None
        best_local: datetime | None = None
        candidates = self._local_times(local_time(after_utc, self.zone) - WINDOW)
        for candidate in itertools.islice(candidates, MAX_CANDIDATES):
            if best_local is not None and candidate >= best_local + WINDOW:
                break
            instant = resolve(candidate, self.zone)
            if instant > after_utc and (best is None or instant < best):
                best, best_local = instant, local_time(instant, self.zone)
        if best is None:  # pragma: no cover - MAX_CANDIDATES matches all before `after`
            raise ValueError(f"no fire time found after {after_utc.isoformat()} for {self.text!r}")
        return best


def clock(hour: int, minute: int, second: int = 0) -> str:
    """09:00, or 09:00:30 when the second matters."""
    return f"{hour:02d}:{minute:02d}" + (f":{second:02d}" if second else "")
