"""A warm pool of app kernels: start, lease, grow under load, shrink when idle, retire."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .. import errors
from .background import spawn
from .kernel import AppKernel

log = logging.getLogger(__name__)


@dataclass
class PoolLimits:
    min: int = 1
    max: int = 4
    calls_per_kernel: int = 4
    queue_size: int = 100
    idle_seconds: float = 60.0
    #: warm kernels kept aside for background tasks (each task takes one for itself)
    task_spares: int = 1


class KernelPool:
    """Kernels of one version of one app.

    Each kernel runs up to ``calls_per_kernel`` calls at once (on worker threads in the
    kernel). A lease goes to the least busy kernel; when every kernel is busy the pool
    starts another, up to ``max``; when they are all full, callers wait in a bounded
    queue, in arrival order, and beyond it are refused.
    """

    def __init__(self, app: str, limits: PoolLimits, start_kernel: Callable[[], Awaitable[AppKernel]]) -> None:
        self.app = app
        self.limits = limits
        self._start_kernel = start_kernel
        self.kernels: list[AppKernel] = []
        self.starting = 0
        self.closed = False
        self._waiters: deque[asyncio.Future[AppKernel]] = deque()
        self.spares: list[AppKernel] = []
        self._spares_starting = 0
        self._spare_waiters: deque[asyncio.Future[AppKernel]] = deque()
        self._starting_tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    @property
    def functions(self) -> set[str]:
        return self.kernels[0].functions if self.kernels else set()

    async def start(self) -> None:
        """Start ``min`` kernels (at least one); raises the first load error."""
        count = max(1, self.limits.min)
        results = await asyncio.gather(*(self._start_kernel() for _ in range(count)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        started = [r for r in results if isinstance(r, AppKernel)]
        if failures:
            await asyncio.gather(*(k.shutdown() for k in started))
            raise failures[0]
        self.kernels.extend(started)
        self._reaper = spawn(self._reap_idle())
        self._refill_spares()

    def _track(self, start: Coroutine[Any, Any, None]) -> None:
        """Start a kernel in the background, remembered so that closing the pool stops it
        too (a kernel still warming up when the server stops must not outlive it)."""
        task = spawn(start)
        self._starting_tasks.add(task)
        task.add_done_callback(self._starting_tasks.discard)

    # -- task kernels ------------------------------------------------------------------------
    @property
    def has_tasks(self) -> bool:
        return any(name.startswith("task:") for name in self.functions)

    async def take_spare(self) -> AppKernel:
        """A warm kernel of its own for a background task. Kernels are handed out in
        the order asked for, so tasks start in launch order even when some must wait
        for a kernel to warm up."""
        if self.closed:
            raise errors.RuntimeUnavailableError(f"App '{self.app}' is being replaced")
        if self.spares and not self._spare_waiters:
            kernel = self.spares.pop(0)
            self._refill_spares()
            return kernel
        waiter: asyncio.Future[AppKernel] = asyncio.get_running_loop().create_future()
        self._spare_waiters.append(waiter)
        self._refill_spares()
        return await waiter

    def _refill_spares(self) -> None:
        if not self.has_tasks and not self._spare_waiters:
            return
        wanted = self.limits.task_spares + len(self._spare_waiters)
        while not self.closed and len(self.spares) + self._spares_starting < wanted:
            self._spares_starting += 1
            self._track(self._add_spare())

    async def _add_spare(self) -> None:
        try:
            kernel = await self._start_kernel()
        except Exception as e:
            log.exception("[jupyter-anvil] could not start a task kernel for app %s", self.app)
            if self._spare_waiters:
                waiter = self._spare_waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(errors.RuntimeUnavailableError(f"No kernel could start for the task: {e}"))
            return
        finally:
            self._spares_starting -= 1
        if self.closed:
            await kernel.shutdown()
            return
        while self._spare_waiters:
            waiter = self._spare_waiters.popleft()
            if not waiter.done():
                waiter.set_result(kernel)
                return
        self.spares.append(kernel)

    # -- leasing ----------------------------------------------------------------------
    def try_lease(self) -> AppKernel | None:
        """A kernel with room for one more call, if there is one now (the fast path)."""
        if self.closed:
            raise errors.RuntimeUnavailableError(f"App '{self.app}' is being replaced")
        kernel = self._least_busy()
        if kernel is None:
            return None
        if kernel.in_flight:
            self._grow()  # every kernel is busy: add capacity for the calls to come
        return self._take(kernel)

    async def lease(self) -> AppKernel:
        """A kernel with room for one more call; waits in the queue if all are full."""
        kernel = self.try_lease()
        if kernel is not None:
            return kernel
        self._grow()
        if len(self._waiters) >= self.limits.queue_size:
            raise errors.RuntimeUnavailableError(
                f"App '{self.app}' is overloaded: all {len(self.kernels)} kernels are busy "
                f"and {len(self._waiters)} calls are already waiting. Try again shortly."
            )
        waiter: asyncio.Future[AppKernel] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed a kernel just as we gave up
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, kernel: AppKernel) -> None:
        """Give back a lease."""
        kernel.in_flight -= 1
        kernel.last_used = asyncio.get_running_loop().time()
        if kernel.retiring:
            if kernel.in_flight == 0:
                spawn(kernel.shutdown())
            return
        self._serve_waiters()

    def _take(self, kernel: AppKernel) -> AppKernel:
        kernel.in_flight += 1
        return kernel

    def _least_busy(self) -> AppKernel | None:
        usable = [
            k for k in self.kernels if not k.retiring and not k.dead and k.in_flight < self.limits.calls_per_kernel
        ]
        return min(usable, key=lambda k: k.in_flight, default=None)

    def _serve_waiters(self) -> None:
        while self._waiters:
            kernel = self._least_busy()
            if kernel is None:
                return
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._take(kernel))

    # -- growing, shrinking, replacing ---------------------------------------------------
    def _grow(self) -> bool:
        """Start one more kernel in the background if every kernel is busy and there is room."""
        if self.closed or self.starting or len(self.kernels) + self.starting >= self.limits.max:
            return False
        if any(k.in_flight == 0 and not k.retiring for k in self.kernels):
            return False
        self.starting += 1
        self._track(self._add_kernel())
        return True

    async def _add_kernel(self) -> None:
        try:
            kernel = await self._start_kernel()
        except Exception:
            log.exception("[jupyter-anvil] could not start a kernel for app %s", self.app)
            return
        finally:
            self.starting -= 1
        if self.closed:
            await kernel.shutdown()
            return
        self.kernels.append(kernel)
        self._serve_waiters()

    def retire(self, kernel: AppKernel) -> None:
        """Take a kernel out of service (after a timeout): it gets no new calls, is shut
        down once its other calls finish, and is replaced if the pool is below ``min``."""
        if kernel in self.kernels:
            self.kernels.remove(kernel)
        kernel.retiring = True
        if kernel.in_flight <= 0:
            spawn(kernel.shutdown())
        self._replenish()

    def kernel_died(self, kernel: AppKernel) -> None:
        if kernel in self.kernels:
            self.kernels.remove(kernel)
        if kernel in self.spares:
            self.spares.remove(kernel)
            self._refill_spares()
        spawn(kernel.shutdown())
        self._replenish()

    def _replenish(self) -> None:
        if self.closed:
            return
        while len(self.kernels) + self.starting < max(1, self.limits.min) or (
            self._waiters and not self.kernels and not self.starting
        ):
            self.starting += 1
            self._track(self._add_kernel())

    async def _reap_idle(self) -> None:
        while not self.closed:
            await asyncio.sleep(min(5.0, self.limits.idle_seconds))
            now = asyncio.get_running_loop().time()
            for kernel in list(self.kernels):
                if len(self.kernels) <= max(1, self.limits.min):
                    break
                if kernel.in_flight == 0 and now - kernel.last_used >= self.limits.idle_seconds:
                    self.retire(kernel)

    # -- closing ---------------------------------------------------------------------------
    async def drain(self, grace: float) -> None:
        """Stop taking calls, let those in flight finish (up to ``grace`` seconds), stop."""
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(errors.RuntimeUnavailableError(f"App '{self.app}' was stopped"))
        deadline = asyncio.get_running_loop().time() + grace
        while any(k.in_flight for k in self.kernels) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for waiter in self._spare_waiters:
            if not waiter.done():
                waiter.set_exception(errors.RuntimeUnavailableError(f"App '{self.app}' was stopped"))
        for starting in list(self._starting_tasks):
            starting.cancel()  # AppKernel.start shuts down a kernel whose start is cancelled
        await asyncio.gather(*self._starting_tasks, return_exceptions=True)
        kernels, self.kernels = self.kernels + self.spares, []
        self.spares = []
        await asyncio.gather(*(k.shutdown() for k in kernels))

    def stats(self) -> dict[str, int]:
        return {
            "kernels": len(self.kernels),
            "starting": self.starting,
            "busy": sum(1 for k in self.kernels if k.in_flight),
            "in_flight": sum(k.in_flight for k in self.kernels),
            "queued": len(self._waiters),
            "task_spares": len(self.spares),
        }
