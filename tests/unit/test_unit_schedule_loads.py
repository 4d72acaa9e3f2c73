"""What an app's loads do to its schedules (schedules/loads.py), over a real Scheduler and
store: a version's declarations stored with records.definition_id ids, a changed spec that
moves the next run, a spec broken by a save kept (history and paused flag too) with its
problem told once, a declaration gone from the notebook removed, a declared id another row
holds said (with where), and a removal that stops the firing but keeps the rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jupyter_anvil.host.notebooks import AppSpec
from jupyter_anvil.host.schedules.loads import AppSchedules
from jupyter_anvil.host.schedules.records import definition_id
from jupyter_anvil.host.schedules.service import Scheduler
from jupyter_anvil.host.schedules.spec import ScheduleSpecError, parse_spec
from jupyter_anvil.host.schedules.store import Insert, ScheduleRow
from jupyter_anvil.host.store import Store

TASKS = frozenset({"report", "cleanup"})


@dataclass
class FakePool:
    """What a load reads of a version's pool: its background tasks and declarations."""

    schedules: tuple[dict[str, Any], ...] = ()
    background_tasks: frozenset[str] = TASKS


@dataclass
class Launched:
    ids: list[str] = field(default_factory=list)

    async def launch(self, app: str, task: str, args: list[Any], kwargs: dict[str, Any], schedule_id: str) -> str:
        self.ids.append(f"{len(self.ids):025d}")
        return self.ids[-1]

    async def is_running(self, task_id: str) -> bool:
        return False


def declared(name: str, spec: Any = "every day at 09:00", task: str = "report", **more: Any) -> dict[str, Any]:
    return {"name": name, "task": task, "spec": spec, "tz": "UTC", "misfire": "run_once", "args": [], "kwargs": {},
            "cell": 1, **more}  # fmt: skip


def app_spec(entries: Any = None) -> AppSpec:
    return AppSpec("shop", "shop.ipynb", [], Path("shop"), scheduled_tasks=entries)


@pytest.fixture
async def scheduler(store: Store) -> Scheduler:
    return Scheduler(store, Launched())


async def test_a_versions_declarations_are_stored_under_definition_ids(scheduler: Scheduler) -> None:
    loads = AppSchedules(scheduler)
    entries = [{"task_name": "cleanup", "job_id": "QMUPCYEH", "time_spec": {"every": "minute", "n": 10, "at": {}}}]
    pool = FakePool((declared("report", args=[{"v": 1, "objects": []}]),))
    assert await loads.served("shop", app_spec(entries), pool) == []  # type: ignore[arg-type]
    listed = {s.id: s for s in await scheduler.list("shop")}
    assert set(listed) == {definition_id("shop", "notebook", "report"), definition_id("shop", "metadata", "QMUPCYEH")}
    metadata = listed[definition_id("shop", "metadata", "QMUPCYEH")]
    assert (metadata.source, metadata.task, metadata.name, metadata.tz) == ("metadata", "cleanup", "QMUPCYEH", "UTC")
    notebook = listed[definition_id("shop", "notebook", "report")]
    assert notebook.args == [{"v": 1, "objects": []}] and notebook.app_loaded and notebook.next_run is not None


async def test_a_save_that_breaks_a_spec_keeps_the_schedule_and_its_history(scheduler: Scheduler) -> None:
    loads = AppSchedules(scheduler)
    sid = definition_id("shop", "notebook", "report")
    await loads.served("shop", app_spec(), FakePool((declared("report"),)))  # type: ignore[arg-type]
    run = await scheduler.run_now(sid)
    await scheduler.update(sid, paused=True)
    # a save with a typo in the spec: the app's problem says what and where, once
    problems = await loads.served("shop", app_spec(), FakePool((declared("report", "every blue moon"),)))  # type: ignore[arg-type]
    assert len(problems) == 1 and problems[0].startswith("server cell 2: the schedule 'report' of task 'report': ")
    assert "'every blue moon' is not a schedule" in problems[0]
    broken = await scheduler.get(sid)
    assert broken.spec == "every blue moon" and broken.problem and "every blue moon" in broken.problem
    assert broken.next_run is None and broken.paused and broken.last_task_id == run.task_id
    assert [r.seq for r in await scheduler.runs(sid)] == [run.seq]
    # fixed in the next save: the same schedule, its history and pause kept
    assert await loads.served("shop", app_spec(), FakePool((declared("report", "every hour"),))) == []  # type: ignore[arg-type]
    fixed = await scheduler.get(sid)
    assert fixed.problem is None and fixed.paused and fixed.spec == "every hour"
    assert [r.seq for r in await scheduler.runs(sid)] == [run.seq]
    resumed = await scheduler.update(sid, paused=False)
    assert resumed.next_run is not None


async def test_a_changed_spec_moves_the_next_run_and_a_removed_one_goes(scheduler: Scheduler) -> None:
    loads = AppSchedules(scheduler)
    sid = definition_id("shop", "notebook", "report")
    pool = FakePool((declared("report", "every day at 09:00"), declared("nightly", "every day at 03:00")))
    await loads.served("shop", app_spec(), pool)  # type: ignore[arg-type]
    before = await scheduler.get(sid)
    await loads.served("shop", app_spec(), FakePool((declared("report", "every 10 seconds"),)))  # type: ignore[arg-type]
    after = await scheduler.get(sid)
    assert after.next_run is not None and before.next_run is not None and after.next_run < before.next_run
    assert after.next_run - after.updated <= 10
    assert [s.id for s in await scheduler.list("shop")] == [sid]  # nightly is gone


async def test_a_broken_metadata_entry_is_kept_and_a_bad_task_is_not(scheduler: Scheduler) -> None:
    loads = AppSchedules(scheduler)
    entries = [
        {"task_name": "cleanup", "job_id": "J1", "time_spec": {"every": "fortnight"}},
        {"task_name": "nope", "job_id": "J2", "time_spec": {"every": "day"}},
    ]
    problems = await loads.served("shop", app_spec(entries), FakePool())  # type: ignore[arg-type]
    where = "metadata.jupyter_anvil.scheduled_tasks"
    assert [p.split(" ")[0] for p in problems] == [f"{where}[0]", f"{where}[1]"]
    (kept,) = await scheduler.list("shop")
    assert kept.id == definition_id("shop", "metadata", "J1") and kept.problem and kept.next_run is None


async def test_unserved_stops_the_firing_and_keeps_the_rows(scheduler: Scheduler) -> None:
    loads = AppSchedules(scheduler)
    await loads.served("shop", app_spec(), FakePool((declared("report"),)))  # type: ignore[arg-type]
    loads.unserved("shop")
    (kept,) = await scheduler.list("shop")
    assert kept.app_loaded is False and kept.next_run is not None


async def test_what_only_the_store_can_tell_is_said_once_with_where(scheduler: Scheduler) -> None:
    """A declared schedule whose id another app's row holds (a row edited by hand) is not kept,
    and its problem names its cell; a broken spec beside it is said once, in declared.py's words."""
    loads = AppSchedules(scheduler)
    sid = definition_id("shop", "notebook", "report")
    row = ScheduleRow(
        id=sid, app="other", task="report", name="report", spec="every hour", tz="UTC", misfire="run_once", args=[],
        kwargs={}, source="notebook", paused=False, next_run=None, last_run=None, last_status=None, last_task_id=None,
        problem=None, created=0.0, updated=0.0, version=1,
    )  # fmt: skip
    assert await scheduler.store.apply([Insert(row)], 0.0)
    pool = FakePool((declared("report"), declared("nightly", "every blue moon", cell=2)))
    problems = await loads.served("shop", app_spec(), pool)  # type: ignore[arg-type]
    with pytest.raises(ScheduleSpecError) as spec_problem:
        parse_spec("every blue moon", "UTC")
    assert problems == [
        f"server cell 3: the schedule 'nightly' of task 'report': {spec_problem.value}",
        f"server cell 2: the schedule 'report' of task 'report': its id {sid} is another schedule's; it was not kept",
    ]
    assert [(s.name, s.problem is not None) for s in await scheduler.list("shop")] == [("nightly", True)]
    assert (await scheduler.get(sid)).app == "other"


async def test_a_lone_surrogate_leaves_one_schedule_out_not_the_app_s_sync(scheduler: Scheduler) -> None:
    loads = AppSchedules(scheduler)
    problems = await loads.served("shop", app_spec(), FakePool((declared("\ud800"), declared("report"))))  # type: ignore[arg-type]
    assert len(problems) == 1 and problems[0].startswith("server cell 2: a schedule holds a lone surrogate")
    assert [s.name for s in await scheduler.list("shop")] == ["report"]
