"""The Scheduler on a real store (temp SQLite file) with a driven clock: runs fire at their
times, overlaps are skipped, missed runs follow their misfire policy after a restart,
pause/resume/run now, app reloads, problems, two schedulers over one file firing each run
once, bounded history, launcher failures. Specs come from a stand-in parser
(``every N seconds``, aligned to the epoch) until spec.py lands beside this code."""

from __future__ import annotations

import asyncio
import math
import re
import statistics
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from jupyter_anvil.host.schedules.records import definition_id
from jupyter_anvil.host.schedules.service import (
    ScheduleDefinition,
    ScheduleEvent,
    ScheduleInvalid,
    ScheduleNotEditable,
    ScheduleNotFound,
    Scheduler,
    SystemClock,
)
from jupyter_anvil.host.store import Store

from .conftest import wait_until

T0 = 1_700_000_003.0  # every 10 s falls due at ...010, ...020, ...
APP = "reports"


# -- stand-ins: the spec parser, the clock, the launcher ------------------------------------------
class ScheduleSpecError(ValueError):
    pass


@dataclass(frozen=True)
class EverySeconds:
    """``every N seconds``: at the multiples of N seconds since the epoch."""

    n: int
    tz: str = "UTC"

    @property
    def text(self) -> str:
        return f"every {self.n} seconds"

    def next_after(self, after: datetime) -> datetime:
        step = (math.floor(after.timestamp() / self.n) + 1) * self.n
        return datetime.fromtimestamp(step, timezone.utc)

    def describe(self) -> str:
        return f"every {self.n} seconds ({self.tz})"


def parse_spec(spec: str | Mapping[str, Any], tz: str = "UTC", *, seed: str = "") -> EverySeconds:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleSpecError(f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Paris'") from None
    match = re.fullmatch(r"every (\d+) seconds?", spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise ScheduleSpecError(f"{spec!r} is not a schedule. Example: 'every 10 seconds'")
    return EverySeconds(int(match[1]), tz)


class FakeClock:
    """Epoch time that moves only when the test says; ``sleep`` returns once it has."""

    def __init__(self, start: float = T0) -> None:
        self.time = start
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.sleeps = 0

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        entry = (self.time + seconds, asyncio.get_running_loop().create_future())
        self.sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self.sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.time += seconds
        for deadline, future in list(self.sleepers):
            if deadline <= self.time and not future.done():
                future.set_result(None)

    def advance_to(self, when: float) -> None:
        self.advance(when - self.time)


@dataclass
class Launch:
    app: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    schedule_id: str
    at: float
    task_id: str


@dataclass
class FakeLauncher:
    """Counts launches. Tasks keep running while ``keep_running``, until ``finish``; a task
    named in ``failing`` fails to launch with that message."""

    clock: Any
    launches: list[Launch] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    keep_running: bool = False
    failing: dict[str, str] = field(default_factory=dict)

    async def launch(self, app: str, task: str, args: list[Any], kwargs: dict[str, Any], schedule_id: str) -> str:
        at = self.clock.now()
        await asyncio.sleep(0)  # a real launch is a round trip
        if task in self.failing:
            raise RuntimeError(self.failing[task])
        task_id = f"task{len(self.launches) + 1}"
        self.launches.append(Launch(app, task, args, kwargs, schedule_id, at, task_id))
        if self.keep_running:
            self.running.add(task_id)
        return task_id

    async def is_running(self, task_id: str) -> bool:
        return task_id in self.running

    def of(self, schedule_id: str) -> list[Launch]:
        return [launch for launch in self.launches if launch.schedule_id == schedule_id]


def every(seconds: int, name: str = "tick", task: str = "job", **values: Any) -> ScheduleDefinition:
    source = values.pop("source", "notebook")
    return ScheduleDefinition(
        id=definition_id(APP, source, name), app=APP, task=task, name=name, spec=f"every {seconds} seconds",
        source=source, **values,
    )  # fmt: skip


@dataclass
class Rig:
    clock: FakeClock
    launcher: FakeLauncher
    make: Callable[..., Scheduler]
    events: list[ScheduleEvent]

    async def quiet(self) -> None:
        """Long enough for a scheduler that was going to act to have acted (store round trips)."""
        await asyncio.sleep(0.05)


@pytest.fixture
async def rig(store: Store, tmp_path: Path) -> AsyncIterator[Rig]:
    """``rig.make(**options)``: a Scheduler over the test's store (or, with ``own_store=True``,
    over a Store of its own on the same file, as another server), the shared fake clock and
    launcher, events collected. All are stopped after the test."""
    clock = FakeClock()
    launcher = FakeLauncher(clock)
    events: list[ScheduleEvent] = []
    made: list[Scheduler] = []
    stores: list[Store] = []

    def make(own_store: bool = False, **options: Any) -> Scheduler:
        over = store
        if own_store:
            over = Store(store.url)  # the same database, through a connection of its own
            stores.append(over)
        options.setdefault("clock", clock)
        options.setdefault("parse_spec", parse_spec)
        options.setdefault("on_event", events.append)
        scheduler = Scheduler(over, launcher, **options)
        made.append(scheduler)
        return scheduler

    yield Rig(clock, launcher, make, events)
    for scheduler in made:
        await scheduler.stop()
    for other in stores:
        other.close()


async def launched(rig: Rig, count: int) -> None:
    await wait_until(lambda: len(rig.launcher.launches) >= count)
    await rig.quiet()
    assert len(rig.launcher.launches) == count


# -- firing -------------------------------------------------------------------------------------------
async def test_runs_fire_at_their_times_as_the_clock_advances(rig: Rig) -> None:
    scheduler = rig.make()
    definition = every(10, args=[1, "a"], kwargs={"k": True})
    (record,) = await scheduler.sync_app(APP, [definition], background_tasks={"job"})
    assert (record.next_run, record.description, record.source, record.app_loaded) == (
        1_700_000_010.0, "every 10 seconds (UTC)", "notebook", True,
    )  # fmt: skip
    scheduler.start()
    rig.clock.advance(6)
    await rig.quiet()
    assert rig.launcher.launches == []
    for n, due in enumerate((1_700_000_010.0, 1_700_000_020.0, 1_700_000_030.0), start=1):
        rig.clock.advance_to(due)
        await launched(rig, n)
    first = rig.launcher.launches[0]
    assert (first.app, first.task, first.args, first.kwargs, first.schedule_id) == (
        APP, "job", [1, "a"], {"k": True}, definition.id,
    )  # fmt: skip
    assert [launch.at for launch in rig.launcher.launches] == [1_700_000_010.0, 1_700_000_020.0, 1_700_000_030.0]
    runs = await scheduler.runs(definition.id)
    assert [(r.due, r.outcome, r.task_id) for r in runs] == [
        (1_700_000_030.0, "launched", "task3"), (1_700_000_020.0, "launched", "task2"),
        (1_700_000_010.0, "launched", "task1"),
    ]  # fmt: skip
    now = await scheduler.get(definition.id)
    assert (now.last_run, now.next_run, now.last_status, now.last_task_id) == (
        1_700_000_030.0, 1_700_000_040.0, "launched", "task3",
    )  # fmt: skip


async def test_the_loop_sleeps_until_the_next_run_and_a_change_wakes_it(rig: Rig) -> None:
    scheduler = rig.make(refresh_seconds=3600)
    await scheduler.sync_app(APP, [], background_tasks={"job"})
    scheduler.start()
    await wait_until(lambda: bool(rig.clock.sleepers))  # asleep
    sleeps = rig.clock.sleeps
    await asyncio.sleep(0.2)
    assert rig.clock.sleeps == sleeps  # idle: asleep, not polling
    # made while the loop sleeps until its next refresh, an hour away: it wakes for it
    created = await scheduler.create(APP, "job", "every 10 seconds")
    assert created.next_run == 1_700_000_010.0
    rig.clock.advance_to(1_700_000_010.0)
    await launched(rig, 1)
    assert rig.clock.sleeps - sleeps <= 4  # woken by the change, then once per run


async def test_a_run_is_skipped_while_the_previous_one_still_runs(rig: Rig) -> None:
    rig.launcher.keep_running = True
    scheduler = rig.make()
    definition = every(10)
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})
    scheduler.start()
    rig.clock.advance_to(1_700_000_010.0)
    await launched(rig, 1)
    rig.clock.advance_to(1_700_000_020.0)
    await wait_until(lambda: rig.events[-1].run is not None and rig.events[-1].run.due == 1_700_000_020.0)
    assert len(rig.launcher.launches) == 1  # not doubled
    skipped = (await scheduler.runs(definition.id))[0]
    assert (skipped.outcome, skipped.reason, skipped.task_id) == ("skipped", "previous run task1 still running", None)
    record = await scheduler.get(definition.id)
    assert (record.last_status, record.last_task_id, record.next_run) == ("skipped", "task1", 1_700_000_030.0)
    rig.launcher.running.clear()  # the long task ended
    rig.clock.advance_to(1_700_000_030.0)
    await launched(rig, 2)


async def test_a_launch_that_fails_is_recorded_and_the_loop_goes_on(rig: Rig) -> None:
    rig.launcher.failing["broken"] = "App 'reports' is not available"
    scheduler = rig.make()
    bad, good = every(10, name="bad", task="broken"), every(10, name="good")
    await scheduler.sync_app(APP, [bad, good], background_tasks={"job", "broken"})
    scheduler.start()
    rig.clock.advance_to(1_700_000_010.0)
    await launched(rig, 1)
    await wait_until(lambda: sum(e.kind == "run" for e in rig.events) == 2)
    (failed,) = await scheduler.runs(bad.id)
    assert (failed.outcome, failed.reason, failed.task_id) == ("failed", "App 'reports' is not available", None)
    assert (await scheduler.get(bad.id)).last_status == "failed"
    del rig.launcher.failing["broken"]
    rig.clock.advance_to(1_700_000_020.0)
    await launched(rig, 3)
    assert [r.outcome for r in await scheduler.runs(bad.id)] == ["launched", "failed"]


async def test_history_is_bounded_per_schedule(rig: Rig) -> None:
    scheduler = rig.make(history_limit=3)
    definition = every(10)
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})
    scheduler.start()
    for n in range(1, 7):
        rig.clock.advance_to(T0 - 3 + 10 * n)
        await launched(rig, n)
    await wait_until(lambda: sum(e.kind == "run" for e in rig.events) == 6)
    runs = await scheduler.runs(definition.id)
    assert [r.task_id for r in runs] == ["task6", "task5", "task4"]
    assert [r.task_id for r in await scheduler.runs(definition.id, limit=1, before=runs[0].seq)] == ["task5"]


async def test_events_tell_of_changes_runs_and_deletions(rig: Rig) -> None:
    scheduler = rig.make()
    await scheduler.sync_app(APP, [], background_tasks={"job"})
    scheduler.start()
    created = await scheduler.create(APP, "job", "every 10 seconds")
    assert [(e.kind, e.schedule_id) for e in rig.events] == [("changed", created.id)]
    assert rig.events[0].schedule == created
    rig.clock.advance_to(1_700_000_010.0)
    await wait_until(lambda: len(rig.events) == 2)
    run = rig.events[1]
    assert run.kind == "run" and run.run is not None and run.run.outcome == "launched"
    assert run.schedule is not None and run.schedule.last_run == 1_700_000_010.0
    await scheduler.delete(created.id)
    assert (rig.events[-1].kind, rig.events[-1].schedule_id, rig.events[-1].schedule) == ("deleted", created.id, None)
    assert rig.events[-1].kind == "deleted"


# -- misfire after a restart ------------------------------------------------------------------------
async def restart(rig: Rig, down_for: float, **options: Any) -> tuple[Scheduler, ScheduleDefinition]:
    """A scheduler that fired one run, stopped for ``down_for`` seconds, and a new one
    over the same file that loads the same app."""
    misfire = options.pop("misfire", "run_once")
    definition = every(10, misfire=misfire)
    first = rig.make(**options)
    await first.sync_app(APP, [definition], background_tasks={"job"})
    first.start()
    rig.clock.advance_to(1_700_000_010.0)
    await launched(rig, 1)
    await first.stop()
    rig.clock.advance(down_for)
    second = rig.make(own_store=True, **options)
    await second.sync_app(APP, [definition], background_tasks={"job"})
    second.start()
    return second, definition


async def test_misfire_skip_records_one_skip_and_goes_on_from_now(rig: Rig) -> None:
    scheduler, definition = await restart(rig, down_for=7200, misfire="skip")
    await wait_until(lambda: any(e.run is not None and e.run.outcome == "skipped" for e in rig.events))
    await rig.quiet()
    assert len(rig.launcher.launches) == 1  # nothing launched for the missed runs
    runs = await scheduler.runs(definition.id)
    assert [r.outcome for r in runs] == ["skipped", "launched"]  # one skip for 720 missed runs
    assert runs[0].reason.startswith("missed while the server was down") and runs[0].due == 1_700_000_020.0
    record = await scheduler.get(definition.id)
    now = rig.clock.now()
    assert record.next_run == (now // 10 + 1) * 10 and record.last_run == 1_700_000_010.0
    rig.clock.advance_to(record.next_run)
    await launched(rig, 2)


async def test_misfire_run_once_within_the_grace_period_runs_once_at_start(rig: Rig) -> None:
    scheduler, definition = await restart(rig, down_for=1200, grace_seconds=3600)
    await launched(rig, 2)  # one run for the 120 missed
    start = rig.clock.now()
    assert rig.launcher.launches[1].at == start
    runs = await scheduler.runs(definition.id)
    assert [r.outcome for r in runs] == ["launched", "launched"]
    assert "run once now" in runs[0].reason and runs[0].due == 1_700_000_020.0
    record = await scheduler.get(definition.id)
    assert (record.last_run, record.next_run) == (start, (start // 10 + 1) * 10)
    rig.clock.advance(1)
    await rig.quiet()
    assert len(rig.launcher.launches) == 2
    rig.clock.advance_to(record.next_run)
    await launched(rig, 3)


async def test_misfire_run_once_past_the_grace_period_skips(rig: Rig) -> None:
    # back at ...7215: the latest missed time, ...7210, is 5 s ago, past a grace of 3 s
    scheduler, definition = await restart(rig, down_for=7205, grace_seconds=3)
    await wait_until(lambda: any(e.run is not None and e.run.outcome == "skipped" for e in rig.events))
    await rig.quiet()
    assert len(rig.launcher.launches) == 1
    (skipped, _) = await scheduler.runs(definition.id)
    assert skipped.outcome == "skipped" and "missed while the server was down" in skipped.reason
    assert "the latest missed time is more than 3 s ago" in skipped.reason


async def test_a_machine_that_slept_finds_its_runs_missed(rig: Rig) -> None:
    scheduler = rig.make(misfire_after=30)
    definition = every(10, misfire="skip")
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})
    scheduler.start()
    rig.clock.advance_to(1_700_000_010.0 + 20)  # late, but not missed: fires
    await launched(rig, 1)
    rig.clock.advance(600)  # asleep: the loop wakes long after
    await wait_until(lambda: sum(e.kind == "run" for e in rig.events) == 2)
    await rig.quiet()
    assert [r.outcome for r in await scheduler.runs(definition.id)] == ["skipped", "launched"]
    assert len(rig.launcher.launches) == 1


# -- the admin API: pause, resume, run now, create, update, delete --------------------------------------
async def test_pause_resume_and_run_now(rig: Rig) -> None:
    scheduler = rig.make()
    definition = every(10)
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})
    scheduler.start()
    paused = await scheduler.update(definition.id, paused=True)
    assert paused.paused and paused.next_run is None
    rig.clock.advance(100)
    await rig.quiet()
    assert rig.launcher.launches == []
    resumed = await scheduler.update(definition.id, paused=False)
    now = rig.clock.now()
    assert not resumed.paused and resumed.next_run == (now // 10 + 1) * 10  # from now: no catch-up
    await rig.quiet()
    assert rig.launcher.launches == [] and await scheduler.runs(definition.id) == []
    rig.clock.advance_to(resumed.next_run)
    await launched(rig, 1)
    # run now, paused or not
    await scheduler.update(definition.id, paused=True)
    rig.clock.advance(3)
    run = await scheduler.run_now(definition.id)
    assert (run.outcome, run.task_id, run.reason, run.due) == (
        "launched",
        "task2",
        "run now, by request",
        rig.clock.now(),
    )
    record = await scheduler.get(definition.id)
    assert record.paused and record.last_run == rig.clock.now() and record.last_task_id == "task2"
    # run now keeps the no-overlap rule
    rig.launcher.keep_running = True
    rig.launcher.running.add("task2")
    skipped = await scheduler.run_now(definition.id)
    assert (skipped.outcome, skipped.reason) == ("skipped", "previous run task2 still running")


async def test_api_schedules_are_made_changed_and_deleted_with_clear_errors(rig: Rig) -> None:
    scheduler = rig.make()
    notebook = every(10)
    await scheduler.sync_app(APP, [notebook], background_tasks={"job", "other"})
    made = await scheduler.create(APP, "other", "every 20 seconds", "Europe/Paris", [1], {"x": 2}, "skip")
    assert (made.source, made.tz, made.misfire, made.args, made.kwargs, made.name) == (
        "api", "Europe/Paris", "skip", [1], {"x": 2}, "other",
    )  # fmt: skip
    assert made.next_run == 1_700_000_020.0 and made.description == "every 20 seconds (Europe/Paris)"
    listed = await scheduler.list(APP)
    assert {r.id for r in listed} == {made.id, notebook.id} and await scheduler.list("elsewhere") == []
    rig.clock.advance(8)
    changed = await scheduler.update(made.id, spec="every 30 seconds", misfire="run_once")
    assert (changed.spec, changed.next_run, changed.misfire) == ("every 30 seconds", 1_700_000_040.0, "run_once")
    # bad fields: 400s that change nothing
    bad_requests: list[tuple[Any, str]] = [
        (scheduler.create(APP, "job", "every fortnight"), "is not a schedule. Example"),
        (scheduler.create(APP, "job", "every 5 seconds", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (scheduler.create(APP, "nope", "every 5 seconds"), "'nope' is not a background task of this app"),
        (scheduler.create(APP, "job", "every 5 seconds", misfire="sometimes"), "misfire must be 'skip' or"),
        (scheduler.create(APP, "job", "every 5 seconds", args="abc"), "args must be a list"),
        (scheduler.create(APP, "job", "every 5 seconds", kwargs={1: 2}), "kwargs must be a dict with string"),
        (scheduler.create(APP, "job", "every 5 seconds", args=[object()]), "args must be JSON values"),
        (scheduler.create(APP, "job", 5), "spec must be a string"),
        (scheduler.create("elsewhere", "job", "every 5 seconds"), "no app named 'elsewhere' is loaded"),
        (scheduler.update(made.id, tz="Nowhere/Land"), "unknown time zone"),
        (scheduler.update(made.id, paused="yes"), "paused must be true or false"),
        (scheduler.runs(made.id, limit=0), "limit must be a whole number"),
    ]
    for request, message in bad_requests:
        with pytest.raises(ScheduleInvalid, match=re.escape(message)):
            await request
    assert await scheduler.get(made.id) == changed
    assert len(await scheduler.list()) == 2
    # a notebook's schedule: paused through the API, changed and deleted in the notebook only
    with pytest.raises(ScheduleNotEditable, match="declared in the app's notebook: change it there"):
        await scheduler.update(notebook.id, spec="every 5 seconds")
    with pytest.raises(ScheduleNotEditable, match="remove it there, or pause it through the API"):
        await scheduler.delete(notebook.id)
    assert (await scheduler.update(notebook.id, paused=True)).paused
    # unknown ids: 404s
    for missing in (
        scheduler.get("nope"), scheduler.update("nope", paused=True), scheduler.delete("nope"),
        scheduler.run_now("nope"), scheduler.runs("nope"),
    ):  # fmt: skip
        with pytest.raises(ScheduleNotFound, match="no schedule has the id 'nope'"):
            await missing
    await scheduler.delete(made.id)
    with pytest.raises(ScheduleNotFound):
        await scheduler.get(made.id)


async def test_api_schedules_survive_a_restart(rig: Rig) -> None:
    first = rig.make()
    await first.sync_app(APP, [every(10)], background_tasks={"job"})
    made = await first.create(APP, "job", "every 20 seconds")
    await first.stop()
    second = rig.make(own_store=True)
    before_load = {r.id: r for r in await second.list()}
    assert before_load[made.id].app_loaded is False  # listed, not fired: the app is not loaded here
    await second.sync_app(APP, [], background_tasks={"job"})  # the notebook's schedule went; the API's stays
    assert [r.id for r in await second.list()] == [made.id]
    second.start()
    rig.clock.advance_to(1_700_000_020.0)
    await launched(rig, 1)
    assert rig.launcher.launches[0].schedule_id == made.id


# -- app loads --------------------------------------------------------------------------------------
async def test_a_reload_adds_changes_and_removes_and_keeps_what_it_should(rig: Rig) -> None:
    scheduler = rig.make()
    kept, changed, removed = every(10, name="kept"), every(10, name="changed"), every(10, name="removed")
    args_only = every(10, name="args_only")
    await scheduler.sync_app(APP, [kept, changed, removed, args_only], background_tasks={"job"})
    api = await scheduler.create(APP, "job", "every 10 seconds")
    scheduler.start()
    rig.clock.advance_to(1_700_000_010.0)
    await launched(rig, 5)
    await wait_until(lambda: sum(e.kind == "run" for e in rig.events) == 5)
    await scheduler.stop()
    await scheduler.update(kept.id, paused=True)
    before = {r.id: r for r in await scheduler.list(APP)}
    rig.clock.advance(4)  # now ...014
    added = every(5, name="added")
    problems: list[str] = []
    records = await scheduler.sync_app(
        APP,
        [kept, every(30, name="changed"), every(10, name="args_only", args=[7]), added],
        problems,
        background_tasks={"job"},
    )
    after = {r.id: r for r in records}
    assert problems == []
    assert set(after) == {kept.id, changed.id, args_only.id, added.id, api.id}  # removed went; the API's stayed
    assert after[kept.id].paused and after[kept.id].next_run is None  # paused stays paused
    assert after[kept.id].last_run == before[kept.id].last_run == 1_700_000_010.0
    assert after[changed.id].next_run == 1_700_000_040.0  # the spec changed: the first after now
    assert after[changed.id].last_run == 1_700_000_010.0
    assert after[args_only.id].args == [7] and after[args_only.id].next_run == before[args_only.id].next_run
    assert after[added.id].next_run == 1_700_000_015.0
    with pytest.raises(ScheduleNotFound):
        await scheduler.get(removed.id)
    assert ("deleted", removed.id) in [(e.kind, e.schedule_id) for e in rig.events]
    # a reload that changes nothing writes nothing
    versions = {r.id: r.updated for r in await scheduler.list(APP)}
    events = len(rig.events)
    rig.clock.advance(1)
    await scheduler.sync_app(
        APP, [kept, every(30, name="changed"), every(10, name="args_only", args=[7]), added], background_tasks={"job"}
    )
    assert {r.id: r.updated for r in await scheduler.list(APP)} == versions and len(rig.events) == events


async def test_schedules_that_cannot_run_are_listed_with_their_problem_and_the_others_run(rig: Rig) -> None:
    scheduler = rig.make()
    good = every(10, name="good")
    broken = [
        ScheduleDefinition(definition_id(APP, "notebook", "typo"), APP, "job", "typo", "every fortnight"),
        ScheduleDefinition(definition_id(APP, "notebook", "zone"), APP, "job", "zone", "every 10 seconds", "Mars/X"),
        every(10, name="not_a_task", task="plain_function"),
        every(10, name="misfire", misfire="sometimes"),  # type: ignore[arg-type]
        every(10, name="args", args={"not": "a list"}),  # type: ignore[arg-type]
        ScheduleDefinition(definition_id(APP, "notebook", "zero"), APP, "job", "zero", "every 0 seconds"),
        ScheduleDefinition(
            definition_id(APP, "metadata", "JOB1"), APP, "job", "JOB1", {"every": "day"}, source="metadata"
        ),
    ]  # fmt: skip
    problems: list[str] = []
    records = {r.name: r for r in await scheduler.sync_app(APP, [good, *broken], problems, background_tasks={"job"})}
    assert records["good"].problem is None and records["good"].next_run is not None
    expected = {
        "typo": "'every fortnight' is not a schedule. Example: 'every 10 seconds'",
        "zone": "unknown time zone 'Mars/X'",
        "not_a_task": "'plain_function' is not a background task of this app",
        "misfire": "misfire must be 'skip' or 'run_once'",
        "args": "args must be a list",
        "zero": "could not compute its next run",
        "JOB1": "is not a schedule",
    }
    for name, message in expected.items():
        assert message in (records[name].problem or ""), (name, records[name].problem)
        assert records[name].next_run is None
        assert any(p.startswith(f"schedule '{name}' (") and message in p for p in problems), (name, problems)
    assert len(problems) == len(expected)
    assert records["JOB1"].spec == {"every": "day"} and records["JOB1"].description == '{"every":"day"} (UTC)'
    with pytest.raises(ScheduleInvalid, match="cannot run: 'every fortnight' is not a schedule"):
        await scheduler.run_now(records["typo"].id)
    scheduler.start()
    rig.clock.advance_to(1_700_000_010.0)
    await launched(rig, 1)
    rig.clock.advance_to(1_700_000_020.0)
    await launched(rig, 2)
    assert {launch.schedule_id for launch in rig.launcher.launches} == {good.id}
    # the notebook fixed: the problem goes, and it runs from now
    fixed = every(10, name="typo")
    records = {r.name: r for r in await scheduler.sync_app(APP, [good, fixed], background_tasks={"job"})}
    assert records["typo"].problem is None and records["typo"].next_run == 1_700_000_030.0


async def test_an_api_schedule_of_a_task_that_went_gets_a_problem_until_it_comes_back(rig: Rig) -> None:
    scheduler = rig.make()
    await scheduler.sync_app(APP, [], background_tasks={"job"})
    made = await scheduler.create(APP, "job", "every 10 seconds")
    (gone,) = await scheduler.sync_app(APP, [], background_tasks={"other"})
    assert "'job' is not a background task of this app" in (gone.problem or "") and gone.next_run is None
    rig.clock.advance(20)
    (back,) = await scheduler.sync_app(APP, [], background_tasks={"job"})
    assert back.id == made.id and back.problem is None and back.next_run == 1_700_000_030.0


async def test_an_app_that_goes_stops_firing_and_keeps_its_rows(rig: Rig) -> None:
    scheduler = rig.make()
    definition = every(10, misfire="skip")
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})
    scheduler.start()
    scheduler.remove_app(APP)
    rig.clock.advance_to(1_700_000_050.0)
    await rig.quiet()
    assert rig.launcher.launches == []
    (kept,) = await scheduler.list()
    assert kept.id == definition.id and kept.app_loaded is False
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})  # back: 40 s late, missed
    await wait_until(lambda: any(e.kind == "run" for e in rig.events))
    assert [r.outcome for r in await scheduler.runs(definition.id)] == ["skipped"]


# -- two servers, one store -----------------------------------------------------------------------------
async def test_two_schedulers_over_one_database_fire_each_run_once(rig: Rig) -> None:
    one, two = rig.make(), rig.make(own_store=True)
    definitions = [every(10, name="a"), every(10, name="b"), every(20, name="c")]
    for scheduler in (one, two):
        await scheduler.sync_app(APP, definitions, background_tasks={"job"})
        scheduler.start()
    dues = [1_700_000_010.0 + 10 * n for n in range(10)]
    expected = 0
    for due in dues:
        rig.clock.advance_to(due)
        expected += 2 + (due % 20 == 0)
        await launched(rig, expected)
    await wait_until(lambda: sum(e.kind == "run" for e in rig.events) == expected)
    await rig.quiet()
    assert len(rig.launcher.launches) == expected == 25
    for definition in definitions:
        runs = await one.runs(definition.id)
        assert len(runs) == len({r.due for r in runs}) == len(rig.launcher.of(definition.id))
        assert all(r.outcome == "launched" for r in runs)
    assert sum(e.kind == "run" for e in rig.events) == 25  # each run recorded by one of them


async def test_two_schedulers_share_the_work_when_they_have_ids(rig: Rig) -> None:
    one, two = rig.make(server_id="one"), rig.make(own_store=True, server_id="two")
    definitions = [every(10, name=f"s{n}") for n in range(20)]
    for scheduler in (one, two):
        await scheduler.sync_app(APP, definitions, background_tasks={"job"})
        scheduler.start()
    for n in range(1, 4):
        rig.clock.advance_to(T0 - 3 + 10 * n)
        await launched(rig, 20 * n)
    await wait_until(lambda: sum(e.kind == "run" for e in rig.events) == 60)
    runs = [run for d in definitions for run in await one.runs(d.id)]
    assert len(runs) == 60 and len({(r.schedule_id, r.due) for r in runs}) == 60
    assert {r.server for r in runs} <= {"one", "two"}


# -- the real clock ---------------------------------------------------------------------------------------
async def test_an_every_second_schedule_keeps_time_on_the_real_clock(store: Store) -> None:
    clock = SystemClock()
    launcher = FakeLauncher(clock)
    scheduler = Scheduler(store, launcher, parse_spec=parse_spec)
    definition = every(1)
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})
    scheduler.start()
    try:
        await asyncio.sleep(3.2)
    finally:
        await scheduler.stop()
    runs = await scheduler.runs(definition.id)
    lateness = sorted(launch.at - math.floor(launch.at) for launch in launcher.launches)
    print(f"\nevery-second schedule on the real clock: {len(lateness)} runs, lateness (s):"
          f" median {statistics.median(lateness):.4f}, max {max(lateness):.4f}")  # fmt: skip
    assert len(launcher.launches) >= 3
    dues = [r.due for r in runs]
    assert len(set(dues)) == len(dues) and all(d == int(d) for d in dues)  # each second once, none missed
    assert all(b - a == 1 for a, b in zip(sorted(dues), sorted(dues)[1:], strict=False))
    assert all(r.outcome == "launched" for r in runs)
    assert max(lateness) < 0.9  # each fired within its second (a loose bound: the machine may be loaded)


async def test_a_failing_store_or_subscriber_never_stops_the_loop(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = rig.make()
    definition = every(10)
    await scheduler.sync_app(APP, [definition], background_tasks={"job"})

    def subscriber(event: ScheduleEvent) -> None:
        raise RuntimeError("a subscriber's bug")

    scheduler.on_event = subscriber
    claim = scheduler.store.claim
    failures = []

    async def claim_failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise OSError("database is locked")
        return await claim(*args, **kwargs)

    monkeypatch.setattr(scheduler.store, "claim", claim_failing_once)
    scheduler.start()
    rig.clock.advance_to(1_700_000_010.0)
    await wait_until(lambda: bool(failures))
    await rig.quiet()
    assert rig.launcher.launches == []
    rig.clock.advance(1)  # the loop tries again a second later
    await launched(rig, 1)
    assert [r.due for r in await scheduler.runs(definition.id)] == [1_700_000_010.0]
