"""Fakes for the fast unit layer: an app kernel without a process, a pool built on it,
and a real Store on a temporary SQLite file.

Only the kernel process is faked: KernelPool, TaskService, SessionService, TaskStore and
AppLog are the real classes. A FakeKernel quacks like the host's app kernel for what the
pool and the task service use (``in_flight``, ``retiring``, ``dead``, ``last_used``,
``registered``/``functions``, ``call()``, ``shutdown()``, ``has_exited()``,
``get_task_state()``); each call succeeds, fails, hangs or dies as the test says.

The kernel class is reached through ``pool.AppKernel`` (the pool checks ``isinstance``
on what its starter returns), never by the kernel module's own path.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from jupyter_anvil import errors
from jupyter_anvil.host import pool as pool_module
from jupyter_anvil.host.messages import CallReply, CallRequest
from jupyter_anvil.host.pool import KernelPool, PoolLimits
from jupyter_anvil.host.store import Store
from jupyter_anvil.protocol import BACKGROUND_TASK, CALLABLE, Registered

FUNCTIONS = ("echo", "slow")
TASKS = ("job",)


class FakeKernel(pool_module.AppKernel):  # type: ignore[misc]
    """An app kernel with no process behind it. ``mode`` says what its next calls do:

    * ``"ok"``: reply with ``{"echo": <args>}`` (after waiting for ``gate`` if set);
    * ``"fail"``: reply with an error, as server code that raised;
    * ``"hang"``: never reply (until shut down, or the caller's timeout);
    * ``"die"``: the process dies mid-call (``on_death`` is told, the call fails).
    """

    _numbers = itertools.count(1)

    def __init__(self, app: str, functions: tuple[str, ...] = FUNCTIONS, tasks: tuple[str, ...] = TASKS) -> None:
        # no super().__init__: it wants a kernel manager; these are the attributes used
        self.app = app
        self.number = next(self._numbers)
        self.registered = Registered({CALLABLE: functions, BACKGROUND_TASK: tasks})
        self.in_flight = 0
        self.retiring = False
        self.dead = False
        self.last_used = asyncio.get_running_loop().time()
        self.mode = "ok"
        self.gate: asyncio.Event | None = None
        self.task_state: dict[str, Any] | None = None
        self.output: list[str] = []
        self.calls: list[CallRequest] = []
        self.shutdowns = 0
        self.on_death: Callable[[Any], None] = lambda kernel: None
        self._stopped = asyncio.Event()

    def __repr__(self) -> str:
        return f"<FakeKernel {self.app}#{self.number} in_flight={self.in_flight}>"

    async def call(self, request: CallRequest, timeout: float | None = None, kind: str = CALLABLE) -> CallReply:
        self.calls.append(request)
        return await asyncio.wait_for(self._answer(request), timeout)

    async def _answer(self, request: CallRequest) -> CallReply:
        # a real call is a message round trip: the reply never comes in the same loop step
        await asyncio.sleep(0)
        if self.dead:
            raise errors.RuntimeUnavailableError("the kernel is gone")
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "hang":
            await self._stopped.wait()
            raise errors.RuntimeUnavailableError("the kernel was shut down")
        if self.mode == "die":
            self.dead = True
            self.on_death(self)
            raise errors.RuntimeUnavailableError("the kernel died")
        if self.mode == "fail":
            return CallReply.failure(ValueError("server code raised"))
        return CallReply(response={"echo": request.args}, task_state=self.task_state)

    async def shutdown(self) -> None:
        self.shutdowns += 1
        self.dead = True
        self._stopped.set()

    def has_exited(self) -> bool:
        return self.dead

    async def get_task_state(self, task_id: str) -> tuple[dict[str, Any], list[bytes]]:
        return {"state": self.task_state}, []


class Starter:
    """What a pool calls to start a kernel: counts starts, and can fail or hold them."""

    def __init__(self, app: str = "app") -> None:
        self.app = app
        self.started: list[FakeKernel] = []
        self.attempts = 0
        self.failing = False
        self.gate: asyncio.Event | None = None
        #: applied to each new kernel before it is handed to the pool
        self.prepare: Callable[[FakeKernel], None] = lambda kernel: None

    async def __call__(self) -> FakeKernel:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise RuntimeError("the server cells failed")
        kernel = FakeKernel(self.app)
        self.prepare(kernel)
        self.started.append(kernel)
        return kernel


@pytest.fixture
async def make_pool() -> AsyncIterator[Callable[..., tuple[KernelPool, Starter]]]:
    """``make_pool(min=1, max=2, ...)``: an unstarted pool on FakeKernels (drained after)."""
    made: list[KernelPool] = []

    def make(**limits: Any) -> tuple[KernelPool, Starter]:
        limits.setdefault("task_spares", 0)  # no spare kernels unless a test is about them
        starter = Starter()
        pool = KernelPool("app", PoolLimits(**limits), starter)
        pool.on_problem = lambda stream, text: None
        made.append(pool)
        return pool, starter

    yield make
    for pool in made:
        await pool.drain(0)


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's start back-off in tens of milliseconds instead of seconds."""
    monkeypatch.setattr(pool_module, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(pool_module, "RETRY_MOST", 0.2)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A real Store at this release's schema, once on a temporary SQLite file (an in-memory
    one would give each thread its own empty database) and once on a fresh PostgreSQL
    database (tests/postgres.py): every test that takes it runs on both."""
    db = Store(database_url)
    db.create_schema()
    yield db
    db.close()


@pytest.fixture
def settle() -> Callable[..., Any]:
    return wait_until


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until ``condition()`` holds (work the code under test spawned), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@dataclass
class FakeApp:
    pool: KernelPool | None


class FakeApps:
    """The part of the app manager the task service uses: ``get(name)`` -> app with a pool."""

    def __init__(self, pool: KernelPool) -> None:
        self.app = FakeApp(pool)

    async def get(self, name: str) -> FakeApp | None:
        return self.app if name == "app" else None
