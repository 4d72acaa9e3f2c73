"""Anvil's ``time_spec`` dict, as ``anvil.yaml``'s ``scheduled_tasks`` write it:
``{"every": "minute"|"hour"|"day"|"week"|"month", "n": 1, "at": {"minute", "hour", "day"}}``.

* ``n`` multiplies the unit (default 1); ``at.minute`` is 0-59, ``at.hour`` 0-23, ``at.day`` the
  day of the week for ``week`` (1 = Sunday ... 7 = Saturday, Anvil's numbering) or of the month
  for ``month`` (1-31; a shorter month fires on its last day). Missing: hour 0, week day
  Monday, month day 1.
* Anvil is UTC only, and the ``scheduled_tasks`` metadata path always passes "UTC". A dict
  given with another zone reads its times on that zone's clock, like the phrase it matches
  (``{"every": "day", "at": {"hour": 9}}`` in Europe/Paris is "every day at 09:00").
* Where Anvil picks a random minute (0-29) and second (day/week/month without a minute), the
  minute and second come from a hash of ``seed`` (the schedule's id): spread like Anvil's, but
  the same after every restart and on every server.
* Every N minutes / hours is elapsed time aligned to the epoch (see ``kinds``), so no stored
  anchor is needed; days, weeks and months count from the anchors in ``kinds``.
"""

from __future__ import annotations

import hashlib
import json
import zoneinfo
from collections.abc import Mapping
from typing import Any

from .kinds import DailySpec, IntervalSpec, MonthlySpec, WeeklySpec
from .spec import ScheduleSpecError, Spec, shown

_EXAMPLE = "{'every': 'day', 'n': 1, 'at': {'hour': 9, 'minute': 0}}"
UNITS = ("minute", "hour", "day", "week", "month")
_AT_KEYS = {"minute": (), "hour": ("minute",), "day": ("hour", "minute"), "week": ("day", "hour", "minute")}
_AT_KEYS["month"] = _AT_KEYS["week"]
_SECONDS = {"minute": 60, "hour": 3600}
_MAX_N = {"minute": 52_596_000, "hour": 876_600, "day": 36_525, "week": 5_218, "month": 1_200}


def _error(spec: object, problem: str) -> ScheduleSpecError:
    return ScheduleSpecError(f"time_spec {shown(spec, 120)} is not a schedule: {problem}. Example: {_EXAMPLE}")


def _int(spec: object, where: str, value: object, low: int, high: int, meaning: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _error(spec, f"{where} is a whole number {low}-{high}{meaning}, not {shown(value)}")
    return value


def seeded_minute_second(seed: str) -> tuple[int, int]:
    """Anvil's random minute (0-29) and second (0-59), made stable: from a hash of ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    return digest[0] % 30, digest[1] % 60


def parse_time_spec(spec: Mapping[str, Any], tz: str, zone: zoneinfo.ZoneInfo, *, seed: str = "") -> Spec:
    unknown = [key for key in spec if key not in ("every", "n", "at")]
    if unknown:
        raise _error(spec, f"unknown key {shown(unknown[0])}: a time_spec has 'every', 'n' and 'at'")
    every = spec.get("every")
    if every not in UNITS:
        missing = "'every' is missing" if every is None else f"'every' is {shown(every)}"
        raise _error(spec, f"{missing}: it is one of {', '.join(map(repr, UNITS))}")
    assert isinstance(every, str)
    n = _int(spec, "'n'", spec.get("n", 1), 1, _MAX_N[every])
    at = spec.get("at")
    if at is None:
        at = {}
    if not isinstance(at, Mapping):
        raise _error(spec, f"'at' is a dict of {', '.join(_AT_KEYS[every]) or 'nothing'}, not {shown(at)}")
    allowed = _AT_KEYS[every]
    for key in at:
        if key not in allowed:
            takes = f"takes only {' and '.join(map(repr, allowed))}" if allowed else "takes no keys"
            raise _error(spec, f"'at' for every {every!r} {takes}, not {shown(key)}")
    minute = None if at.get("minute") is None else _int(spec, "at 'minute'", at["minute"], 0, 59)
    hour = 0 if at.get("hour") is None else _int(spec, "at 'hour'", at["hour"], 0, 23, " (UTC in Anvil)")
    text = json.dumps({**spec, "at": dict(at)} if "at" in spec else dict(spec), separators=(",", ":"))

    if every in _SECONDS:
        return IntervalSpec(text, tz, zone, n * _SECONDS[every], at_minute=minute)
    second = 0
    if minute is None:
        minute, second = seeded_minute_second(seed)
    if every == "day":
        return DailySpec(text, tz, zone, hour, minute, second, days=n)
    if every == "week":
        day = 2 if at.get("day") is None else _int(spec, "at 'day'", at["day"], 1, 7, " (1 = Sunday ... 7 = Saturday)")
        return WeeklySpec(text, tz, zone, hour, minute, second, weekdays=frozenset({(day - 2) % 7}), weeks=n)
    day = 1 if at.get("day") is None else _int(spec, "at 'day'", at["day"], 1, 31, " (day of the month)")
    return MonthlySpec(text, tz, zone, hour, minute, second, day=day, months=n)
