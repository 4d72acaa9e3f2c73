"""The database connection: one engine, and the one thread its blocking work runs on."""

from __future__ import annotations

import concurrent.futures
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .files import secure_sqlite_files, sqlite_path
from .urls import database_url

T = TypeVar("T")


#: seconds a PostgreSQL connection attempt may take (libpq waits forever by default: a
#: database behind a firewall that drops packets would hang the server's start)
CONNECT_TIMEOUT = 10


def create_engine(url: str) -> Engine:
    """The engine of a database URL (see urls.py); StoreError for one the store cannot use."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {"application_name": "jupyter-anvil"}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    # pre-ping: a connection the database (or a proxy) closed while idle is replaced, not
    # handed to a call that would then fail
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_engine(url: str) -> Engine:
    database = sqlite_path(url)
    if database is not None:
        secure_sqlite_files(database)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(connection: Any, _: Any) -> None:
        connection.isolation_level = None  # transactions begin where SQLAlchemy says (below)
        cursor = connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _wal(cursor)  # readers never wait for the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint, fast commits
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # Take the write lock at the start: a read-then-write transaction (a merge,
        # a sweep) then sees no other server's commit between its read and its write;
        # a deferred one would either miss it or fail with SQLITE_BUSY at the write.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _wal(cursor: Any, wait: float = 30.0) -> None:
    """Put the database in WAL mode. Switching a database into it needs a lock for which
    SQLite calls no busy handler: two servers opening one new database at once see
    "database is locked" at once (measured: 3 at once failed 59 times in 200), so the
    switch is tried again, for as long as any statement may wait for a lock."""
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class DatabaseThread:
    """One daemon thread that runs database work in order. Not a ThreadPoolExecutor:
    its threads are joined at interpreter exit, so one stuck statement would keep a
    stopped server alive; this one is let go after the stop's bound.

    One thread on PostgreSQL too, measured (bench/store.py): the services count on work
    running in the order it was submitted (a log read after the flush queued before it, the
    changes of one task record in the order they came), and several threads gain nothing on a
    two-core host where commits do not wait for the disk (the CPU is SQLAlchemy's and the
    driver's); they help only durable commits under load (group commit, 1.4-2.7x at eight
    concurrent writers), which would first need that order kept per session or task."""

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
