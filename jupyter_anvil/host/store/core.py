"""Persistence behind one small interface: SQLAlchemy Core, SQLite by default.

Every method is async and runs its blocking database work on one worker thread, never
on the event loop. The same code runs on PostgreSQL given a database URL.

Several servers may share one store: nothing here keeps a counter or a cache of rows
in memory, so each statement sees what the others committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .engine import DatabaseThread, create_engine
from .migrate import upgrade_to_head
from .tables import sessions
from .urls import StoreError, shown

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class SessionRecord:
    """A stored session. ``data`` maps each key to its encoded value (wire form), so
    concurrent calls can merge their changes key by key without decoding anything."""

    token_hash: str
    id: str
    app: str
    client_type: str
    data: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    last_used: float = 0.0


class Store:
    """The one place state is kept (sessions now; tasks, schedules and mail later)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        self._worker = DatabaseThread()

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._worker.submit(work))

    def create_schema(self) -> None:
        """Bring the database to this release's schema (Alembic, see migrate.py). Runs at
        start-up, before the server serves, so it may block. A database that cannot be
        reached is a StoreError naming it (never its password), not a driver's traceback."""
        try:
            upgrade_to_head(self.engine)
        except sa.exc.OperationalError as e:
            url = self.engine.url
            raise StoreError(f"cannot reach the store's database {shown(url)}: {_reason(e, url)}") from None

    def close(self, timeout: float = 5.0) -> None:
        """Finish queued work and close; bounded, so a database that hangs (another
        server holding a lock) cannot hold up the server's stop."""
        if not self._worker.stop(timeout):
            log.warning("[jupyter-anvil] the store was still busy after %.0f s; closed without waiting", timeout)
            return  # disposing now would pull the connection from under the busy thread
        self.engine.dispose()

    # -- sessions ---------------------------------------------------------------------
    async def insert_session(self, record: SessionRecord) -> None:
        def work() -> None:
            with self.engine.begin() as db:
                db.execute(sessions.insert().values(_session_row(record)))

        await self.run(work)

    async def load_session(self, token_hash: str, idle_after: float) -> SessionRecord | None:
        """The session with this token hash, unless it has been idle since ``idle_after``."""

        def work() -> SessionRecord | None:
            with self.engine.begin() as db:
                row = db.execute(sa.select(sessions).where(sessions.c.token_hash == token_hash)).mappings().first()
                if row is None:
                    return None
                if row["last_used"] < idle_after:
                    db.execute(sessions.delete().where(sessions.c.token_hash == token_hash))
                    return None
                return _session_record(row)

        return await self.run(work)

    async def load_session_data(self, token_hash: str) -> tuple[dict[str, Any], float] | None:
        """A stored session's data and last use (None: it is gone): one primary-key read,
        so a server's live copy can be brought up to date with what another server wrote."""

        def work() -> tuple[dict[str, Any], float] | None:
            with self.engine.connect() as db:
                row = db.execute(_SELECT_SESSION_STATE, {"h": token_hash}).first()
            return None if row is None else (json.loads(row[0]), float(row[1]))

        return await self.run(work)

    async def save_session_changes(
        self, token_hash: str, changed: dict[str, Any], deleted: list[str], touch: bool
    ) -> bool:
        """Merge changed and deleted keys into the stored data in one transaction, so two
        calls of one session that write different keys both keep their writes."""

        def work() -> bool:
            now = time.time()
            with self.engine.begin() as db:
                if not changed and not deleted:
                    return bool(db.execute(_TOUCH_SESSION, {"h": token_hash, "t": now}).rowcount)
                select = _SELECT_SESSION_DATA_FOR_UPDATE if db.dialect.name != "sqlite" else _SELECT_SESSION_DATA
                row = db.execute(select, {"h": token_hash}).first()
                if row is None:
                    return False
                data = json.loads(row[0])
                data.update(changed)
                for key in deleted:
                    data.pop(key, None)
                db.execute(_WRITE_SESSION, {"h": token_hash, "d": json.dumps(data), "t": now})
                return True

        if not (changed or deleted or touch):
            return True
        return await self.run(work)

    async def delete_idle_sessions(self, idle_after: float) -> int:
        def work() -> int:
            with self.engine.begin() as db:
                return int(db.execute(sessions.delete().where(sessions.c.last_used < idle_after)).rowcount)

        return await self.run(work)


# Built once: a session write is on every call's path, and building statements cost
# more than running them. PostgreSQL locks the row so concurrent merges serialise;
# SQLite serialises writers anyway.
_by_hash = sessions.c.token_hash == sa.bindparam("h")
_TOUCH_SESSION = sessions.update().where(_by_hash).values(last_used=sa.bindparam("t"))
_SELECT_SESSION_DATA = sa.select(sessions.c.data).where(_by_hash)
_SELECT_SESSION_STATE = sa.select(sessions.c.data, sessions.c.last_used).where(_by_hash)
_SELECT_SESSION_DATA_FOR_UPDATE = _SELECT_SESSION_DATA.with_for_update()
_WRITE_SESSION = sessions.update().where(_by_hash).values(data=sa.bindparam("d"), last_used=sa.bindparam("t"))


def _session_row(record: SessionRecord) -> dict[str, Any]:
    return {
        "token_hash": record.token_hash,
        "id": record.id,
        "app": record.app,
        "client_type": record.client_type,
        "data": json.dumps(record.data),
        "created": record.created,
        "last_used": record.last_used,
    }


def _session_record(row: Any) -> SessionRecord:
    return SessionRecord(
        token_hash=row["token_hash"],
        id=row["id"],
        app=row["app"],
        client_type=row["client_type"],
        data=json.loads(row["data"]),
        created=row["created"],
        last_used=row["last_used"],
    )


def _reason(error: sa.exc.DBAPIError, url: sa.URL) -> str:
    """The driver's own words, on one line, with the password masked should it echo it."""
    reason = " ".join(str(error.orig).split())
    return reason.replace(url.password, "***") if url.password else reason
