"""A store made by the release before this one (revision 0004: sessions, tasks, servers, the
log, schedules and their runs, mail) opens at this release's head with every row intact, and
goes on numbering after what it kept: on SQLite, where every existing install is, and on
PostgreSQL. The old database is made as that release made it: its own revisions, run up to
0004, then rows written with plain SQL in that release's shapes."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import AnvilServer
from notebook_files import write_notebook

from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.mail.store import MailStore
from jupyter_anvil.host.schedules.records import ScheduleRun
from jupyter_anvil.host.schedules.store import ScheduleStore
from jupyter_anvil.host.sessions import hash_token
from jupyter_anvil.host.store import SessionRecord, Store, TaskStore, metadata
from jupyter_anvil.host.store.migrate import head_revision, upgrade_to

RELEASE_BEFORE = "0004"
NOW = float(int(time.time()) - 60)  # recent: the server prunes old tasks, mail and sessions
TASK_ID = "t" * 25  # the shapes of the ids the API takes
MAIL_ID = "m" * 26
RAW_MAIL = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: kept\r\n\r\nbody \xe9\x00 bytes\r\n"
SESSION_DATA = {"n": {"v": 41, "objects": []}, "when": {"v": None, "objects": [{"path": [], "type": "datetime"}]}}


def write_rows_as_the_release_before(url: str) -> None:
    engine = sa.create_engine(url)
    rows: list[tuple[str, dict[str, Any]]] = [
        (
            "INSERT INTO anvil_sessions VALUES ('h1', 's1', 'shop', 'browser', :data, :now, :now)",
            {"data": json.dumps(SESSION_DATA), "now": NOW},
        ),
        (
            "INSERT INTO anvil_servers VALUES ('gone-server', 'old-host', 1, NULL, :now, :now)",
            {"now": NOW},
        ),
        (
            "INSERT INTO anvil_tasks (id, app, name, status, launched, started, ended, state, result, error,"
            " traceback, launched_by, output, output_dropped, owner, schedule_id) VALUES (:task, 'shop', 'report',"
            " 'completed', :now, :now, :now, :state, :result, NULL, NULL, :by, 'printed\n', 0, 'gone-server',"
            " 'sched1')",
            {
                "task": TASK_ID,
                "now": NOW,
                "state": json.dumps({"v": {"done": 1}, "objects": []}),
                "result": json.dumps({"v": 42, "objects": [], "media": {}}),
                "by": json.dumps({"client": {"type": "scheduled"}}),
            },
        ),
        (
            "INSERT INTO anvil_schedules VALUES ('sched1', 'shop', 'report', 'nightly', :spec,"
            " 'UTC', 'run_once', '[]', '{}', 'notebook', :paused, :next, :now, 'launched', :task, NULL, :now,"
            " :now, 3)",
            {
                "task": TASK_ID,
                "spec": json.dumps("every day at 02:00"),
                "paused": False,
                "next": NOW + 86400,
                "now": NOW,
            },
        ),
        (
            "INSERT INTO anvil_schedule_runs (schedule_id, app, due, at, task_id, outcome, reason, server)"
            " VALUES ('sched1', 'shop', :now, :now, :task, 'launched', '', 'gone-server')",
            {"task": TASK_ID, "now": NOW},
        ),
        (
            "INSERT INTO anvil_mail VALUES (:mail, 'shop', 'inbox', 'handled', :now, :now, '<id@example.com>',"
            " 'a@example.com', '[\"b@example.com\"]', 'a@example.com', 'b@example.com', 'kept', :size, 0, NULL,"
            " '', NULL, NULL, NULL, NULL, :raw)",
            {"mail": MAIL_ID, "now": NOW, "size": len(RAW_MAIL), "raw": RAW_MAIL},
        ),
    ]
    with engine.begin() as db:
        for statement, values in rows:
            db.execute(sa.text(statement), values)
        for n in (1, 2, 3):
            db.execute(
                sa.text(
                    "INSERT INTO anvil_log (time, app, function, call_id, stream, text)"
                    " VALUES (:now, 'shop', 'buy', 'c1', 'stdout', :text)"
                ),
                {"now": NOW, "text": f"line {n}"},
            )
    engine.dispose()


async def test_a_store_of_the_release_before_opens_at_head_with_every_row(database_url: str) -> None:
    upgrade_to(database_url, RELEASE_BEFORE)
    write_rows_as_the_release_before(database_url)
    store = Store(database_url)
    store.create_schema()
    try:
        with store.engine.connect() as db:
            assert db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
            assert list(compare_metadata(MigrationContext.configure(db), metadata)) == []
        assert await store.load_session("h1", 0) == SessionRecord("h1", "s1", "shop", "browser", SESSION_DATA, NOW, NOW)
        task = await TaskStore(store).get(TASK_ID)
        assert task is not None and (task.status, task.owner, task.schedule_id) == (
            "completed",
            "gone-server",
            "sched1",
        )
        assert task.result == {"v": 42, "objects": [], "media": {}} and task.output == "printed\n"
        schedules = ScheduleStore(store)
        (schedule,) = await schedules.rows("shop")
        assert (schedule.name, schedule.version, schedule.paused, schedule.next_run) == (
            "nightly",
            3,
            False,
            NOW + 86400,
        )
        (run,) = await schedules.runs("sched1")
        assert (run.task_id, run.outcome, run.server) == (TASK_ID, "launched", "gone-server")
        mail = await MailStore(store).get(MAIL_ID)
        assert mail is not None and mail.raw == RAW_MAIL and mail.recipients == ["b@example.com"]

        # it goes on: numbers after the kept ones, writes that bump the kept versions
        log = AppLog(store)
        log.write("shop", "buy", "c2", "stdout", "after the upgrade")
        await log.flush()
        assert [(r["seq"], r["text"]) for r in await log.read("shop", since=3)] == [(4, "after the upgrade")]
        stored, row = await schedules.record_run(
            ScheduleRun(0, "sched1", "shop", NOW + 1, NOW + 1, None, "skipped", "missed", None),
            last_run=None,
            history_limit=10,
            now=NOW + 1,
        )
        assert stored is not None and stored.seq == run.seq + 1 and row is not None and row.version == 4
        assert await store.save_session_changes("h1", {"m": {"v": 1, "objects": []}}, [], touch=True)
    finally:
        store.close()
    again = Store(database_url)  # a second start changes nothing
    again.create_schema()
    try:
        assert len(await AppLog(again).read("shop")) == 4
    finally:
        again.close()


# -- the real server on the SQLite store the release before left ---------------------------------

SHOP = """
from jupyter_anvil import server

@server.callable
def bump():
    server.session["n"] = server.session.get("n", 0) + 1
    return server.session["n"]
"""
TOKEN = "ReleaseBeforeSessionToken_" + "x" * 17


def test_the_server_opens_the_sqlite_store_of_the_release_before(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("upgrade-root")
    write_notebook(root / "shop.ipynb", [SHOP], {"kernels": {"min": 1, "max": 1}})
    server = AnvilServer(root, tmp_path_factory.mktemp("upgrade-server"))
    folder = server.workdir / "jupyter_data_dir" / "jupyter_anvil"
    folder.mkdir(mode=0o700, parents=True)
    url = f"sqlite:///{folder / 'anvil.db'}"
    upgrade_to(url, RELEASE_BEFORE)
    write_rows_as_the_release_before(url)
    engine = sa.create_engine(url)
    with engine.begin() as db:  # the session's token, as that release hashed it, used a moment ago
        db.execute(
            sa.text("UPDATE anvil_sessions SET token_hash = :h, last_used = :t"),
            {"h": hash_token(TOKEN), "t": time.time()},
        )
    engine.dispose()
    server.start(wait_for=("shop",))
    try:
        resumed = server.post("shop", "bump", {"args": []}, headers={"X-Anvil-Session": TOKEN})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["response"] == 42
        task = server.admin(f"anvil/api/tasks/{TASK_ID}")
        assert task["status"] == "completed" and task["result"] == 42
        assert [m["id"] for m in server.admin("anvil/api/mail", app="shop", box="inbox")["messages"]] == [MAIL_ID]
        raw = httpx.get(
            f"{server.url}anvil/api/mail/{MAIL_ID}/raw", headers={"Authorization": f"token {server.token}"}, timeout=30
        )
        assert raw.content == RAW_MAIL
        texts = [r["text"] for r in server.admin("anvil/api/logs", app="shop")["records"]]
        assert texts[:3] == ["line 1", "line 2", "line 3"]
    finally:
        server.stop()


async def test_idempotency_keys_of_live_sessions_are_kept_by_token_at_revision_0008(database_url: str) -> None:
    """Keys were scoped by the session's public id until 0007; from 0008 by its token's hash,
    which outlives the session in a client's queue: the keys of live sessions carry over
    (their outcomes still replayed), those of sessions already gone are dropped."""
    upgrade_to(database_url, "0007")
    engine = sa.create_engine(database_url)
    with engine.begin() as db:
        db.execute(
            sa.text("INSERT INTO anvil_sessions VALUES ('hash-live', 'id-live', 'shop', 'browser', '{}', :now, :now)"),
            {"now": NOW},
        )
        for session_id, key in (("id-live", "key-kept-1"), ("id-gone", "key-gone-1")):
            db.execute(
                sa.text(
                    "INSERT INTO anvil_idempotency (app, session_id, key, state, owner, created, finished, reply, size)"
                    " VALUES ('shop', :s, :k, 'done', 'server-1', :now, :now, :reply, 3)"
                ),
                {"s": session_id, "k": key, "now": NOW, "reply": b"abc"},
            )
    engine.dispose()
    store = Store(database_url)
    store.create_schema()
    try:
        with store.engine.connect() as db:
            rows = db.execute(sa.text("SELECT app, session_token_hash, key, reply FROM anvil_idempotency")).all()
        assert [tuple(r) for r in rows] == [("shop", "hash-live", "key-kept-1", b"abc")]
    finally:
        store.close()
