"""Persistence behind one small interface: SQLAlchemy Core, SQLite by default.

Every method is async and runs its blocking database work on one worker thread, never
on the event loop. The same code runs on PostgreSQL given a database URL.

The SQLite files hold sessions and everything apps printed: they are the owner's
alone. The folder is made 0700 and the database 0600 before SQLite opens it; SQLite
gives the ``-wal`` and ``-shm`` files it creates later the mode of the database file
(whatever the umask), so they are 0600 too. Files from an older release with wider
modes are narrowed at start, and the log says so. (The process umask is left alone:
it belongs to the whole Jupyter server.)

Several servers may share one store: nothing here keeps a counter or a cache of rows
in memory, so each statement sees what the others committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

T = TypeVar("T")
log = logging.getLogger(__name__)

#: the files SQLite keeps beside a database (WAL mode, or a rollback journal)
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

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
    # the server instance that runs it (see instances.py); NULL on records of older releases
    sa.Column("owner", sa.String(32)),
)

#: the server instances sharing this store, with their heartbeats (see instances.py)
servers = sa.Table(
    "anvil_servers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("pid_started", sa.String(32)),  # the process's start time, as /proc says it
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("beat", sa.Float, nullable=False),
)

#: columns added since the first release, with what an older table lacks; see upgrade_schema
ADDED_COLUMNS = {"anvil_tasks": ("owner",)}

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
        self._worker = _DatabaseThread()

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._worker.submit(work))

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        upgrade_schema(self.engine)

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


class _DatabaseThread:
    """One daemon thread that runs database work in order. Not a ThreadPoolExecutor:
    its threads are joined at interpreter exit, so one stuck statement would keep a
    stopped server alive; this one is let go after the stop's bound."""

    _STOP = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="anvil-store", daemon=True)
        self._thread.start()
        self._stopped = False

    def submit(self, work: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._stopped:
            future.set_exception(RuntimeError("the store is closed"))
        else:
            self._queue.put((future, work))
        return future

    def stop(self, timeout: float) -> bool:
        """Let queued work finish, then end; False if it did not within ``timeout``."""
        self._stopped = True
        self._queue.put(self._STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            future, work = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                future.set_exception(e)


def upgrade_schema(engine: Engine) -> None:
    """Bring a database of an older release up to this one: add the columns it lacks.
    Small on purpose (Alembic migrations replace it); every step must be harmless to
    repeat, since several servers may start on one database at once."""
    inspector = sa.inspect(engine)
    for table_name, column_names in ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table_name)}
        table = metadata.tables[table_name]
        for name in column_names:
            if name in present:
                continue
            column_type = table.c[name].type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as db:
                    db.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN {name} {column_type}"))
                log.info("[jupyter-anvil] store: added column %s.%s", table_name, name)
            except sa.exc.OperationalError:  # another server added it just now
                if name not in {c["name"] for c in sa.inspect(engine).get_columns(table_name)}:
                    raise


def secure_folder(path: Path) -> None:
    """Make ``path`` a folder only its owner can enter (0700), narrowing it if it was
    open to others (the log says so)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _narrow(path, 0o700)


def secure_sqlite_files(database: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would use the umask),
    and narrow it and its side files if an older release left them wider."""
    if not database.parent.exists():
        database.parent.mkdir(mode=0o700, parents=True)
    os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
    for path in (database, *(database.with_name(database.name + side) for side in SQLITE_SIDE_FILES)):
        _narrow(path, 0o600)


def _narrow(path: Path, wanted: int) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(path, wanted)
    except OSError as e:  # someone else's file: say so, and let opening it decide
        log.warning("[jupyter-anvil] %s is open to others (mode %03o) and could not be narrowed: %s", path, mode, e)
        return
    log.warning("[jupyter-anvil] %s was open to other users (mode %03o): now %03o", path, mode, wanted)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite:"):
        database = sqlite_path(url)
        if database is not None:
            secure_sqlite_files(database)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _: Any) -> None:
            connection.isolation_level = None  # transactions begin where SQLAlchemy says (below)
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint, fast commits
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock at the start: a read-then-write transaction (a merge,
            # a sweep) then sees no other server's commit between its read and its write;
            # a deferred one would either miss it or fail with SQLITE_BUSY at the write.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

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

    async def append_output(self, task_id: str, text: str, dropped: int) -> None:
        """Add printed output to a running task's record (as it comes, so a task cut off
        by a crash keeps what it printed)."""

        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(
                    tasks.update()
                    .where(tasks.c.id == task_id)
                    .values(output=tasks.c.output + text, output_dropped=dropped)
                )

        await self.store.run(work)

    async def mark_orphans(self, sweep: Callable[[sa.Connection], Sequence[str]]) -> int:
        """Tasks left queued or running by servers that are gone: ``missing``. ``sweep``
        removes the gone servers' rows (instances.py); what is left are the live owners.
        Tasks without an owner are from a release before owners: theirs is gone too."""

        def work() -> int:
            with self.store.engine.begin() as db:
                sweep(db)
                live_owners = sa.select(servers.c.id)
                unfinished = tasks.c.status.in_(("queued", "running"))
                orphaned = sa.or_(tasks.c.owner.is_(None), tasks.c.owner.notin_(live_owners))
                result = db.execute(
                    tasks.update().where(unfinished, orphaned).values(status="missing", ended=time.time())
                )
                return int(result.rowcount)

        return await self.store.run(work)

    async def mark_stopped(self, records: Sequence[dict[str, Any]]) -> None:
        """This server is stopping under these tasks: ``missing``, with the output they
        printed, unless they ended meanwhile."""

        def work() -> None:
            now = time.time()
            with self.store.engine.begin() as db:
                for record in records:
                    unfinished = tasks.c.status.in_(("queued", "running"))
                    db.execute(
                        tasks.update()
                        .where(tasks.c.id == record["id"], unfinished)
                        .values(
                            status="missing",
                            ended=now,
                            output=record["output"],
                            output_dropped=record["output_dropped"],
                        )
                    )

        await self.store.run(work)

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
