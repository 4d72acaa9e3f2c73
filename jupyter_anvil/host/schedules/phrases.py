"""Schedule phrases: the ``schedule`` package's fluent vocabulary written as text.

``every(10).minutes`` reads "every 10 minutes", ``every().hour.at(":15")`` "every hour at :15",
``every().monday.at("08:30")`` "every monday at 08:30". The whole vocabulary (case and extra
spaces do not matter):

* ``every second`` / ``every N seconds``, ``every minute`` / ``every N minutes``,
  ``every hour`` / ``every N hours`` [``at :MM``]: elapsed time, aligned to the epoch;
* ``every day`` / ``every N days`` [``at HH:MM[:SS]``] (midnight when no time is given);
  ``at HH:MM`` alone means every day;
* ``every monday`` (or several: ``every monday and thursday``), ``every weekday``
  (Monday-Friday), ``every weekend``, ``every week`` / ``every N weeks`` [``on friday``]
  (Monday when no day is given), each [``at HH:MM``];
* ``every month`` / ``every N months`` [``on day 15`` | ``on the 15th`` | ``on the last day``]
  (day 1 when no day is given) [``at HH:MM``];
* shorthands ``hourly``, ``daily``, ``weekly``, ``monthly`` (for ``every hour`` ... ``every month``).

Times are 24-hour ``HH:MM`` or ``HH:MM:SS`` (``9:00`` is fine), or ``9am`` / ``5:30 pm``,
``noon``, ``midnight``.

The ``schedule`` package itself is not used, only its vocabulary: its ``Job`` computes the next
run from ``datetime.now()`` inside (no "next run after instant t" for a driven clock or for
start-up recovery), counts intervals from when the job was created or last ran (so two servers,
or one server before and after a restart, disagree on "every 10 minutes" and "every 2 weeks"),
keeps ``next_run`` as the machine's naive local time, needs ``pytz`` for ``.at(time, tz)``, and
has no months and no cron.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo

from .kinds import LAST_DAY, WEEKEND, WORKDAYS, DailySpec, IntervalSpec, MonthlySpec, WeeklySpec
from .spec import ScheduleSpecError, Spec, shown, spec_error

# unit word -> (unit, seconds per unit for the elapsed ones)
_UNITS = {
    "second": "second",
    "seconds": "second",
    "sec": "second",
    "secs": "second",
    "minute": "minute",
    "minutes": "minute",
    "min": "minute",
    "mins": "minute",
    "hour": "hour",
    "hours": "hour",
    "day": "day",
    "days": "day",
    "week": "week",
    "weeks": "week",
    "month": "month",
    "months": "month",
}
_SECONDS = {"second": 1, "minute": 60, "hour": 3600}
# bounds so a period stays within a century (the calendar ends at year 9999)
_MAX_N = {"second": 3_155_760_000, "minute": 52_596_000, "hour": 876_600, "day": 36_525, "week": 5_218, "month": 1_200}
_WEEKDAYS = {
    "monday": 0,
    "mon": 0,
    "tuesday": 1,
    "tue": 1,
    "tues": 1,
    "wednesday": 2,
    "wed": 2,
    "thursday": 3,
    "thu": 3,
    "thurs": 3,
    "friday": 4,
    "fri": 4,
    "saturday": 5,
    "sat": 5,
    "sunday": 6,
    "sun": 6,
}
_DAY_SETS = {"weekday": WORKDAYS, "weekdays": WORKDAYS, "weekend": WEEKEND, "weekends": WEEKEND}
_SHORTHANDS = {"hourly": "every hour", "daily": "every day", "weekly": "every week", "monthly": "every month"}
_KNOWN_WORDS = sorted({*_UNITS, *_WEEKDAYS, *_DAY_SETS, *_SHORTHANDS})

_HEAD = re.compile(r"(?:(?P<n>\d+)\s*)?(?P<unit>.*?)(?:\s+on\s+(?P<on>.*))?")
_AT = re.compile(r"(?P<head>.*?)(?:\s*\bat\b\s*(?P<at>.*))?")
_CLOCK = re.compile(r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?(?::(?P<s>\d{2}))?\s*(?:(?P<ampm>[ap])\.?m\.?)?")
_HOURLY_AT = re.compile(r":(?P<m>\d{1,2})")
_MONTH_DAY = re.compile(r"(?:the\s+)?(?:day\s+)?(?P<d>\d{1,2})(?:st|n[d]|rd|th)?(?:\s+day)?")  # n[d]: codespell
_LAST_DAY = re.compile(r"(?:the\s+)?last(?:\s+day)?(?:\s+of\s+the\s+month)?")
_DAY_LIST = re.compile(r"\s*(?:,|\band\b)\s*")


def _words(text: str) -> str:
    return " ".join(text.lower().split())


def looks_like_phrase(text: str) -> bool:
    first = _words(text).split(" ", 1)[0]
    return first in ("every", "at", "everyday") or first in _SHORTHANDS


def parse_phrase(text: str, tz: str, zone: zoneinfo.ZoneInfo) -> Spec:
    """A phrase (see the module docstring) as a spec, or ScheduleSpecError naming what is wrong."""
    words = _words(text)
    first, _, rest = words.partition(" ")
    if first in _SHORTHANDS:
        words = f"{_SHORTHANDS[first]} {rest}".strip()
    elif first == "everyday":
        words = f"every day {rest}".strip()
    if words == "at" or words.startswith("at "):
        if words == "at":
            raise spec_error(text, "'at' needs a time", "'at 09:00'")
        return _at_time(text, tz, zone, "day", 1, words[3:], None)
    if not (words == "every" or words.startswith("every ")):
        raise spec_error(text, "a phrase starts with 'every' or 'at'", "'every 10 minutes'")
    match = _AT.fullmatch(words[len("every") :].strip())
    assert match is not None  # every part of it is optional
    at = match["at"]
    if at is not None and not at:
        raise spec_error(text, "'at' needs a time", "'every day at 09:00'")
    head = _HEAD.fullmatch(match["head"])
    assert head is not None
    unit_words, on = head["unit"].strip(), head["on"]
    n = int(head["n"]) if head["n"] else None
    if not unit_words:
        raise spec_error(text, "it says 'every' but not every what (a unit is missing)", "'every 10 minutes'")
    if re.match(r"[-+.]?\d", unit_words) or (n is not None and unit_words[:1] == "."):
        raise spec_error(text, "the count is a whole number of at least 1", "'every 2 hours'")
    unit = _UNITS.get(unit_words)
    if unit is None:
        days = _weekdays(text, unit_words)
        if n is not None:
            raise spec_error(
                text, f"a count does not go with {shown(unit_words)}", "'every 2 weeks on friday at 17:00'"
            )
        if on is not None:
            raise spec_error(text, f"'on' does not go with {shown(unit_words)}", "'every monday at 08:30'")
        return WeeklySpec(text, tz, zone, *_clock(text, at), weekdays=days)
    count = 1 if n is None else n
    if not 1 <= count <= _MAX_N[unit]:
        raise spec_error(text, f"the count of {unit}s is 1 to {_MAX_N[unit]}, not {count}", "'every 2 hours'")
    if on is not None and unit not in ("week", "month"):
        raise spec_error(text, f"'on' goes with weeks or months, not {unit}s", "'every month on day 1 at 06:00'")
    if unit in _SECONDS:
        return _interval(text, tz, zone, unit, count, at)
    return _at_time(text, tz, zone, unit, count, at or "", on)


def _interval(text: str, tz: str, zone: zoneinfo.ZoneInfo, unit: str, count: int, at: str | None) -> Spec:
    seconds = count * _SECONDS[unit]
    if at is None:
        return IntervalSpec(text, tz, zone, seconds)
    if unit != "hour":
        raise spec_error(text, f"'at' does not go with a schedule in {unit}s", "'every hour at :15'")
    match = _HOURLY_AT.fullmatch(at)
    if match is None:
        raise spec_error(text, f"bad minute {shown(at)}: an hourly schedule takes ':MM'", "'every hour at :15'")
    minute = int(match["m"])
    if minute > 59:
        raise spec_error(text, f"bad minute {shown(at)}: the minute is 0-59", "'every hour at :15'")
    return IntervalSpec(text, tz, zone, seconds, at_minute=minute)


def _at_time(text: str, tz: str, zone: zoneinfo.ZoneInfo, unit: str, count: int, at: str, on: str | None) -> Spec:
    hour, minute, second = _clock(text, at or None)
    if unit == "day":
        return DailySpec(text, tz, zone, hour, minute, second, days=count)
    if unit == "week":
        days = _weekdays(text, on) if on is not None else frozenset({0})
        return WeeklySpec(text, tz, zone, hour, minute, second, weekdays=days, weeks=count)
    return MonthlySpec(text, tz, zone, hour, minute, second, day=_month_day(text, on), months=count)


def _weekdays(text: str, words: str) -> frozenset[int]:
    """'monday', 'mon and thu', 'weekday', 'weekends' -> days of the week (0 = Monday)."""
    if words in _DAY_SETS:
        return _DAY_SETS[words]
    days = set()
    for word in _DAY_LIST.split(words):
        day = _WEEKDAYS.get(word, _WEEKDAYS.get(word.removesuffix("s")))
        if day is None:
            raise _unknown(text, word)
        days.add(day)
    return frozenset(days)


def _unknown(text: str, word: str) -> ScheduleSpecError:
    close = difflib.get_close_matches(word, _KNOWN_WORDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return spec_error(
        text,
        f"unknown unit {shown(word)}{hint}: use seconds, minutes, hours, days, weeks, months, "
        "a day of the week, 'weekday' or 'weekend'",
    )


def _month_day(text: str, on: str | None) -> int:
    if on is None:
        return 1
    if _LAST_DAY.fullmatch(on):
        return LAST_DAY
    match = _MONTH_DAY.fullmatch(on)
    if match is None or not 1 <= int(match["d"]) <= 31:
        raise spec_error(
            text,
            f"bad day of the month {shown(on)}: use 'on day 1' to 'on day 31' or 'on the last day'",
            "'every month on day 1'",
        )
    return int(match["d"])


def _clock(text: str, at: str | None) -> tuple[int, int, int]:
    """'09:00', '9:00', '09:00:30', '9am', '5:30 pm', 'noon', 'midnight' -> (hour, minute, second)."""
    if at is None or at == "midnight":
        return 0, 0, 0
    if at == "noon":
        return 12, 0, 0
    example = "'every day at 09:00'"
    match = _CLOCK.fullmatch(at)
    if match is None or (match["m"] is None and match["ampm"] is None):
        raise spec_error(text, f"bad time {shown(at)}: write HH:MM or HH:MM:SS (24-hour), or 9am", example)
    hour, minute, second = int(match["h"]), int(match["m"] or 0), int(match["s"] or 0)
    if match["ampm"]:
        if not 1 <= hour <= 12:
            raise spec_error(text, f"bad time {shown(at)}: with am/pm the hour is 1-12", example)
        hour = hour % 12 + (12 if match["ampm"] == "p" else 0)
    if hour > 23:
        raise spec_error(text, f"bad time {shown(at)}: the hour is 0-23", example)
    if minute > 59 or second > 59:
        raise spec_error(text, f"bad time {shown(at)}: minutes and seconds are 0-59", example)
    return hour, minute, second
