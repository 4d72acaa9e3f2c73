"""KernelPool on fake kernels: leasing, the queue, growth and shrink, replacement,
start back-off, retire and drain; milliseconds each, no kernel process."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import jupyter_anvil
from jupyter_anvil import errors
from jupyter_anvil.host.calls import CallService
from jupyter_anvil.host.host_services import HostServices
from jupyter_anvil.host.messages import CallRequest
from jupyter_anvil.host.pool import KernelPool
from jupyter_anvil.protocol import CALLABLE, Registered

from .conftest import FakeKernel


async def test_lease_goes_to_least_busy_kernel(make_pool) -> None:
    pool, _ = make_pool(min=2, max=2, calls_per_kernel=3)
    await pool.start()
    a, b = pool.kernels
    first, second, third = pool.try_lease(), pool.try_lease(), pool.try_lease()
    assert {first, second} == {a, b}  # spread, not stacked on one
    assert third in (a, b)
    assert sorted(k.in_flight for k in (a, b)) == [1, 2]


async def test_waiters_are_served_in_arrival_order(make_pool) -> None:
    pool, _ = make_pool(min=1, max=1, calls_per_kernel=1, queue_size=5)
    await pool.start()
    kernel = pool.try_lease()
    served: list[int] = []

    async def wait(n: int) -> None:
        await pool.lease()
        served.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    assert pool.stats()["queued"] == 3
    for _ in range(3):
        pool.release(kernel)
        await asyncio.sleep(0.01)
    await asyncio.gather(*waiters)
    assert served == [0, 1, 2]


async def test_queue_is_bounded_past_queue_size(make_pool) -> None:
    pool, _ = make_pool(min=1, max=1, calls_per_kernel=1, queue_size=2)
    await pool.start()
    pool.try_lease()
    waiters = [asyncio.create_task(pool.lease()) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(errors.RuntimeUnavailableError, match="overloaded"):
        await asyncio.wait_for(pool.lease(), 1)  # refused at once, not queued
    assert pool.stats()["queued"] == 2
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert pool.stats()["queued"] == 0  # a caller that gives up leaves the queue


async def test_grows_to_max_under_load_and_no_further(make_pool, settle) -> None:
    pool, starter = make_pool(min=1, max=3, calls_per_kernel=1, queue_size=10)
    await pool.start()
    pool.try_lease()
    waiters = [asyncio.create_task(pool.lease()) for _ in range(5)]
    await settle(lambda: len(pool.kernels) == 3 and pool.stats()["queued"] == 3)
    await asyncio.sleep(0.02)
    assert len(starter.started) == 3 and pool.starting == 0
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_shrinks_to_min_after_idle_seconds(make_pool, settle) -> None:
    pool, starter = make_pool(min=1, max=3, calls_per_kernel=1, idle_seconds=0.05)
    await pool.start()
    leases = [pool.try_lease()]
    leases.append(await asyncio.wait_for(pool.lease(), 1))
    leases.append(await asyncio.wait_for(pool.lease(), 1))
    assert len(pool.kernels) == 3
    for kernel in leases:
        pool.release(kernel)
    await settle(lambda: len(pool.kernels) == 1, timeout=2)
    retired = [k for k in starter.started if k not in pool.kernels]
    await settle(lambda: all(k.shutdowns for k in retired))
    assert all(k.retiring for k in retired)


async def test_busy_kernel_is_not_reaped(make_pool) -> None:
    pool, _ = make_pool(min=1, max=2, calls_per_kernel=1, idle_seconds=0.05)
    await pool.start()
    first = pool.try_lease()
    second = await asyncio.wait_for(pool.lease(), 1)
    await asyncio.sleep(0.2)
    assert len(pool.kernels) == 2 and not first.retiring and not second.retiring


async def test_dead_kernel_is_replaced_and_functions_stay_fixed(make_pool, settle) -> None:
    pool, starter = make_pool(min=1, max=1)
    await pool.start()
    assert pool.functions == frozenset({"echo", "slow"})
    # a replacement that registers something else does not change the version's functions
    starter.prepare = lambda kernel: setattr(kernel, "registered", Registered({CALLABLE: ["other"]}))
    dead = pool.kernels[0]
    dead.dead = True
    pool.kernel_died(dead)
    assert pool.live_kernels == []
    await settle(lambda: len(pool.kernels) == 1)
    assert pool.kernels[0] is not dead and dead.shutdowns
    assert pool.functions == frozenset({"echo", "slow"})


async def test_call_waits_for_replacement_when_no_kernel_lives(make_pool, settle) -> None:
    pool, starter = make_pool(min=1, max=1)
    await pool.start()
    starter.gate = asyncio.Event()
    dead = pool.kernels[0]
    dead.dead = True
    pool.kernel_died(dead)
    waiting = asyncio.create_task(pool.lease())
    await asyncio.sleep(0.02)
    assert not waiting.done()  # waits for the warm one, is not refused
    starter.gate.set()
    kernel = await asyncio.wait_for(waiting, 1)
    assert kernel is not dead and kernel.in_flight == 1


async def test_start_failure_backs_off_then_recovers(make_pool, fast_retry, settle) -> None:
    pool, starter = make_pool(min=1, max=1)
    await pool.start()
    problems: list[str] = []
    pool.on_problem = lambda stream, text: problems.append(text)
    starter.failing = True
    dead = pool.kernels[0]
    dead.dead = True
    pool.kernel_died(dead)
    await settle(lambda: starter.attempts == 2)
    assert pool.problem is not None and "retrying in 0.05 s" in pool.problem
    # while it backs off, with no kernel, a call is refused at once with a clear 503
    with pytest.raises(errors.RuntimeUnavailableError, match="failed to start"):
        await asyncio.wait_for(pool.lease(), 1)
    # the delay doubles per failure in a row
    await settle(lambda: starter.attempts == 3)
    assert "(2 in a row)" in (pool.problem or "") and "retrying in 0.1 s" in (pool.problem or "")
    starter.failing = False
    await settle(lambda: len(pool.kernels) == 1, timeout=3)
    assert pool.problem is None
    assert any("started again after" in text for text in problems)
    assert pool.try_lease() is pool.kernels[0]


async def test_back_off_is_capped_at_retry_most(make_pool, fast_retry, settle) -> None:
    pool, starter = make_pool(min=1, max=1)
    await pool.start()
    starter.failing = True
    dead = pool.kernels[0]
    dead.dead = True
    pool.kernel_died(dead)
    await settle(lambda: starter.attempts >= 6, timeout=5)
    assert "retrying in 0.2 s" in (pool.problem or "")


async def test_start_raises_first_load_error_and_stops_the_others(make_pool) -> None:
    pool, starter = make_pool(min=2, max=2)
    calls = 0
    original = starter.__call__

    async def second_fails() -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("cell 3 failed")
        return await original()

    pool._start_kernel = second_fails
    with pytest.raises(RuntimeError, match="cell 3 failed"):
        await pool.start()
    assert pool.kernels == [] and all(k.shutdowns for k in starter.started)


async def test_retire_during_in_flight_calls(make_pool, settle) -> None:
    pool, _ = make_pool(min=1, max=2, calls_per_kernel=4)
    await pool.start()
    kernel = pool.try_lease()
    pool.try_lease()
    pool.retire(kernel)
    assert kernel not in pool.kernels and kernel.retiring
    await settle(lambda: len(pool.kernels) == 1)  # replaced up to min
    assert pool.try_lease() is not kernel  # no new calls to a retiring kernel
    pool.release(kernel)
    await asyncio.sleep(0.01)
    assert kernel.shutdowns == 0  # its other call still runs
    pool.release(kernel)
    await settle(lambda: kernel.shutdowns == 1)


async def test_drain_waits_for_in_flight_and_fails_waiters(make_pool) -> None:
    pool, _ = make_pool(min=1, max=1, calls_per_kernel=1)
    await pool.start()
    kernel = pool.try_lease()
    waiter = asyncio.create_task(pool.lease())
    await asyncio.sleep(0.01)
    drain = asyncio.create_task(pool.drain(grace=2))
    await asyncio.sleep(0.05)
    with pytest.raises(errors.RuntimeUnavailableError, match="stopped"):
        await waiter
    assert not drain.done() and kernel.shutdowns == 0  # the call in flight may finish
    pool.release(kernel)
    await asyncio.wait_for(drain, 1)
    assert kernel.shutdowns == 1 and pool.kernels == []
    with pytest.raises(errors.RuntimeUnavailableError, match="being replaced"):
        pool.try_lease()


async def test_drain_grace_is_bounded(make_pool) -> None:
    pool, _ = make_pool(min=1, max=1)
    await pool.start()
    kernel = pool.try_lease()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await pool.drain(grace=0.1)
    assert loop.time() - began < 1.5 and kernel.shutdowns == 1  # not held by the busy kernel


async def test_drain_stops_a_kernel_still_starting(make_pool, settle) -> None:
    pool, starter = make_pool(min=1, max=2, calls_per_kernel=1)
    await pool.start()
    starter.gate = asyncio.Event()
    pool.try_lease()
    waiter = asyncio.create_task(pool.lease())  # grows: a second kernel starts, held
    await settle(lambda: pool.starting == 1)
    await pool.drain(0)
    starter.gate.set()
    await asyncio.sleep(0.02)
    assert len(starter.started) == 1  # the start was cancelled, nothing outlives the pool
    assert isinstance(waiter.exception(), errors.RuntimeUnavailableError)


async def test_spares_for_tasks_are_handed_out_in_launch_order(make_pool, settle) -> None:
    pool, starter = make_pool(min=1, max=1, task_spares=1)
    await pool.start()
    await settle(lambda: len(pool.spares) == 1)
    starter.gate = asyncio.Event()
    first = await pool.take_spare()
    later = [asyncio.create_task(pool.take_spare()) for _ in range(3)]
    await asyncio.sleep(0.01)
    starter.gate.set()
    got = await asyncio.wait_for(asyncio.gather(*later), 1)
    assert len({id(k) for k in [first, *got]}) == 4  # one kernel each
    assert [starter.started.index(k) for k in got] == sorted(starter.started.index(k) for k in got)
    assert first not in pool.kernels


async def test_kernel_dying_mid_call_is_replaced_and_the_call_fails_clearly(make_pool, settle) -> None:
    from jupyter_anvil.host.messages import CallRequest

    pool, starter = make_pool(min=1, max=1)
    starter.prepare = lambda kernel: setattr(kernel, "on_death", pool.kernel_died)
    await pool.start()
    kernel = pool.try_lease()
    kernel.mode = "die"
    with pytest.raises(errors.RuntimeUnavailableError, match="died"):
        await kernel.call(CallRequest("echo"), 1)
    pool.release(kernel)
    await settle(lambda: len(pool.kernels) == 1 and pool.kernels[0] is not kernel)
    assert kernel.shutdowns >= 1
    replacement = await asyncio.wait_for(pool.lease(), 1)
    reply = await replacement.call(CallRequest("echo", args=[1]), 1)
    assert reply.response == {"echo": [1]}


async def test_a_nested_call_counts_on_its_kernel_while_it_runs(make_pool) -> None:
    pool, _ = make_pool(min=1, max=1, calls_per_kernel=2)
    await pool.start()
    kernel = pool.try_lease()  # the parent call
    with KernelPool.held_for_nested_call(kernel):
        assert kernel.in_flight == 2
        assert pool.try_lease() is None  # its two threads are taken
    assert kernel.in_flight == 1
    with pytest.raises(ValueError), KernelPool.held_for_nested_call(kernel):
        raise ValueError("the nested call failed")
    assert kernel.in_flight == 1  # given back however the nested call ends
    pool.release(kernel)
    assert kernel.in_flight == 0


async def test_call_service_holds_the_kernel_through_a_nested_call() -> None:
    kernel = FakeKernel("app")
    kernel.gate = asyncio.Event()
    calls = CallService(None, None, None, HostServices())  # type: ignore[arg-type]
    nested = asyncio.create_task(calls.nested_call(kernel, CallRequest("echo", args=[1], from_client=False, depth=1)))
    await asyncio.sleep(0.01)
    assert kernel.in_flight == 1  # counted by the pool's hold while it runs
    kernel.gate.set()
    reply = await nested
    assert reply.response == {"echo": [1]} and kernel.in_flight == 0
    kernel.mode = "die"
    failed = await calls.nested_call(kernel, CallRequest("echo", from_client=False, depth=1))
    assert failed.error is not None and kernel.in_flight == 0


def test_only_the_pool_changes_lease_counts() -> None:
    package = Path(jupyter_anvil.__file__).parent
    changed = re.compile(r"\.in_flight\s*(?:[-+]=|=(?!=))")
    found = [
        f"{path.relative_to(package)}:{n}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "pool.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if changed.search(line) and "self.in_flight = 0" not in line  # a kernel's own start value
    ]
    assert found == []
