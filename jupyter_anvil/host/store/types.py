"""Column types that behave alike on SQLite and PostgreSQL.

PostgreSQL's text types cannot hold the NUL character (SQLite's can): an app that prints
``"\\0"``, a caller that sends it in a name or a mail server that puts it in its reply would
fail the whole statement there, and a query with it (``?app=%00``) would be a 500 instead of
no rows. On PostgreSQL these types put U+FFFD (the replacement character) where a NUL was,
in what is written and in what is compared, so the statement runs and a query for a name
with NUL finds nothing, as on SQLite.

PostgreSQL also enforces ``VARCHAR(n)`` (SQLite ignores the length): an app name or a
task name longer than its column, from a notebook in a deep folder, would fail every
statement that writes it. On PostgreSQL a ``String(n)`` value is cut to ``n`` characters,
in writes and in comparisons alike, so what was written is found by the same long name.

The DDL is that of ``sa.Text`` and ``sa.String``: no migration, and Alembic's comparison
sees the same types.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

NUL = "\x00"
REPLACEMENT = "\ufffd"


def _without_nul(value: Any, dialect: Dialect) -> Any:
    if isinstance(value, str) and NUL in value and dialect.name == "postgresql":
        return value.replace(NUL, REPLACEMENT)
    return value


class Text(sa.TypeDecorator[str]):
    """``sa.Text`` that stores NUL as U+FFFD where the database cannot hold NUL."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return _without_nul(value, dialect)


class String(sa.TypeDecorator[str]):
    """``sa.String(length)`` that stores NUL as U+FFFD, and cuts values to its length, where
    the database would refuse them."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        value = _without_nul(value, dialect)
        length = getattr(self.impl, "length", None)
        if isinstance(value, str) and length is not None and len(value) > length and dialect.name == "postgresql":
            return value[:length]
        return value
