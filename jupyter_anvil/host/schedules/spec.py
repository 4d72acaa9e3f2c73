"""Schedule specs: parse one (phrase, cron or Anvil ``time_spec``) in a time zone, then ask it
for the next fire time after any instant.

``parse_spec`` is the only entry point. The three forms:

* a phrase, read the way the ``schedule`` package's fluent calls read
  (``every(10).minutes`` -> ``"every 10 minutes"``, ``every().monday.at("08:30")`` ->
  ``"every monday at 08:30"``); see ``phrases`` for the whole vocabulary;
* a 5-field cron expression (``"*/5 * * * *"``, ``"0 9 * * mon-fri"``, ``"@daily"``);
* Anvil's ``time_spec`` dict (``{"every": "day", "n": 1, "at": {"hour": 3, "minute": 0}}``).

Every spec is a pure function of its text, zone and seed: there is no stored anchor and no
"now" inside, so every server computes the same fire times, before and after a restart, and a
test can drive the clock. How the forms count:

* every N seconds / minutes / hours: elapsed time, aligned to the Unix epoch (every 10 minutes
  fires at :00, :10, ...; every 30 seconds at :00 and :30 of each minute; every 7 minutes at
  multiples of 420 s since 1970-01-01T00:00Z). Daylight-saving changes do not touch them.
  ``"every hour at :15"`` reads the minute on the zone's clock (the same as UTC's but in
  zones with a fractional-hour offset: in Asia/Kolkata, +05:30, it fires at UTC :45), while
  ``"every hour"`` with no minute stays on UTC's hours (local :30 in Asia/Kolkata);
* every N days / weeks / months, weekdays, and cron: wall-clock times in the schedule's zone,
  counted from a fixed anchor: days from 1970-01-01, weeks from the ISO week starting Monday
  1970-01-05, months from January 1970. So "every 2 weeks" is the same fortnight everywhere.
  A wall-clock time that does not exist (spring forward) fires once, shifted forward by the
  gap (02:30 on the day Paris skips 02:00-03:00 fires at 03:30); a time that happens twice
  (fall back) fires once, at its first occurrence.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

EXAMPLES = "'every day at 09:00', '0 9 * * mon-fri', {'every': 'day', 'at': {'hour': 9, 'minute': 0}}"


class ScheduleSpecError(ValueError):
    """What is wrong with a spec or a zone, always with a valid example."""


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut short: a spec comes from an author or an API body of any size."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec_error(spec: object, problem: str, example: str = "") -> ScheduleSpecError:
    """``'<spec>' is not a schedule: <problem>. Examples: ...`` (``example`` first if given)."""
    examples = ", ".join(dict.fromkeys([*example.split(", "), *EXAMPLES.split(", ")] if example else [EXAMPLES]))
    return ScheduleSpecError(f"{shown(spec)} is not a schedule: {problem}. Examples: {examples}")


@runtime_checkable
class Spec(Protocol):
    """A parsed schedule. Implementations are frozen dataclasses (see ``kinds`` and ``cron``)."""

    @property
    def text(self) -> str:
        """As written: the phrase or cron string; a ``time_spec`` dict as compact JSON."""

    @property
    def tz(self) -> str:
        """The IANA zone name the wall-clock times are read in ("UTC" by default)."""

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware, any zone), as an aware UTC datetime."""

    def describe(self) -> str:
        """In words, with the zone: "every day at 09:00 Europe/Paris"."""


_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
MAX_SPEC_LENGTH = 1000


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    # the IANA names only: ZoneInfo alone would also open "localtime" or "posixrules", which
    # are files of this machine's own set-up, not zones, and differ between servers
    return (frozenset(zoneinfo.available_timezones()) - _NOT_ZONES) | {"UTC"}


def load_zone(tz: object) -> zoneinfo.ZoneInfo:
    """The zone named ``tz``, or ScheduleSpecError naming it with an example (and the right
    spelling when only the case was wrong)."""
    if not isinstance(tz, str):
        raise ScheduleSpecError(
            f"a time zone is an IANA zone name such as 'Europe/Paris' or 'UTC', not {type(tz).__name__} {shown(tz)}"
        )
    if tz not in _zone_names():
        hint = next((f" (did you mean {name!r}?)" for name in _zone_names() if name.lower() == tz.lower()), "")
        raise ScheduleSpecError(
            f"{shown(tz)} is not a time zone{hint}: use an IANA zone name such as 'Europe/Paris', "
            "'America/New_York' or 'UTC'"
        )
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as error:  # listed, but unreadable
        raise ScheduleSpecError(f"the time zone {tz!r} cannot be loaded on this server: {error}") from None


def parse_spec(spec: str | Mapping[str, Any], tz: str = "UTC", *, seed: str = "") -> Spec:
    """Parse ``spec`` in zone ``tz``. ``seed`` (the schedule's id) stands in for Anvil's random
    minute: a ``time_spec`` day/week/month without a minute fires at a minute (0-29) and second
    derived from a hash of the seed, the same after every restart and on every server.

    Raises ScheduleSpecError for a spec that does not parse, a zone that does not exist, a
    wrong type, or a spec that can never fire."""
    # imported here: these modules import ScheduleSpecError from this one
    from . import anvil_spec, cron, phrases

    zone = load_zone(tz)
    parsed: Spec
    if isinstance(spec, Mapping):
        parsed = anvil_spec.parse_time_spec(spec, tz, zone, seed=seed)
    elif isinstance(spec, str):
        if len(spec) > MAX_SPEC_LENGTH:
            raise spec_error(spec, f"it is longer than {MAX_SPEC_LENGTH} characters")
        if phrases.looks_like_phrase(spec):
            parsed = phrases.parse_phrase(spec, tz, zone)
        elif cron.looks_like_cron(spec):
            parsed = cron.parse_cron(spec, tz, zone, seed=seed)
        else:
            raise spec_error(
                spec,
                "a schedule is a phrase starting with 'every' or 'at', a 5-field cron expression, "
                "or an Anvil time_spec dict",
            )
    else:
        raise ScheduleSpecError(
            f"a schedule is a phrase, a cron expression (str) or an Anvil time_spec dict, "
            f"not {type(spec).__name__} {shown(spec)}. Examples: {EXAMPLES}"
        )
    return parsed
