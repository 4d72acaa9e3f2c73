"""The scheduler's launcher over the real TaskService (fake kernels, a real store): a run
is a normal background task whose record names its schedule and whose context starts
with a ``scheduled_task`` frame; arguments kept as encoded values reach the kernel with
their descriptors; a launch that cannot happen says why and is in the app log."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from jupyter_anvil import wire
from jupyter_anvil.host.instances import ServerInstances
from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.pool import KernelPool
from jupyter_anvil.host.schedules.launcher import (
    LaunchFailed,
    TaskLauncher,
    call_arguments,
    encoded_arguments,
    is_encoded,
    plain_arguments,
)
from jupyter_anvil.host.schedules.records import ScheduleInvalid
from jupyter_anvil.host.sessions import SessionService
from jupyter_anvil.host.store import Store, TaskStore
from jupyter_anvil.host.tasks import TaskLimits, TaskService

from .conftest import FakeApps


@dataclass
class Rig:
    launcher: TaskLauncher
    tasks: TaskService
    pool: KernelPool
    starter: Any
    app_log: AppLog


@pytest.fixture
async def rig(make_pool: Callable[..., Any], store: Store) -> AsyncIterator[Rig]:
    gate = asyncio.Event()
    pool, starter = make_pool(min=1, max=1, task_spares=1)
    starter.prepare = lambda kernel: setattr(kernel, "gate", gate)
    await pool.start()
    tasks = TaskService(
        FakeApps(pool), TaskStore(store), SessionService(store, idle_timeout=3600), TaskLimits(), ServerInstances(store)
    )
    await tasks.start()
    app_log = AppLog(store)
    made = Rig(TaskLauncher(tasks, app_log), tasks, pool, starter, app_log)
    yield made
    gate.set()
    await tasks.stop(timeout=1)


def test_arguments_round_trip_through_their_kept_form() -> None:
    when = dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.timezone.utc)
    kept_args = [wire.encode_value(1, "t"), wire.encode_value({"at": when, "n": [2**70]}, "t")]
    kept_kwargs = {"day": wire.encode_value(dt.date(2024, 1, 2), "t"), "plain": wire.encode_value("x", "t")}
    assert all(is_encoded(v) for v in [*kept_args, *kept_kwargs.values()])
    args, kwargs, objects = call_arguments(kept_args, kept_kwargs)
    # decoded as the kernel decodes a call message: every value back, of its type
    decoded = wire.decode({"args": args, "kwargs": kwargs}, objects)
    assert decoded == {"args": [1, {"at": when, "n": [2**70]}], "kwargs": {"day": dt.date(2024, 1, 2), "plain": "x"}}
    assert {tuple(o["path"][:2]) for o in objects} == {("args", 1), ("kwargs", "day")}
    plain_args, plain_kwargs = plain_arguments(kept_args, kept_kwargs)
    assert plain_args == [1, {"at": "2024-03-31T01:30:00+00:00", "n": [str(2**70)]}]
    assert plain_kwargs == {"day": "2024-01-02", "plain": "x"}


def test_the_apis_plain_arguments_are_kept_encoded() -> None:
    args, kwargs = encoded_arguments([1, "a", {"b": [None, True]}], {"n": 2.5})
    assert args == [{"v": 1, "objects": []}, {"v": "a", "objects": []}, {"v": {"b": [None, True]}, "objects": []}]
    assert kwargs == {"n": {"v": 2.5, "objects": []}}
    assert plain_arguments(args, kwargs) == ([1, "a", {"b": [None, True]}], {"n": 2.5})
    with pytest.raises(ScheduleInvalid, match="JSON values"):
        encoded_arguments([object()], {})


def test_a_value_not_in_the_kept_form_is_refused() -> None:
    with pytest.raises(LaunchFailed, match="argument 0 is not kept as an encoded value"):
        call_arguments([1], {})
    with pytest.raises(LaunchFailed, match="keyword argument 'k'"):
        call_arguments([], {"k": {"v": 1, "objects": "no"}})


async def test_a_run_is_a_background_task_that_names_its_schedule(rig: Rig, settle: Any) -> None:
    kept, _ = encoded_arguments([7], {})
    task_id = await rig.launcher.launch("app", "job", kept, {"n": {"v": 3, "objects": []}}, "sched1")
    record = await rig.tasks.get(task_id)
    assert record.schedule_id == "sched1" and record.name == "job" and record.app == "app"
    frame = {"type": "scheduled_task", "is_trusted": True, "schedule_id": "sched1"}
    assert record.launched_by == {"client": None, "remote_caller": frame, "background_task_id": None,
                                  "call_stack": [frame]}  # fmt: skip
    stored = await rig.tasks.store.get(task_id)
    assert stored is not None and stored.schedule_id == "sched1"
    assert await rig.launcher.is_running(task_id)  # queued, then running
    await settle(lambda: any(k.calls for k in rig.starter.started))
    kernel = next(k for k in rig.starter.started if k.calls)
    request = kernel.calls[-1]
    assert request.args == [7] and request.kwargs == {"n": 3} and request.objects == []
    assert request.caller is not None
    context = request.caller.context()
    # what server.context says in the task: a background task's session, started by the schedule
    assert context["client"]["type"] == "background_task" and context["background_task_id"] == task_id
    assert [f["type"] for f in context["call_stack"]] == ["scheduled_task", "background_task"]
    assert context["call_stack"][0]["schedule_id"] == "sched1"
    assert await rig.launcher.is_running(task_id)
    kernel.gate.set()
    await settle(lambda: task_id not in rig.tasks.live)
    assert not await rig.launcher.is_running(task_id)  # ended: read from the store
    assert not await rig.launcher.is_running("z" * 25)  # no such task


async def test_a_launch_by_code_has_no_scheduled_frame(rig: Rig, settle: Any) -> None:
    from jupyter_anvil.host.messages import CallRequest

    record = await rig.tasks.launch("app", "job", CallRequest("job"), {"client": None})
    assert record.schedule_id is None
    await settle(lambda: any(k.calls for k in rig.starter.started))
    kernel = next(k for k in rig.starter.started if k.calls)
    assert [f["type"] for f in kernel.calls[-1].caller.context()["call_stack"]] == ["background_task"]


@pytest.mark.parametrize(
    ("app", "task", "expected"),
    [
        ("gone", "job", "could not launch background task 'job': App 'gone' is not available"),
        ("app", "nope", "could not launch background task 'nope': No background task matching \"nope\""),
    ],
)
async def test_a_launch_that_cannot_happen_says_why_in_the_app_log(
    rig: Rig, app: str, task: str, expected: str
) -> None:
    with pytest.raises(LaunchFailed) as failed:
        await rig.launcher.launch(app, task, [], {}, "sched2")
    assert str(failed.value).startswith(expected)
    await rig.app_log.flush()
    records = await rig.app_log.read(app)
    assert [(r["function"], r["stream"]) for r in records] == [(f"task:{task}", "system")]
    assert records[0]["text"] == f"scheduled run (schedule sched2): {failed.value}"
    assert await rig.tasks.list(app=app) == []  # nothing was recorded as launched


async def test_no_launch_once_the_task_service_stops(rig: Rig) -> None:
    await rig.tasks.stop(timeout=1)
    with pytest.raises(LaunchFailed, match="The server is stopping"):
        await rig.launcher.launch("app", "job", [], {}, "sched3")
