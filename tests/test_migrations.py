"""The store's migrations (Alembic, at start-up): databases made by earlier releases,
before Alembic, open with everything in them intact, at the head revision."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import AnvilServer
from notebook_files import write_notebook

from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.sessions import hash_token
from jupyter_anvil.host.store import SessionRecord, Store, TaskStore
from jupyter_anvil.host.store.migrate import head_revision

# What SQLAlchemy's create_all made of the release before issue 13's tables (0e46508),
# on SQLite: kept here as DDL, since that code is not importable any more.
RELEASE_BEFORE_ISSUE_13 = [
    """CREATE TABLE anvil_sessions (
        token_hash VARCHAR(64) NOT NULL, id VARCHAR(32) NOT NULL, app VARCHAR(255) NOT NULL,
        client_type VARCHAR(32) NOT NULL, data TEXT NOT NULL, created FLOAT NOT NULL,
        last_used FLOAT NOT NULL, PRIMARY KEY (token_hash), UNIQUE (id))""",
    """CREATE TABLE anvil_tasks (
        id VARCHAR(32) NOT NULL, app VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL,
        status VARCHAR(16) NOT NULL, launched FLOAT NOT NULL, started FLOAT, ended FLOAT,
        state TEXT, result TEXT, error TEXT, traceback TEXT, launched_by TEXT,
        output TEXT NOT NULL, output_dropped INTEGER NOT NULL, PRIMARY KEY (id))""",
    "CREATE INDEX ix_anvil_tasks_app ON anvil_tasks (app)",
    "CREATE INDEX ix_anvil_tasks_status ON anvil_tasks (status)",
    "CREATE INDEX ix_anvil_tasks_launched ON anvil_tasks (launched)",
    """CREATE TABLE anvil_log (
        seq INTEGER NOT NULL, time FLOAT NOT NULL, app VARCHAR(255) NOT NULL,
        function VARCHAR(255) NOT NULL, call_id VARCHAR(64) NOT NULL, stream VARCHAR(16) NOT NULL,
        text TEXT NOT NULL, PRIMARY KEY (seq))""",
    "CREATE INDEX ix_anvil_log_app ON anvil_log (app)",
]

SERVERS_TABLE = """CREATE TABLE anvil_servers (
    id VARCHAR(32) NOT NULL, host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, pid_started VARCHAR(32),
    started FLOAT NOT NULL, beat FLOAT NOT NULL, PRIMARY KEY (id))"""

# issue 13's code on a new database (create_all: owner in the table, the log AUTOINCREMENT)
ISSUE_13 = [
    RELEASE_BEFORE_ISSUE_13[0],
    RELEASE_BEFORE_ISSUE_13[1].replace("PRIMARY KEY (id))", "owner VARCHAR(32), PRIMARY KEY (id))"),
    *RELEASE_BEFORE_ISSUE_13[2:5],
    SERVERS_TABLE,
    """CREATE TABLE anvil_log (
        seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, time FLOAT NOT NULL, app VARCHAR(255) NOT NULL,
        function VARCHAR(255) NOT NULL, call_id VARCHAR(64) NOT NULL, stream VARCHAR(16) NOT NULL,
        text TEXT NOT NULL)""",
    RELEASE_BEFORE_ISSUE_13[6],
]

# issue 13's code on a database of the release before: upgrade_schema added owner,
# create_all the servers' table; the log stayed as it was
ISSUE_13_ON_AN_OLDER_DATABASE = [
    *RELEASE_BEFORE_ISSUE_13,
    "ALTER TABLE anvil_tasks ADD COLUMN owner VARCHAR(32)",
    SERVERS_TABLE,
]

TOKEN = "OldReleaseSessionToken_" + "x" * 20  # the shape of secrets.token_urlsafe(32)
NOW = time.time()


def make_database(path: Path, ddl: list[str]) -> None:
    """A database as an older release left it: its tables, a session, two task records
    (one finished, one left running by a server that is gone) and three log records."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    with db:
        for statement in ddl:
            db.execute(statement)
        db.execute(
            "INSERT INTO anvil_sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (hash_token(TOKEN), "s" * 32, "counter", "browser", json.dumps({"n": {"v": 41, "objects": []}}), NOW, NOW),
        )
        for task_id, status in (("a" * 25, "completed"), ("b" * 25, "running")):
            db.execute(
                "INSERT INTO anvil_tasks (id, app, name, status, launched, started, ended, state, result, error,"
                " traceback, launched_by, output, output_dropped) VALUES (?, 'counter', 'work', ?, ?, ?, ?, ?, ?,"
                " NULL, NULL, NULL, 'printed\n', 0)",
                (
                    task_id,
                    status,
                    NOW - 60,
                    NOW - 59,
                    NOW - 1 if status == "completed" else None,
                    json.dumps({"v": {"done": 1}, "objects": []}),
                    json.dumps({"v": 42, "objects": [], "media": {}}) if status == "completed" else None,
                ),
            )
        for seq in (1, 2, 3):
            db.execute(
                "INSERT INTO anvil_log VALUES (?, ?, 'counter', 'bump', 'c1', 'stdout', ?)", (seq, NOW, f"line {seq}")
            )
    db.close()


def schema(path: Path) -> tuple[set[str], set[str], str, str | None]:
    """The tables, anvil_tasks' columns, anvil_log's DDL and the alembic revision."""
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(anvil_tasks)")}
        log_sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'anvil_log'").fetchone()[0]
        revisions = [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]
        assert len(revisions) <= 1, revisions
        return tables, columns, log_sql, revisions[0] if revisions else None
    finally:
        db.close()


def open_store(path: Path) -> Store:
    store = Store(f"sqlite:///{path}")
    store.create_schema()
    return store


def assert_at_head(path: Path) -> None:
    tables, columns, log_sql, revision = schema(path)
    assert {"anvil_sessions", "anvil_tasks", "anvil_log", "anvil_servers", "alembic_version"} <= tables
    assert {"anvil_schedules", "anvil_schedule_runs", "anvil_mail", "anvil_idempotency"} <= tables
    assert {"owner", "schedule_id"} <= columns
    assert "AUTOINCREMENT" in log_sql.upper()
    assert revision == head_revision() == "0008"
    db = sqlite3.connect(path)
    try:
        keyed = [row[1] for row in db.execute("PRAGMA table_info(anvil_idempotency)")]
        columns_info = sorted(db.execute("PRAGMA table_info(anvil_idempotency)"), key=lambda r: r[5])
        primary = [row[1] for row in columns_info if row[5]]
    finally:
        db.close()
    assert keyed == ["app", "session_token_hash", "key", "state", "owner", "created", "finished", "reply", "size"]
    assert primary == ["app", "session_token_hash", "key"]


async def assert_rows_intact(store: Store) -> None:
    session = await store.load_session(hash_token(TOKEN), idle_after=0)
    assert session == SessionRecord(
        hash_token(TOKEN), "s" * 32, "counter", "browser", {"n": {"v": 41, "objects": []}}, NOW, NOW
    )
    tasks = TaskStore(store)
    done = await tasks.get("a" * 25)
    assert done is not None and done.status == "completed" and done.owner is None
    assert done.result == {"v": 42, "objects": [], "media": {}} and done.output == "printed\n"
    assert {t.id for t in await tasks.list(app="counter")} == {"a" * 25, "b" * 25}
    log = AppLog(store)
    assert [(r["seq"], r["text"]) for r in await log.read("counter")] == [(1, "line 1"), (2, "line 2"), (3, "line 3")]


@pytest.mark.parametrize(
    "ddl",
    [RELEASE_BEFORE_ISSUE_13, ISSUE_13, ISSUE_13_ON_AN_OLDER_DATABASE],
    ids=["release-before-issue-13", "issue-13", "issue-13-on-an-older-database"],
)
async def test_a_database_from_before_alembic_opens_intact_at_head(tmp_path: Path, ddl: list[str]) -> None:
    path = tmp_path / "anvil.db"
    make_database(path, ddl)
    store = open_store(path)
    try:
        assert_at_head(path)
        await assert_rows_intact(store)
        # the database numbers new log records, after the ones kept, and never reuses one
        log = AppLog(store)
        log.write("counter", "bump", "c2", "stdout", "new line")
        await log.flush()
        assert [r["seq"] for r in await log.read("counter", since=3)] == [4]
        with store.engine.begin() as db:
            db.execute(sa.text("DELETE FROM anvil_log WHERE seq = 4"))
        log.write("counter", "bump", "c3", "stdout", "after a delete")
        await log.flush()
        assert [r["seq"] for r in await log.read("counter", since=3)] == [5]
    finally:
        store.close()
    # opening again changes nothing
    before = schema(path)
    again = open_store(path)
    try:
        assert schema(path) == before
        assert len(await AppLog(again).read("counter")) == 4
    finally:
        again.close()


async def test_a_new_database_is_made_at_head_and_opening_it_again_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "new" / "anvil.db"
    open_store(path).close()
    assert_at_head(path)
    first = schema(path)
    store = open_store(path)
    try:
        assert schema(path) == first
        await store.insert_session(SessionRecord("h" * 64, "i" * 32, "app", "browser", {}, NOW, NOW))
        assert await store.load_session("h" * 64, idle_after=0) is not None
    finally:
        store.close()


def open_at_once(url: str, servers: int = 3) -> None:
    """``servers`` threads open the store at ``url`` (each migrating it as a starting server
    does) at the same instant; every one must succeed."""
    errors: list[BaseException] = []
    stores: list[Store] = []
    start = threading.Barrier(servers)

    def open_one() -> None:
        start.wait()
        try:
            store = Store(url)
            store.create_schema()
            stores.append(store)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(servers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    assert not errors and len(stores) == servers, errors


def test_two_servers_migrating_one_new_database_at_once_both_succeed(tmp_path: Path) -> None:
    # each opens the database itself, as two processes would; the first to begin holds
    # SQLite's write lock through the whole upgrade, the second then finds it done
    path = tmp_path / "anvil.db"
    make_database(path, RELEASE_BEFORE_ISSUE_13)
    open_at_once(f"sqlite:///{path}")
    assert_at_head(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM anvil_log").fetchone() == (3,)
    db.close()


def test_a_database_with_only_some_of_the_tables_is_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "anvil.db"
    make_database(path, RELEASE_BEFORE_ISSUE_13)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE anvil_tasks")
    db.close()
    with pytest.raises(RuntimeError, match="lacks the tables anvil_tasks"):
        Store(f"sqlite:///{path}").create_schema()
    db = sqlite3.connect(path)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"anvil_sessions", "anvil_log"}  # nothing stamped, nothing changed


# -- the real server on a database of the release before issue 13 --------------------------------

COUNTER = """
from jupyter_anvil import server

@server.callable
def bump():
    server.session["n"] = server.session.get("n", 0) + 1
    return server.session["n"]
"""


def test_the_server_opens_an_old_database_resuming_its_sessions_and_listing_its_tasks(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("migrate-root")
    write_notebook(root / "counter.ipynb", [COUNTER], {"kernels": {"min": 1, "max": 1}})
    server = AnvilServer(root, tmp_path_factory.mktemp("migrate-server"))
    database = server.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db"
    make_database(database, RELEASE_BEFORE_ISSUE_13)
    server.start(wait_for=("counter",))
    try:
        resumed = server.post("counter", "bump", {"args": [], "kwargs": {}}, headers={"X-Anvil-Session": TOKEN})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["response"] == 42  # the session stored by the old release, resumed
        listed = {t["id"]: t for t in server.admin("anvil/api/tasks", app="counter")["tasks"]}
        assert set(listed) == {"a" * 25, "b" * 25}
        assert listed["a" * 25]["status"] == "completed"
        assert listed["b" * 25]["status"] == "missing"  # its server is gone
        record = server.admin(f"anvil/api/tasks/{'a' * 25}")
        assert record["result"] == 42 and record["state"] == {"done": 1}
        texts = [r["text"] for r in server.admin("anvil/api/logs", app="counter")["records"]]
        assert texts[:3] == ["line 1", "line 2", "line 3"]
    finally:
        server.stop()
    assert_at_head(database)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_a_database_from_a_newer_release_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "anvil.db"
    open_store(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.close()
    with pytest.raises(RuntimeError, match="at revision 9999, from a newer release"):
        Store(f"sqlite:///{path}").create_schema()
    assert schema(path)[3] == "9999"


# -- PostgreSQL (the test run's own cluster: tests/postgres.py) --------------------------------------


async def test_a_postgresql_database_of_the_release_before_issue_13_is_upgraded(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as db:
        for table in ("alembic_version", "anvil_servers", "anvil_log", "anvil_tasks", "anvil_sessions"):
            db.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        for statement in RELEASE_BEFORE_ISSUE_13:  # portable SQL: PostgreSQL takes it as it is
            db.execute(sa.text(statement))
        db.execute(
            sa.text("INSERT INTO anvil_log VALUES (:seq, 0, 'counter', 'bump', 'c1', 'stdout', 'old')"),
            [{"seq": 1}, {"seq": 7}],
        )
    engine.dispose()
    store = Store(postgres_url)
    store.create_schema()
    try:
        store.create_schema()  # again: a no-op
        log = AppLog(store)
        log.write("counter", "bump", "c2", "stdout", "new")
        await log.flush()
        assert [r["seq"] for r in await log.read("counter")] == [1, 7, 8]  # numbered by the database, after
        with store.engine.begin() as db:
            assert db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
            assert "owner" in {c["name"] for c in sa.inspect(db).get_columns("anvil_tasks")}
            assert sa.inspect(db).has_table("anvil_servers")
    finally:
        store.close()


def test_servers_migrating_one_new_postgresql_database_at_once_all_succeed(postgres_url: str) -> None:
    # the advisory lock (migrate.py): the first to take it makes the schema, the others then
    # find it at head; without it two would create the same tables and one would fail
    open_at_once(postgres_url)
    engine = sa.create_engine(postgres_url)
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
    engine.dispose()


async def test_log_and_schedule_run_numbers_go_past_32_bits_on_postgresql(postgres_url: str) -> None:
    # migration 0006: the columns and their sequences are BIGINT, so numbering goes on past
    # 2**31 - 1 instead of failing every write of the app log
    store = Store(postgres_url)
    store.create_schema()
    try:
        with store.engine.begin() as db:
            for table in ("anvil_log", "anvil_schedule_runs"):
                column = {c["name"]: c for c in sa.inspect(db).get_columns(table)}["seq"]
                assert isinstance(column["type"], sa.BigInteger), (table, column["type"])
                sequence = db.execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'seq')")).scalar()
                db.execute(sa.text(f"SELECT setval('{sequence}', {2**31 + 5})"))
        log = AppLog(store)
        log.write("counter", "bump", "c1", "stdout", "past 32 bits")
        await log.flush()
        assert [r["seq"] for r in await log.read("counter")] == [2**31 + 6]
        assert await log.read("counter", since=2**31 + 6) == []
    finally:
        store.close()
