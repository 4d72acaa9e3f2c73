"""Persistence behind one small interface: SQLAlchemy Core, SQLite by default.

Every method is async and runs its blocking database work on one worker thread, never
on the event loop. The same code runs on PostgreSQL given a database URL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

T = TypeVar("T")

metadata = sa.MetaData()

sessions = sa.Table(
    "anvil_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("app", sa.String(255), nullable=False),
    sa.Column("client_type", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False, default="{}"),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("last_used", sa.Float, nullable=False),
)


tasks = sa.Table(
    "anvil_tasks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("app", sa.String(255), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("launched", sa.Float, nullable=False, index=True),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("state", sa.Text),  # encoded task_state, {"v", "objects"}
    sa.Column("result", sa.Text),  # encoded return value, {"v", "objects", "media"}
    sa.Column("error", sa.Text),  # wire error
    sa.Column("traceback", sa.Text),
    sa.Column("launched_by", sa.Text),  # the launching call's context
    sa.Column("output", sa.Text, nullable=False, default=""),
    sa.Column("output_dropped", sa.Integer, nullable=False, default=0),
)

#: columns kept as JSON text
TASK_JSON_COLUMNS = ("state", "result", "error", "launched_by")


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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anvil-store")

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
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


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint, fast commits
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


# Built once: a session write is on every call's path, and building statements cost
# more than running them. PostgreSQL locks the row so concurrent merges serialise;
# SQLite serialises writers anyway.
_by_hash = sessions.c.token_hash == sa.bindparam("h")
_TOUCH_SESSION = sessions.update().where(_by_hash).values(last_used=sa.bindparam("t"))
_SELECT_SESSION_DATA = sa.select(sessions.c.data).where(_by_hash)
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


# -- tasks ----------------------------------------------------------------------------------
def _task_row(values: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if k in TASK_JSON_COLUMNS and v is not None else v for k, v in values.items()}


def _task_dict(row: Any) -> dict[str, Any]:
    return {k: json.loads(v) if k in TASK_JSON_COLUMNS and v is not None else v for k, v in dict(row).items()}


class TaskStore:
    """Task records: one row per launch, updated as the task runs and when it ends."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def insert(self, values: dict[str, Any]) -> None:
        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(tasks.insert().values(_task_row(values)))

        await self.store.run(work)

    async def update(self, task_id: str, values: dict[str, Any]) -> None:
        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(tasks.update().where(tasks.c.id == task_id).values(_task_row(values)))

        await self.store.run(work)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        def work() -> dict[str, Any] | None:
            with self.store.engine.begin() as db:
                row = db.execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
                return _task_dict(row) if row is not None else None

        return await self.store.run(work)

    async def list(
        self,
        app: str | None = None,
        status: str | None = None,
        name: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first, without output; ``before`` (a launch time) pages back."""

        def work() -> list[dict[str, Any]]:
            columns = [c for c in tasks.c if c.name not in ("output", "traceback", "result")]
            query = sa.select(*columns).order_by(tasks.c.launched.desc(), tasks.c.id).limit(limit)
            for column, value in ((tasks.c.app, app), (tasks.c.status, status), (tasks.c.name, name)):
                if value is not None:
                    query = query.where(column == value)
            if before is not None:
                query = query.where(tasks.c.launched < before)
            with self.store.engine.begin() as db:
                return [_task_dict(row) for row in db.execute(query).mappings()]

        return await self.store.run(work)

    async def mark_missing(self) -> int:
        """Tasks left queued or running by a server that stopped: they are missing."""

        def work() -> int:
            with self.store.engine.begin() as db:
                result = db.execute(
                    tasks.update()
                    .where(tasks.c.status.in_(("queued", "running")))
                    .values(status="missing", ended=time.time())
                )
                return int(result.rowcount)

        return await self.store.run(work)

    async def prune(self, keep: int, max_age_days: float) -> int:
        """Drop finished records beyond the newest ``keep``, or older than ``max_age_days``."""

        def work() -> int:
            finished = tasks.c.status.notin_(("queued", "running"))
            removed = 0
            with self.store.engine.begin() as db:
                if max_age_days > 0:
                    too_old = tasks.c.launched < time.time() - max_age_days * 86400
                    removed += db.execute(tasks.delete().where(finished, too_old)).rowcount
                newest = sa.select(tasks.c.launched).where(finished).order_by(tasks.c.launched.desc())
                cutoff = db.execute(newest.offset(keep).limit(1)).scalar()
                if cutoff is not None:
                    removed += db.execute(tasks.delete().where(finished, tasks.c.launched <= cutoff)).rowcount
            return int(removed)

        return await self.store.run(work)
