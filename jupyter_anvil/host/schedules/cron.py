"""5-field cron expressions (minute hour day-of-month month day-of-week), read on the
schedule's zone clock.

``croniter`` matches the fields against naive local times only; ``wallclock`` turns those into
instants. croniter's own time-zone mode is not used: on a fall-back day it fires a repeated
02:30 twice, and on a spring-forward day it moves a skipped 02:30 to 03:00 instead of 03:30.
Seconds and years fields (6 or 7 fields) are refused, and so is croniter's ``R`` (a random
value, which would differ between servers); its ``H`` (a hashed value) is kept, hashed from the
schedule's id, so it is the same everywhere.
"""

from __future__ import annotations

import re
import threading
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from croniter import croniter

from .spec import shown, spec_error
from .wallclock import WallClockSpec, clock

FIELDS = "minute hour day-of-month month day-of-week"
_EXAMPLE = "'*/5 * * * *', '0 9 * * mon-fri'"
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_FIELD = re.compile(r"[0-9a-z*?/,#\-]+", re.IGNORECASE)
_RANDOM = re.compile(r"(?<![a-z])r(?![a-z])", re.IGNORECASE)  # croniter's R, not the r of "mar", "fri"
_NUMBER = re.compile(r"\d+")
_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_NAME_NUMBERS = {
    **{name[:3].lower(): str(number) for number, name in enumerate(_DAY_NAMES[:7])},
    **{name[:3].lower(): str(number) for number, name in enumerate(_MONTH_NAMES) if name},
}


def looks_like_cron(text: str) -> bool:
    """Starts with '@', or is made of a few cron-like fields with a digit or '*' among them."""
    fields = text.split()
    if text.strip().startswith("@"):
        return True
    return (
        1 < len(fields) <= 8
        and all(_CRON_FIELD.fullmatch(f) for f in fields)
        and any(c.isdigit() or c == "*" for c in text)
    )


def parse_cron(text: str, tz: str, zone: zoneinfo.ZoneInfo, *, seed: str = "") -> CronSpec:
    fields = text.split()
    if len(fields) == 1 and fields[0].startswith("@"):
        expanded = MACROS.get(fields[0].lower())
        if expanded is None:
            raise spec_error(
                text, f"unknown cron shorthand {shown(fields[0])}: use one of {', '.join(MACROS)}", _EXAMPLE
            )
        fields = expanded.split()
    if len(fields) in (6, 7):
        raise spec_error(
            text,
            f"cron with {len(fields)} fields (seconds or years) is not supported: use 5 fields ({FIELDS}), "
            "or a phrase such as 'every 30 seconds'",
            _EXAMPLE,
        )
    if len(fields) != 5:
        raise spec_error(text, f"a cron expression has 5 fields ({FIELDS}), this has {len(fields)}", _EXAMPLE)
    expression = " ".join(fields)
    if _RANDOM.search(expression):
        raise spec_error(text, "croniter's random 'R' would differ on every server: use 'H' or a number", _EXAMPLE)
    hash_id = (seed or "jupyter-anvil").encode()
    try:  # croniter parses it when the spec is made
        spec = CronSpec(text, tz, zone, expression=expression, hash_id=hash_id)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError) as error:
        raise spec_error(text, f"not a valid cron expression ({error})", _EXAMPLE) from None
    try:  # an expression such as "0 0 30 2 *" parses but never fires
        spec._next_local(datetime(2000, 1, 1))
    except (ValueError, KeyError, IndexError, TypeError, OverflowError):
        raise spec_error(text, "no date ever matches it, so it would never fire", _EXAMPLE) from None
    return spec


@dataclass(frozen=True)
class CronSpec(WallClockSpec):
    expression: str = "* * * * *"  # the 5 fields, a shorthand expanded
    hash_id: bytes = b""
    # one parsed croniter, moved to each start under a lock (parsing it again per call costs
    # several times the match itself; the scheduler may ask from more than one thread)
    _matcher: Any = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_matcher", croniter(self.expression, datetime(2000, 1, 1), hash_id=self.hash_id))

    def _next_local(self, local: datetime) -> datetime:
        # naive in, naive out: croniter does calendar arithmetic only, no zone, no machine clock
        with self._lock:
            self._matcher.set_current(local, force=True)
            following: datetime = self._matcher.get_next(datetime)
        return following

    def _local_times(self, local: datetime) -> Iterator[datetime]:
        matcher = croniter(self.expression, local, hash_id=self.hash_id)
        while True:
            following: datetime = matcher.get_next(datetime)
            yield following

    def describe(self) -> str:
        words = describe_fields(self.expression.split())
        return f"{words} ({self.tz})" if words else f"on cron schedule {self.expression!r} ({self.tz})"


def describe_fields(fields: list[str]) -> str | None:
    """The 5 fields in words ("at 09:00 on Monday through Friday"), or None for what is not
    worded here (croniter extras: L, W, #, H, ?)."""
    minute, hour, dom, month, dow = (_names_to_numbers(field) for field in fields)
    if any(not re.fullmatch(r"[0-9*/,\-]+", field) for field in (minute, hour, dom, month, dow)):
        return None
    parts = [_time_words(minute, hour)]
    every_day = "" if "every" in parts[0] else "every day"
    if dom != "*" and dow != "*":
        parts.append(f"on {_dom_words(dom)} or on {_items(dow, _day)}")  # cron: either matches
    elif dom != "*":
        parts.append(f"on {_dom_words(dom)}")
    elif dow != "*":
        parts.append(f"on {_items(dow, _day)}")
    elif month == "*" and every_day:
        parts.append(every_day)
    if month != "*":
        parts.append(f"in {_items(month, _month)}")
    return " ".join(parts)


def _names_to_numbers(field: str) -> str:
    return re.sub(r"[a-z]{3}", lambda m: _NAME_NUMBERS.get(m[0], m[0]), field.lower())


def _time_words(minute: str, hour: str) -> str:
    if _NUMBER.fullmatch(minute) and all(_NUMBER.fullmatch(h) for h in hour.split(",")) and hour.count(",") < 4:
        return "at " + _and([clock(int(h), int(minute)) for h in hour.split(",")])
    if hour == "*":
        if minute == "*":
            return "every minute"
        if re.fullmatch(r"\*/\d+", minute):
            return f"every {minute[2:]} minutes"
        return f"at minute {_items(minute, str)} past every hour"
    if re.fullmatch(r"\*/\d+", hour) and _NUMBER.fullmatch(minute):
        return f"at minute {minute} past every {_ordinal(int(hour[2:]))} hour"
    if minute == "*":
        return f"every minute of hour {_items(hour, str)}"
    return f"at minute {_items(minute, str)} past hour {_items(hour, str)}"


def _dom_words(dom: str) -> str:
    return f"day {_items(dom, str)} of the month"


def _day(number: str) -> str:
    return _DAY_NAMES[int(number)] if int(number) <= 7 else number


def _month(number: str) -> str:
    return _MONTH_NAMES[int(number)] if 1 <= int(number) <= 12 else number


def _items(field: str, word: Callable[[str], str]) -> str:
    """'1-5' -> 'Monday through Friday', '0,30' -> '0 and 30', '*/2' -> 'every 2nd'."""
    words = []
    for item in field.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            text = "every" if not step else f"every {_ordinal(int(step))}"
        else:
            low, _, high = span.partition("-")
            text = f"{word(low)} through {word(high)}" if high else word(low)
            if step:
                text = f"every {_ordinal(int(step))} from {text}"
        words.append(text)
    return _and(words)


def _ordinal(number: int) -> str:
    last = 0 if 10 <= number % 100 <= 20 or number % 10 > 3 else number % 10
    suffix = "thstndrd"[2 * last : 2 * last + 2]  # th, st, n-d, rd: one word, so codespell passes it
    return f"{number}{suffix}"


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
