"""The schedules' tables (revision 0003) and ScheduleStore on a temp SQLite file: a database
at revision 0002 upgrades with its rows intact, writes are all-or-nothing against the
versions they were computed from, a claim is won once, and the history is bounded."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.schedules.records import ScheduleRun
from jupyter_anvil.host.schedules.store import (
    Claim,
    Delete,
    Insert,
    ScheduleRow,
    ScheduleStore,
    Update,
    spec_json,
)
from jupyter_anvil.host.store import SessionRecord, Store, TaskRecord, TaskStore, metadata
from jupyter_anvil.host.store.migrate import head_revision, upgrade_to

NOW = 1_700_000_000.0


# -- the migration ------------------------------------------------------------------------------


def differences(store: Store) -> list[Any]:
    """What the tables of tables.py have that the migrated database has not, or the reverse."""
    with store.engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_a_database_at_revision_0002_upgrades_with_its_rows_intact(database_url: str) -> None:
    upgrade_to(database_url, "0002")
    engine = sa.create_engine(database_url)
    with engine.begin() as db:
        assert db.execute(sa.text("SELECT version_num FROM alembic_version")).one() == ("0002",)
        db.execute(
            sa.text("INSERT INTO anvil_sessions VALUES ('h', 's', 'app', 'browser', :data, :now, :now)"),
            {"data": json.dumps({"n": {"v": 1, "objects": []}}), "now": NOW},
        )
        db.execute(
            sa.text(
                "INSERT INTO anvil_tasks (id, app, name, status, launched, output, output_dropped, owner)"
                " VALUES ('t1', 'app', 'job', 'completed', :now, 'printed', 0, 'server1')"
            ),
            {"now": NOW},
        )
        db.execute(sa.text("INSERT INTO anvil_log (time, app, function, call_id, stream, text) VALUES (:now, 'app',"
                           " 'f', 'c', 'stdout', 'kept')"), {"now": NOW})  # fmt: skip
    engine.dispose()

    store = Store(database_url)
    store.create_schema()
    try:
        assert head_revision() == "0008"
        assert differences(store) == []  # the migrated tables are those of tables.py
        assert await store.load_session("h", 0) == SessionRecord(
            "h", "s", "app", "browser", {"n": {"v": 1, "objects": []}}, NOW, NOW
        )
        tasks = TaskStore(store)
        old = await tasks.get("t1")
        assert old is not None and old.output == "printed" and old.owner == "server1"
        assert old.schedule_id is None  # no schedule launched the tasks already there
        await tasks.insert(
            TaskRecord(id="t2", app="app", name="job", status="queued", launched=NOW, schedule_id="s" * 24)
        )
        launched = await tasks.get("t2")
        assert launched is not None and launched.schedule_id == "s" * 24
        assert [r["text"] for r in await AppLog(store).read("app")] == ["kept"]
        schedules = ScheduleStore(store)
        assert await schedules.rows() == []
        assert await schedules.apply([Insert(row("a"))], NOW)
        assert [r.id for r in await schedules.rows()] == ["a"]
    finally:
        store.close()


async def test_a_new_database_has_the_tables_of_tables_py(store: Store) -> None:
    assert differences(store) == []


# -- writes against versions ------------------------------------------------------------------------
def row(schedule_id: str, app: str = "app", **values: Any) -> ScheduleRow:
    fields: dict[str, Any] = {
        "id": schedule_id, "app": app, "task": "job", "name": schedule_id, "spec": "every 10 seconds", "tz": "UTC",
        "misfire": "run_once", "args": [1, "two"], "kwargs": {"k": [3]}, "source": "notebook", "paused": False,
        "next_run": NOW + 10, "last_run": None, "last_status": None, "last_task_id": None, "problem": None,
        "created": NOW, "updated": NOW, "version": 1,
    }  # fmt: skip
    return ScheduleRow(**{**fields, **values})


async def test_rows_keep_their_json_fields_and_an_insert_is_version_1(store: Store) -> None:
    schedules = ScheduleStore(store)
    time_spec = {"every": "day", "n": 1, "at": {"hour": 3, "minute": 0}}
    assert await schedules.apply([Insert(row("a")), Insert(row("b", spec=time_spec, paused=True))], NOW + 1)
    a, b = await schedules.get("a"), await schedules.get("b")
    assert a == row("a", updated=NOW + 1)
    assert b is not None and b.spec == time_spec and b.paused is True and b.version == 1
    with store.engine.begin() as db:  # the spec as one canonical text: keys sorted
        text = db.execute(sa.text("SELECT spec FROM anvil_schedules WHERE id = 'b'")).scalar()
    assert text == spec_json(time_spec) == spec_json({"n": 1, "at": {"minute": 0, "hour": 3}, "every": "day"})
    assert await schedules.get("nope") is None


async def test_a_write_from_a_stale_read_changes_nothing(store: Store) -> None:
    schedules = ScheduleStore(store)
    assert await schedules.apply([Insert(row("a")), Insert(row("b"))], NOW)
    assert await schedules.apply([Update("a", 1, {"paused": True, "next_run": None})], NOW + 1)
    a = await schedules.get("a")
    assert a is not None and (a.paused, a.next_run, a.version, a.updated) == (True, None, 2, NOW + 1)
    # computed from version 1 of "a": refused, and the change to "b" in the same batch with it
    assert not await schedules.apply([Update("b", 1, {"name": "renamed"}), Update("a", 1, {"paused": False})], NOW)
    assert not await schedules.apply([Delete("a", 1)], NOW)
    assert not await schedules.apply([Insert(row("a"))], NOW)  # taken
    b = await schedules.get("b")
    assert b is not None and (b.name, b.version) == ("b", 1)
    assert await schedules.get("a") == a
    assert await schedules.apply([Delete("a", 2)], NOW)
    assert await schedules.get("a") is None


async def test_changes_reads_only_what_changed_of_the_apps_asked(store: Store) -> None:
    schedules = ScheduleStore(store)
    assert await schedules.apply([Insert(row("a")), Insert(row("b")), Insert(row("c", app="other"))], NOW)
    changed, present = await schedules.changes(["app"], {})
    assert sorted(r.id for r in changed) == ["a", "b"] and present == {"a", "b"}
    changed, present = await schedules.changes(["app"], {"a": 1, "b": 1})
    assert changed == [] and present == {"a", "b"}
    assert await schedules.apply([Update("b", 1, {"tz": "Europe/Paris"}), Delete("a", 1)], NOW)
    changed, present = await schedules.changes(["app"], {"a": 1, "b": 1})
    assert [(r.id, r.tz, r.version) for r in changed] == [("b", "Europe/Paris", 2)] and present == {"b"}
    many = [Insert(row(f"m{n:04}")) for n in range(1200)]  # more ids than one IN (...) takes
    assert await schedules.apply(many, NOW)
    changed, present = await schedules.changes(["app"], {})
    assert len(changed) == len(present) == 1201
    assert len(await schedules.find([f"m{n:04}" for n in range(1200)] + ["c", "nope"])) == 1201


# -- claims ------------------------------------------------------------------------------------------
async def test_a_claim_is_won_once_and_never_on_a_paused_or_broken_schedule(store: Store) -> None:
    schedules = ScheduleStore(store)
    assert await schedules.apply(
        [Insert(row("a")), Insert(row("p", paused=True)), Insert(row("x", problem="bad spec"))], NOW
    )
    due = NOW + 10
    claims = [Claim("a", due, due + 10, last_run=due), Claim("p", due, due + 10, due), Claim("x", due, due + 10, due)]
    first = await schedules.claim(claims, NOW + 11)
    assert [(r.claim.schedule_id, r.won) for r in first] == [("a", True), ("p", False), ("x", False)]
    a = first[0].row
    assert a is not None and (a.next_run, a.last_run, a.version, a.updated) == (due + 10, due, 2, NOW + 11)
    again = await schedules.claim([claims[0]], NOW + 11)  # a second server with the same read
    assert not again[0].won and again[0].row == a
    # a missed run that is skipped moves next_run on and leaves last_run
    (skipped,) = await schedules.claim([Claim("a", due + 10, due + 30, last_run=None)], NOW + 25)
    assert skipped.won and skipped.row is not None and (skipped.row.next_run, skipped.row.last_run) == (due + 30, due)
    (gone,) = await schedules.claim([Claim("nope", due, due + 10, due)], NOW)
    assert not gone.won and gone.row is None


# -- runs ----------------------------------------------------------------------------------------------
def run(schedule_id: str, outcome: Any = "launched", task_id: str | None = "task1", due: float = NOW) -> ScheduleRun:
    return ScheduleRun(0, schedule_id, "app", due, due + 0.01, task_id, outcome, "", "server1")


async def test_runs_are_recorded_bounded_and_paged_newest_first(store: Store) -> None:
    schedules = ScheduleStore(store)
    assert await schedules.apply([Insert(row("a")), Insert(row("b"))], NOW)
    for n in range(7):
        stored, now_row = await schedules.record_run(
            run("a", task_id=f"t{n}", due=NOW + n), last_run=None, history_limit=5, now=NOW + n
        )
        assert stored is not None and stored.task_id == f"t{n}" and stored.seq > 0
        assert now_row is not None and now_row.last_task_id == f"t{n}" and now_row.last_status == "launched"
    await schedules.record_run(run("b"), last_run=None, history_limit=5, now=NOW)
    # a skip and a failure leave the last task (the one the no-overlap rule checks)
    _, after_skip = await schedules.record_run(
        ScheduleRun(0, "a", "app", NOW + 7, NOW + 7, None, "skipped", "previous run t6 still running", None),
        last_run=None, history_limit=5, now=NOW + 7,
    )  # fmt: skip
    assert after_skip is not None and (after_skip.last_status, after_skip.last_task_id) == ("skipped", "t6")
    _, after_manual = await schedules.record_run(
        run("a", outcome="failed", task_id=None, due=NOW + 8), last_run=NOW + 8, history_limit=5, now=NOW + 8
    )
    assert after_manual is not None and (after_manual.last_status, after_manual.last_run) == ("failed", NOW + 8)
    newest = await schedules.runs("a", limit=3)
    assert [r.outcome for r in newest] == ["failed", "skipped", "launched"]
    assert [r.task_id for r in await schedules.runs("a", limit=10, before=newest[-1].seq)] == ["t5", "t4"]
    assert len(await schedules.runs("a", limit=100)) == 5  # bounded: the oldest went
    assert len(await schedules.runs("b")) == 1  # another schedule's history is its own
    # a schedule deleted meanwhile: nothing kept, its runs gone with it
    assert await schedules.apply([Delete("a", after_manual.version)], NOW)
    assert await schedules.record_run(run("a"), last_run=None, history_limit=5, now=NOW) == (None, None)
    assert await schedules.runs("a") == []
    with store.engine.begin() as db:
        assert db.execute(sa.text("SELECT count(*) FROM anvil_schedule_runs")).scalar() == 1


async def test_run_numbers_are_never_reused(store: Store) -> None:
    schedules = ScheduleStore(store)
    assert await schedules.apply([Insert(row("a")), Insert(row("b"))], NOW)
    first, a = await schedules.record_run(run("a"), last_run=None, history_limit=1, now=NOW)
    assert first is not None and a is not None
    assert await schedules.apply([Delete("a", a.version)], NOW)  # the highest number goes with it
    second, _ = await schedules.record_run(run("b"), last_run=None, history_limit=1, now=NOW)
    assert second is not None and second.seq > first.seq
