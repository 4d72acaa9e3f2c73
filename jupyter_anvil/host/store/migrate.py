"""Alembic at start-up: every database this store opens is brought to the head revision.

Revisions live in ``migrations/versions`` (shipped in the package). Databases made
before Alembic have no ``alembic_version`` table; they are recognised by their tables
and stamped with the revision they match, then upgraded like any other:

* no tables of ours: a new database, upgraded from nothing;
* the release before issue 13 (sessions, tasks without ``owner``, the log): revision 1;
* issue 13's code (``anvil_tasks.owner``, ``anvil_servers``, and a log numbered by
  the database): revision 2. Issue 13's code on an older database added the first two
  but left the log as it was: that one is stamped 1, and revision 2 does only the rest.

Several servers may start on one database at once, so the whole check-stamp-upgrade
runs in ONE transaction holding the database's write lock from its first statement:
on SQLite the engine begins every transaction with ``BEGIN IMMEDIATE`` (engine.py) and
SQLite's DDL is transactional, so the second server waits (busy_timeout) and then finds
the head already stamped; on PostgreSQL (transactional DDL too) a transaction-scoped
advisory lock does the same. Other databases get no such guard.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from .tables import metadata

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
#: any fixed number: the PostgreSQL advisory lock servers take while they migrate
_PG_LOCK_KEY = 0x616E76696C  # "anvil"

#: the tables each revision before Alembic had, as the detection checks them
REVISION_1_TABLES = ("anvil_sessions", "anvil_tasks", "anvil_log")


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None
    return head


def upgrade_to(url: str, revision: str) -> None:
    """A new database at ``url`` as the release at ``revision`` made it: its revisions run
    up to it, no further (for tests of upgrades from an older release)."""
    engine = sa.create_engine(url)
    script = script_directory()

    def upgrade(current: Any, _context: Any) -> Any:
        return script._upgrade_revs(revision, current)

    try:
        with (
            engine.begin() as connection,
            EnvironmentContext(Config(), script, fn=upgrade, destination_rev=revision) as environment,
        ):
            environment.configure(connection=connection, target_metadata=metadata)
            environment.run_migrations()
    finally:
        engine.dispose()


def upgrade_to_head(engine: Engine) -> None:
    script = script_directory()

    def upgrade(revision: Any, _context: Any) -> Any:
        return script._upgrade_revs("head", revision)

    with engine.begin() as connection:  # BEGIN IMMEDIATE on SQLite: the write lock, now
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        with EnvironmentContext(Config(), script, fn=upgrade, destination_rev="head") as environment:
            # inside our transaction, so Alembic leaves beginning and committing to us
            environment.configure(connection=connection, target_metadata=metadata)
            context = environment.get_context()
            current = context.get_current_revision()
            if current is not None and not _known(script, current):
                raise RuntimeError(
                    f"the store's database is at revision {current}, from a newer release of jupyter-anvil;"
                    f" this one knows revisions up to {script.get_current_head()}"
                )
            if current is None:
                legacy = legacy_revision(connection)
                if legacy is not None:
                    log.info("[jupyter-anvil] store: a database from before migrations, at revision %s", legacy)
                    context.stamp(script, legacy)
            before = context.get_current_revision()
            environment.run_migrations()
            after = context.get_current_revision()
    if before != after:
        log.info("[jupyter-anvil] store: upgraded the database from revision %s to %s", before, after)


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        script.get_revision(revision)
    except CommandError:  # Alembic's word for a revision it cannot find
        return False
    return True


def legacy_revision(connection: Connection) -> str | None:
    """The revision a database made before Alembic matches; None for a new one."""
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    if not present & {*REVISION_1_TABLES, "anvil_servers"}:
        return None
    missing = [name for name in REVISION_1_TABLES if name not in present]
    if missing:  # not a database any release made: refuse rather than guess
        raise RuntimeError(f"the store's database lacks the tables {', '.join(missing)}; not upgrading it")
    task_columns = {column["name"] for column in inspector.get_columns("anvil_tasks")}
    if "owner" in task_columns and "anvil_servers" in present and log_numbered_by_database(connection):
        return "0002"
    return "0001"


def log_numbered_by_database(connection: Connection) -> bool:
    """Whether anvil_log's seq is given by the database and never reused: AUTOINCREMENT
    on SQLite, a default (a sequence) on PostgreSQL. Shared by revision 2."""
    if connection.dialect.name == "sqlite":
        sql = connection.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'anvil_log'")
        ).scalar()
        return "AUTOINCREMENT" in (sql or "").upper()
    if connection.dialect.name == "postgresql":
        columns = sa.inspect(connection).get_columns("anvil_log")
        return any(column["name"] == "seq" and column.get("default") for column in columns)
    return True  # other databases: as the table was made; nothing revision 2 can do
