"""TaskService on a real pool of fake kernels and a real store (temp SQLite file): the
concurrency limit and launch order, kill of a queued and of a running task, output
limits, failures and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from jupyter_anvil.host.instances import ServerInstances
from jupyter_anvil.host.messages import CallRequest
from jupyter_anvil.host.pool import KernelPool
from jupyter_anvil.host.sessions import SessionService
from jupyter_anvil.host.store import Store, TaskStore, TaskSummary
from jupyter_anvil.host.tasks import OUTPUT_CUT, TaskLimits, TaskService

from .conftest import FakeApps


@dataclass
class Rig:
    service: TaskService
    pool: KernelPool
    starter: Any
    feed: list[TaskSummary]

    async def launch(self, n: int = 0) -> str:
        record = await self.service.launch("app", "job", CallRequest("job", args=[n]), {"session_id": "s"})
        return record.id

    def status(self, task_id: str) -> str:
        return self.service.live[task_id].record.status if task_id in self.service.live else "ended"


@pytest.fixture
async def make_tasks(make_pool: Callable[..., Any], store: Store) -> AsyncIterator[Callable[..., Any]]:
    services: list[TaskService] = []

    async def make(prepare: Callable[[Any], None] | None = None, **limits: Any) -> Rig:
        """``prepare(kernel)`` sets up each kernel the pool starts (warm spares included)."""
        pool, starter = make_pool(min=1, max=1, task_spares=1)
        if prepare is not None:
            starter.prepare = prepare
        await pool.start()
        sessions = SessionService(store, idle_timeout=3600)
        service = TaskService(FakeApps(pool), TaskStore(store), sessions, TaskLimits(**limits), ServerInstances(store))
        await service.start()
        feed: list[TaskSummary] = []
        service.subscribe(feed.append)
        services.append(service)
        return Rig(service, pool, starter, feed)

    yield make
    for service in services:
        await service.stop(timeout=1)


async def test_concurrency_limit_and_launch_order(make_tasks, settle) -> None:
    gate = asyncio.Event()
    rig = await make_tasks(lambda kernel: setattr(kernel, "gate", gate), concurrency=2)
    ids = [await rig.launch(n) for n in range(5)]
    await settle(lambda: sum(rig.status(i) == "running" for i in ids) == 2)
    assert [rig.status(i) for i in ids] == ["running", "running", "queued", "queued", "queued"]
    gate.set()
    await settle(lambda: not rig.service.live, timeout=3)
    # each task began (its "started" published) in the order it was launched
    began = [r.id for r in rig.feed if r.status == "running" and r.started is not None]
    assert list(dict.fromkeys(began)) == ids
    for n, task_id in enumerate(ids):
        record = await rig.service.get(task_id)
        assert record.status == "completed" and record.result is not None and record.result["v"] == {"echo": [n]}
    # one kernel per task, each shut down after it
    task_kernels = [k for k in rig.starter.started if k.calls]
    assert len(task_kernels) == 5 and all(k.shutdowns for k in task_kernels)


async def test_running_count_never_exceeds_limit(make_tasks, settle) -> None:
    rig = await make_tasks(concurrency=1)
    most = 0

    def watch(_: TaskSummary) -> None:
        nonlocal most
        most = max(most, sum(t.record.status == "running" for t in rig.service.live.values()))

    rig.service.subscribe(watch)
    ids = [await rig.launch(n) for n in range(4)]
    await settle(lambda: not rig.service.live, timeout=3)
    assert most == 1
    assert [(await rig.service.get(i)).status for i in ids] == ["completed"] * 4


async def test_kill_a_queued_task(make_tasks, settle) -> None:
    gate = asyncio.Event()
    rig = await make_tasks(lambda kernel: setattr(kernel, "gate", gate), concurrency=1)
    first, queued = await rig.launch(1), await rig.launch(2)
    await settle(lambda: rig.status(first) == "running")
    assert rig.status(queued) == "queued"
    record = await rig.service.kill(queued)
    assert record.status == "killed" and record.error is not None
    assert record.error["type"] == "anvil.server.BackgroundTaskKilled"
    stored = await rig.service.store.get(queued)
    assert stored is not None and stored.status == "killed"
    gate.set()
    await settle(lambda: not rig.service.live)
    assert all(call.args != [2] for k in rig.starter.started for call in k.calls)  # it never ran
    assert sum(1 for k in rig.starter.started if k.shutdowns) == 1  # nor took a kernel
    assert (await rig.service.get(first)).status == "completed"
    assert (await rig.service.kill(queued)).status == "killed"  # killing again changes nothing


async def test_kill_a_running_task_keeps_its_last_state(make_tasks, settle) -> None:
    def prepare(kernel: Any) -> None:
        kernel.mode = "hang"
        kernel.task_state = {"step": 7}

    rig = await make_tasks(prepare, concurrency=1)
    task_id = await rig.launch()
    await settle(lambda: rig.service.live[task_id].kernel is not None and rig.service.live[task_id].kernel.calls)
    kernel = rig.service.live[task_id].kernel
    record = await asyncio.wait_for(rig.service.kill(task_id), 2)
    assert record.status == "killed" and record.state == {"step": 7}
    assert kernel.shutdowns >= 1
    stored = await rig.service.store.get(task_id)
    assert stored is not None and stored.status == "killed" and stored.state == {"step": 7}


async def test_output_is_cut_at_the_limit_and_the_rest_counted(make_tasks, settle) -> None:
    gate = asyncio.Event()
    rig = await make_tasks(lambda kernel: setattr(kernel, "gate", gate), output_limit=10)
    task_id = await rig.launch()
    await settle(lambda: rig.status(task_id) == "running")
    rig.service.on_output(task_id, "0123456")
    rig.service.on_output(task_id, "789ABC")  # 3 over
    rig.service.on_output(task_id, "more")  # nothing left: all counted
    live = await rig.service.get(task_id)
    assert live.output == "0123456789" + OUTPUT_CUT.format(limit=10)
    assert live.output_dropped == 7
    gate.set()
    await settle(lambda: not rig.service.live)
    stored = await rig.service.store.get(task_id)
    assert stored is not None
    assert stored.output == "0123456789" + OUTPUT_CUT.format(limit=10) and stored.output_dropped == 7


async def test_output_is_written_in_batches_while_it_runs(make_tasks, settle) -> None:
    gate = asyncio.Event()
    rig = await make_tasks(lambda kernel: setattr(kernel, "gate", gate), output_batch=5, output_write_every=60)
    task_id = await rig.launch()
    await settle(lambda: rig.status(task_id) == "running")
    rig.service.on_output(task_id, "abc")
    await asyncio.sleep(0.05)
    stored = await rig.service.store.get(task_id)
    assert stored is not None and stored.output == ""  # below the batch: not yet
    rig.service.on_output(task_id, "defgh")

    async def stored_output() -> str:
        stored = await rig.service.store.get(task_id)
        assert stored is not None
        return stored.output

    for _ in range(100):
        if await stored_output() == "abcdefgh":
            break
        await asyncio.sleep(0.01)
    assert await stored_output() == "abcdefgh"
    gate.set()
    await settle(lambda: not rig.service.live)
    assert await stored_output() == "abcdefgh"  # the end does not write it twice


async def test_failing_and_timed_out_tasks(make_tasks, settle) -> None:
    modes = iter(["ok", "fail", "hang"])  # the pool's own kernel first, then the task kernels
    rig = await make_tasks(lambda kernel: setattr(kernel, "mode", next(modes, "ok")), timeout=0.1)
    failed = await rig.launch()
    await settle(lambda: not rig.service.live)
    timed_out = await rig.launch()
    await settle(lambda: not rig.service.live, timeout=3)
    record = await rig.service.get(failed)
    assert record.status == "failed" and record.error is not None and "server code raised" in record.error["message"]
    record = await rig.service.get(timed_out)
    assert record.status == "failed" and record.error is not None
    assert record.error["type"] == "anvil.server.TimeoutError"


async def test_unknown_task_name_is_refused_and_nothing_stored(make_tasks) -> None:
    from jupyter_anvil import errors

    rig = await make_tasks()
    with pytest.raises(errors.NoServerFunctionError):
        await rig.service.launch("app", "nope", CallRequest("nope"), {})
    with pytest.raises(errors.RuntimeUnavailableError):
        await rig.service.launch("gone", "job", CallRequest("job"), {})
    assert await rig.service.list() == []
