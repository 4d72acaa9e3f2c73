"""Numbers from the database that readers can tail: committed in the order they were given.

A reader that tails a table by its number (the app log: ``anvil/api/logs?since=SEQ``)
must never see number 11 before number 10 is committed, or it asks for "after 11" next
and misses 10 for good. SQLite has one writer at a time (engine.py begins every
transaction with ``BEGIN IMMEDIATE``), so numbers commit in order. PostgreSQL hands out
sequence numbers to concurrent transactions that may commit in any order, so writers of
such a table (several servers, or one server's overlapping writes) first take a lock of
that table's own, held until their commit: the next writer's number comes after the
last one committed. Plain readers never wait for it.
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def numbered_in_commit_order(db: Connection, table: sa.Table) -> None:
    """Within ``db``'s transaction, before it takes numbers of ``table``: wait for any other
    transaction numbering that table to commit (PostgreSQL; SQLite serialises writers anyway)."""
    if db.dialect.name == "postgresql":
        # an advisory lock of the table's own, released at commit or rollback
        db.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(table)})


def _lock_key(table: sa.Table) -> int:
    # stable across servers and releases (hash() is salted per process); within int4 range,
    # apart from the migration lock (migrate.py), which is larger
    return zlib.crc32(f"jupyter-anvil numbering {table.name}".encode()) & 0x7FFFFFFF
