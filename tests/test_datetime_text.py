"""``wire.parse_datetime``: Anvil's DateTime text and the ISO forms browsers send, the same
on every Python this package declares (3.10's ``fromisoformat`` refuses Anvil's form)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_anvil import wire
from jupyter_anvil.errors import SerializationError

UTC = dt.timezone.utc
INDIA = dt.timezone(dt.timedelta(hours=5, minutes=30))
WEST = dt.timezone(-dt.timedelta(hours=3, minutes=30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Anvil's own form: space, six digits, +HHMM
        ("2024-02-28 09:30:00.000000+0000", dt.datetime(2024, 2, 28, 9, 30, tzinfo=UTC)),
        ("2024-02-28 09:30:00.123456+0530", dt.datetime(2024, 2, 28, 9, 30, 0, 123456, tzinfo=INDIA)),
        ("2024-02-28 09:30:00.5-0330", dt.datetime(2024, 2, 28, 9, 30, 0, 500000, tzinfo=WEST)),
        # ISO: T, Z, +HH:MM, fractions of any length (past six digits dropped, as Python 3.11 does)
        ("2024-02-28T09:30:00Z", dt.datetime(2024, 2, 28, 9, 30, tzinfo=UTC)),
        ("2024-02-28T09:30:00.123Z", dt.datetime(2024, 2, 28, 9, 30, 0, 123000, tzinfo=UTC)),
        ("2024-02-28T09:30:00.1234567+05:30", dt.datetime(2024, 2, 28, 9, 30, 0, 123456, tzinfo=INDIA)),
        ("2024-02-28T09:30:00,25z", dt.datetime(2024, 2, 28, 9, 30, 0, 250000, tzinfo=UTC)),
        ("2024-02-28T09:30+05", dt.datetime(2024, 2, 28, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=5)))),
        ("2024-02-28 09:30:00 +0000", dt.datetime(2024, 2, 28, 9, 30, tzinfo=UTC)),
        # no offset: naive, as fromisoformat; a date alone is midnight
        (" 2024-02-28T09:30:00 ", dt.datetime(2024, 2, 28, 9, 30)),
        ("2024-02-28", dt.datetime(2024, 2, 28)),
    ],
)
def test_forms_parse(text: str, expected: dt.datetime) -> None:
    parsed = wire.parse_datetime(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2024-02-30 09:30:00.000000+0000",  # no such day
        "2024-02-28 25:00:00+0000",  # no such hour
        "2024-02-28 09:30:00+2400",  # an offset of a day
        "2024-02-28 09:30:00+0000 trailing",
        "2024-02-28X09:30:00",
        "\uff12\uff10\uff12\uff14-02-28",  # fullwidth digits: other scripts are not Anvil's
        "2024-02-28 09:30:00.+0000",
    ],
)
def test_other_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        wire.parse_datetime(text)


def test_a_bad_datetime_in_a_message_is_a_serialization_error() -> None:
    objects = [{"type": ["DateTime"], "path": ["v"], "value": "2024-13-01 00:00:00.000000+0000"}]
    with pytest.raises(SerializationError, match="DateTime"):
        wire.decode({"v": None}, objects, {})


def test_anvils_form_decodes_in_a_message() -> None:
    objects = [{"type": ["DateTime"], "path": ["v"], "value": "2024-02-28 09:30:00.000000+0000"}]
    assert wire.decode({"v": None}, objects, {})["v"] == dt.datetime(2024, 2, 28, 9, 30, tzinfo=UTC)


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)


# From year 2: an offset can put year 1's first day before datetime.min in UTC.
@given(st.datetimes(min_value=dt.datetime(2, 1, 1), timezones=offsets))
def test_what_we_write_we_read(value: dt.datetime) -> None:
    assert wire.parse_datetime(wire.format_datetime(value)) == value
    assert wire.parse_datetime(value.isoformat()) == value
    assert wire.parse_datetime(value.isoformat(sep=" ", timespec="milliseconds")) == value.replace(
        microsecond=value.microsecond // 1000 * 1000
    )


def test_years_before_1000_are_written_with_four_digits() -> None:
    value = dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    assert wire.format_datetime(value) == "0999-01-02 03:04:05.000006+0000"
    assert wire.parse_datetime(wire.format_datetime(value)) == value
