"""A warm pool of app kernels: start, lease, grow under load, shrink when idle, retire."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..protocol import Registered, ScheduleDeclaration
from .app_kernel import AppKernel, KernelLoadError
from .background import spawn

log = logging.getLogger(__name__)

#: seconds before the first retry after a kernel failed to start; doubled per failure in a row
RETRY_FIRST = 1.0
RETRY_MOST = 30.0

#: (stream, text) of a record for the app log: what the app's author should know
ProblemSink = Callable[[str, str], None]


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

    The version's functions are fixed when its first kernels load: a kernel that dies
    takes none of them along, and a call arriving while every kernel is being replaced
    waits for a warm one. A kernel that fails to start is retried after a back-off that
    doubles per failure (so a notebook whose cells now fail cannot start a retry storm);
    while it lasts and no kernel runs, calls are refused at once with a clear 503.
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
        #: what this version registered (callables, background tasks...), as its first kernel did
        self.registered = Registered()
        #: what this version declared with ``@server.scheduled``, as its first kernel did
        self.schedules: tuple[ScheduleDeclaration, ...] = ()
        #: where to report what the app's author should know (set by the app manager)
        self.on_problem: ProblemSink = lambda stream, text: log.warning("[jupyter-anvil] %s: %s", app, text)
        self._start_failures = 0  # kernels that failed to start in a row
        self._retry_at = 0.0  # loop time before which no kernel is started after a failure
        self._retry_timer: asyncio.TimerHandle | None = None
        #: the last start failure while it is not yet overcome, for the admin API
        self.problem: str | None = None
        #: that failure's wire error when its server cells failed (the cell and line are in it)
        self.problem_detail: dict[str, Any] | None = None
        #: told when what :meth:`stats` counts (or ``problem``) may have changed: the live
        #: feed's app events (set by the app manager; cheap, and called often)
        self.on_change: Callable[[], None] = lambda: None

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
        self.on_change()
        self.registered = started[0].registered
        self.schedules = started[0].schedules
        self._reaper = spawn(self._reap_idle())
        self._refill_spares()

    def _track(self, start: Coroutine[Any, Any, None]) -> None:
        """Start a kernel in the background, remembered so that closing the pool stops it
        too (a kernel still warming up when the server stops must not outlive it)."""
        task = spawn(start)
        self._starting_tasks.add(task)
        task.add_done_callback(self._starting_tasks.discard)

    @property
    def functions(self) -> frozenset[str]:
        """The callables of this version: what callers may call."""
        return self.registered.callables

    @property
    def background_tasks(self) -> frozenset[str]:
        """The background tasks of this version: what server code may launch."""
        return self.registered.background_tasks

    # -- task kernels ------------------------------------------------------------------------
    @property
    def has_tasks(self) -> bool:
        return bool(self.background_tasks)

    async def take_spare(self) -> AppKernel:
        """A warm kernel of its own for a background task. Kernels are handed out in
        the order asked for, so tasks start in launch order even when some must wait
        for a kernel to warm up."""
        if self.closed:
            raise errors.RuntimeUnavailableError(f"App '{self.app}' is being replaced")
        if self.spares and not self._spare_waiters:
            kernel = self.spares.pop(0)
            self._refill_spares()
            self.on_change()
            return kernel
        if self._backing_off() and not self._spares_starting:
            raise self._unavailable("the task")
        waiter: asyncio.Future[AppKernel] = asyncio.get_running_loop().create_future()
        self._spare_waiters.append(waiter)
        self._refill_spares()
        return await waiter

    def _refill_spares(self) -> None:
        if not self.has_tasks and not self._spare_waiters:
            return
        if self._backing_off():
            return  # the retry timer refills them
        wanted = self.limits.task_spares + len(self._spare_waiters)
        while not self.closed and len(self.spares) + self._spares_starting < wanted:
            self._spares_starting += 1
            self._track(self._add_spare())
            self.on_change()

    async def _add_spare(self) -> None:
        try:
            kernel = await self._start_kernel()
        except Exception as e:  # noqa: BLE001 - any failed start is reported and retried
            self._start_failed(e, "a kernel for background tasks")
            # the same cells would fail again now: tasks waiting get a clear error, not a wait
            while self._spare_waiters:
                waiter = self._spare_waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(self._unavailable("the task"))
            return
        finally:
            self._spares_starting -= 1
        if self.closed:
            await kernel.shutdown()
            return
        self._start_succeeded(kernel)
        while self._spare_waiters:
            waiter = self._spare_waiters.popleft()
            if not waiter.done():
                waiter.set_result(kernel)
                return
        self.spares.append(kernel)
        self.on_change()

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
        """A kernel with room for one more call; waits in the queue if all are full, or
        while the kernels are being replaced."""
        kernel = self.try_lease()
        if kernel is not None:
            return kernel
        if not self.live_kernels and not self.starting and self._backing_off():
            raise self._unavailable("the call")  # nothing would serve it before the retry
        self._grow()
        if len(self._waiters) >= self.limits.queue_size:
            if not self.live_kernels:
                raise errors.RuntimeUnavailableError(
                    f"App '{self.app}' has no kernel ready (its kernels are being replaced) "
                    f"and {len(self._waiters)} calls are already waiting. Try again shortly."
                )
            raise errors.RuntimeUnavailableError(
                f"App '{self.app}' is overloaded: all {len(self.kernels)} kernels are busy "
                f"and {len(self._waiters)} calls are already waiting. Try again shortly."
            )
        waiter: asyncio.Future[AppKernel] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.on_change()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed a kernel just as we gave up
            else:
                self._waiters.remove(waiter)
                self.on_change()
            raise

    def release(self, kernel: AppKernel) -> None:
        """Give back a lease."""
        kernel.in_flight -= 1
        kernel.last_used = asyncio.get_running_loop().time()
        self.on_change()
        if kernel.retiring:
            if kernel.in_flight == 0:
                spawn(kernel.shutdown())
            return
        self._serve_waiters()

    @staticmethod
    @contextlib.contextmanager
    def held_for_nested_call(kernel: AppKernel) -> Iterator[None]:
        """Count a nested ``server.call`` as one more call on the kernel that makes it (it
        runs there, on a thread of its own), for as long as it runs: a kernel busy with
        it is not shrunk away or handed more calls than it has threads. The kernel's pool
        need not be known (a task's kernel has none); this is the only change to a lease
        count outside a lease and its release."""
        kernel.in_flight += 1
        try:
            yield
        finally:
            kernel.in_flight -= 1

    @property
    def live_kernels(self) -> list[AppKernel]:
        """Kernels that can take calls (a dead one stays listed until its death is seen)."""
        return [k for k in self.kernels if not k.retiring and not k.has_exited()]

    def _take(self, kernel: AppKernel) -> AppKernel:
        kernel.in_flight += 1
        self.on_change()
        return kernel

    def _least_busy(self) -> AppKernel | None:
        usable = [k for k in self.live_kernels if k.in_flight < self.limits.calls_per_kernel]
        return min(usable, key=lambda k: k.in_flight, default=None)

    def _serve_waiters(self) -> None:
        while self._waiters:
            kernel = self._least_busy()
            if kernel is None:
                return
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._take(kernel))

    def _fail_waiters(self, error: errors.AnvilError) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        self.on_change()

    # -- growing, shrinking, replacing ---------------------------------------------------
    def _grow(self) -> bool:
        """Start one more kernel in the background if every kernel is busy and there is room."""
        if self.closed or self.starting or len(self.kernels) + self.starting >= self.limits.max:
            return False
        if self._backing_off() or any(k.in_flight == 0 and not k.retiring for k in self.live_kernels):
            return False
        self.starting += 1
        self._track(self._add_kernel())
        self.on_change()
        return True

    async def _add_kernel(self) -> None:
        try:
            try:
                kernel = await self._start_kernel()
            finally:
                self.starting -= 1
                self.on_change()
        except Exception as e:  # noqa: BLE001 - any failed start is reported and retried
            self._start_failed(e, "a kernel")
            if not self.live_kernels and not self.starting:
                # nothing will serve the calls waiting before the retry: tell them now
                self._fail_waiters(self._unavailable("the call"))
            return
        if self.closed:
            await kernel.shutdown()
            return
        self._start_succeeded(kernel)
        self.kernels.append(kernel)
        self.on_change()
        self._serve_waiters()
        if self._waiters:
            self._grow()  # more calls are waiting than this kernel takes

    def retire(self, kernel: AppKernel) -> None:
        """Take a kernel out of service (after a timeout): it gets no new calls, is shut
        down once its other calls finish, and is replaced if the pool is below ``min``."""
        if kernel in self.kernels:
            self.kernels.remove(kernel)
        kernel.retiring = True
        if kernel.in_flight <= 0:
            spawn(kernel.shutdown())
        self._replenish()
        self.on_change()

    def kernel_died(self, kernel: AppKernel) -> None:
        if kernel in self.kernels:
            self.kernels.remove(kernel)
        if kernel in self.spares:
            self.spares.remove(kernel)
            self._refill_spares()
        spawn(kernel.shutdown())
        self._replenish()
        self.on_change()

    def _replenish(self) -> None:
        """Start kernels up to ``min``, or one if calls wait and none runs or starts."""
        if self.closed or self._backing_off():
            return  # the retry timer calls again
        while len(self.kernels) + self.starting < max(1, self.limits.min) or (
            self._waiters and not self.live_kernels and not self.starting
        ):
            self.starting += 1
            self._track(self._add_kernel())
            self.on_change()

    # -- kernels that fail to start ------------------------------------------------------
    def _backing_off(self) -> bool:
        return self._start_failures > 0 and asyncio.get_running_loop().time() < self._retry_at

    def _start_failed(self, error: Exception, what: str) -> None:
        """Wait before the next start (doubling per failure in a row), and say so in the app log."""
        if self.closed:
            return
        self._start_failures += 1
        delay = min(RETRY_MOST, RETRY_FIRST * 2 ** (self._start_failures - 1))
        loop = asyncio.get_running_loop()
        self._retry_at = loop.time() + delay
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._retry_timer = loop.call_later(delay, self._retry)
        self.problem_detail = error.detail if isinstance(error, KernelLoadError) and error.detail else None
        if isinstance(error, KernelLoadError):
            reason = str(error)
            if error.traceback:
                self.on_problem("traceback", error.traceback)
        else:
            reason = f"{type(error).__name__}: {error}"
            log.warning("[jupyter-anvil] could not start %s for app %s", what, self.app, exc_info=error)
        self.problem = f"{what} failed to start ({self._start_failures} in a row): {reason}; retrying in {delay:g} s"
        self.on_problem("system", self.problem)
        self.on_change()

    def _start_succeeded(self, kernel: AppKernel) -> None:
        if kernel.registered != self.registered:
            self.on_problem(
                "system",
                f"a new kernel registered {kernel.registered.describe()}, not this version's "
                f"{self.registered.describe()}: its server cells depend on something outside the notebook",
            )
        if self._start_failures:
            self.on_problem("system", f"a kernel started again after {self._start_failures} failed starts")
        if self.problem is not None:
            self._start_failures, self.problem, self.problem_detail = 0, None, None
            self.on_change()
        self._start_failures = 0

    def _retry(self) -> None:
        self._retry_timer = None
        self._replenish()
        self._refill_spares()

    def _unavailable(self, what: str) -> errors.RuntimeUnavailableError:
        wait = max(0.0, self._retry_at - asyncio.get_running_loop().time())
        return errors.RuntimeUnavailableError(
            f"App '{self.app}' has no kernel to run {what}: a new kernel failed to start and is retried "
            f"in {wait:.0f} s (its author can see why in the app log)"
        )

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
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._fail_waiters(errors.RuntimeUnavailableError(f"App '{self.app}' was stopped"))
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
        self.on_change()
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
