"""Task and app statuses are defined once (protocol.py, host/apps.py): the tuples, the
helpers and the Literal types agree; task records are dataclasses, as stored."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

from jupyter_anvil import protocol
from jupyter_anvil.host import apps
from jupyter_anvil.host.logs import LOG_STREAMS, AppLog
from jupyter_anvil.host.store import Store, TaskRecord, TaskStore, TaskSummary
from jupyter_anvil.host.store.tables import tasks as tasks_table


def test_task_statuses_split_into_unfinished_and_finished() -> None:
    assert protocol.TASK_STATUSES == ("queued", "running", "completed", "failed", "killed", "missing")
    assert set(protocol.UNFINISHED_TASK_STATUSES) | set(protocol.FINISHED_TASK_STATUSES) == set(protocol.TASK_STATUSES)
    assert not set(protocol.UNFINISHED_TASK_STATUSES) & set(protocol.FINISHED_TASK_STATUSES)
    assert [protocol.is_finished(s) for s in protocol.TASK_STATUSES] == [False, False, True, True, True, True]
    assert not protocol.is_finished("done") and not protocol.is_finished(None)


def test_app_statuses() -> None:
    assert apps.APP_STATUSES == get_args(apps.AppStatus) == ("building", "loading", "ready", "error", "stopped")
    assert apps.App("x").status == "loading"


# -- task records ---------------------------------------------------------------------------------
async def test_a_task_record_round_trips_through_the_store(store: Store) -> None:
    tasks = TaskStore(store)
    record = TaskRecord(
        id="t" * 25, app="app", name="job", status="failed", launched=1.5, started=2.5, ended=3.5,
        state={"v": {"n": 1}, "objects": []}, error={"type": "ValueError", "message": "no", "trace": [["<cell>", 3]]},
        launched_by={"session_id": "s"}, output_dropped=4, owner="me", result=None, traceback="Traceback...",
        output="printed",
    )  # fmt: skip
    await tasks.insert(record)
    assert await tasks.get(record.id) == record
    (listed,) = await tasks.list()
    assert type(listed) is TaskSummary and listed == record.summary()  # no output, traceback or result
    await tasks.update(record.id, {"status": "completed", "error": None, "result": {"v": 1, "objects": []}})
    stored = await tasks.get(record.id)
    assert stored is not None and (stored.status, stored.error, stored.result) == (
        "completed",
        None,
        {"v": 1, "objects": []},
    )


def test_a_summary_is_a_snapshot() -> None:
    record = TaskRecord(id="t", app="app", name="job", status="queued", launched=1.0)
    summary = record.summary()
    record.status, record.started = "running", 2.0
    assert (summary.status, summary.started) == ("queued", None)
    assert [f.name for f in fields(TaskSummary)] == [
        c.name for c in tasks_table.c if c.name in {f.name for f in fields(TaskSummary)}
    ]


# -- log records --------------------------------------------------------------------------------------
async def test_a_log_record_has_one_of_the_declared_streams(store: Store) -> None:
    """A kernel names the stream of what it prints: one it makes up is filed as its print
    (under the call's printed limit), so a record's stream is always a LogStream."""
    app_log = AppLog(store)
    app_log.write("app", "f", "call", "x" * 40, "made up")
    app_log.write("app", "f", "call", "traceback", "Traceback...")
    records = await app_log.read("app")
    assert [(r["stream"], r["text"]) for r in records] == [("stdout", "made up"), ("traceback", "Traceback...")]
    assert set(LOG_STREAMS) == {"stdout", "stderr", "traceback", "system"}
