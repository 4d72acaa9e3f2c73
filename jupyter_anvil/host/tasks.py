"""Background tasks: each runs on a kernel of its own, taken warm from its app's pool.

A launch is recorded in the store at once (``queued``), runs when the app has room
under its concurrency limit (``running``), and ends ``completed``, ``failed``,
``killed`` or, if the server stopped under it, ``missing``. ``task_state`` and printed
output reach the host while the task runs; the record keeps the final state, the
return value, the error and the output (bounded).

Printed output is written to the record as it comes, in batches (each second, or at
once past ``output_batch`` characters), so a task cut off by a crash keeps what it
printed. Each record names the server that runs it; a server marks ``missing`` only
tasks whose server is gone (instances.py), so servers can share one store.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import errors
from ..protocol import BACKGROUND_TASK, is_finished
from .app_kernel import AppKernel
from .apps import AppManager
from .background import spawn
from .feed import EventFeed
from .instances import ServerInstances
from .messages import Caller, CallReply, CallRequest, scheduled_frame
from .remote_tasks import RemoteTasks
from .sessions import SessionService
from .store import TaskRecord, TaskStore, TaskSummary

if TYPE_CHECKING:
    from .api_types import TaskOutputEvent

log = logging.getLogger(__name__)

#: seconds between two task_output events of the live feed (what was printed in between is joined)
OUTPUT_EVENT_EVERY = 0.25
#: characters of one task_output event at most (more is sent in several)
OUTPUT_EVENT_CHARS = 256 * 1024

OUTPUT_CUT = "\n[jupyter-anvil: output cut here; only the first {limit} characters of a task's output are kept]\n"
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def new_task_id() -> str:
    """25 lower-case base32 characters (125 random bits), like Anvil's task ids."""
    return "".join(secrets.choice(_BASE32) for _ in range(25))


@dataclass
class TaskLimits:
    concurrency: int = 4
    timeout: float = 0.0  # seconds; 0: none
    output_limit: int = 1_000_000  # characters kept per task
    records_kept: int = 1000
    records_days: float = 30.0
    state_write_every: float = 1.0  # seconds between writes of live state to the store
    output_write_every: float = 1.0  # seconds between writes of printed output to the store
    output_batch: int = 64 * 1024  # characters of unwritten output that are written at once


@dataclass
class LiveTask:
    """A task this server has launched and not yet finished."""

    record: TaskRecord  # its output is kept in ``output`` while it runs, joined at its end
    request: CallRequest
    kernel: AppKernel | None = None
    output: list[str] = field(default_factory=list)
    output_size: int = 0
    output_written: int = 0  # how many of ``output``'s pieces are in the store already
    output_unwritten: int = 0  # characters printed since the last write
    output_published: int = 0  # how many of ``output``'s pieces the live feed has had
    dropped: int = 0
    killed: bool = False
    state_written: float = 0.0
    runner: asyncio.Task[None] | None = None
    #: the write of 'running' to the store, which the task does not wait for
    started_write: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.record.id


class TaskService:
    def __init__(
        self,
        apps: AppManager,
        store: TaskStore,
        sessions: SessionService,
        limits: TaskLimits,
        instances: ServerInstances,
    ) -> None:
        self.apps = apps
        self.store = store
        self.instances = instances
        self.sessions = sessions
        self.limits = limits
        self.live: dict[str, LiveTask] = {}
        self._queues: dict[str, deque[LiveTask]] = {}
        self._subscribers: set[Callable[[TaskSummary], None]] = set()
        self.stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._shutdowns: set[asyncio.Task[None]] = set()  # task kernels being shut down
        #: what running tasks print, batched, for the live feed
        self.output_feed: EventFeed[TaskOutputEvent] = EventFeed("task output feed")
        self._output_due: asyncio.TimerHandle | None = None
        #: other servers' tasks (sharing the store), told on this server's feed while anyone follows
        self.remote = RemoteTasks(
            store.store,
            instances.id,
            following=lambda: bool(self._subscribers or self.output_feed.subscribers),
            on_task=self._publish_summary,
            on_output=self.output_feed.publish,
            others=lambda: self.instances.others > 0,
        )

    async def start(self) -> None:
        await self.instances.register()
        await self._mark_orphans()
        self._loops = [
            spawn(self._beat_periodically()),
            spawn(self._write_output_periodically()),
            spawn(self.remote.run()),
        ]

    async def _mark_orphans(self) -> None:
        missing = await self.store.mark_orphans(self.instances.sweep)
        if missing:
            log.warning(
                "[jupyter-anvil] %d background tasks were cut off by their server's end: now 'missing'", missing
            )

    async def _beat_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.instances.beat_every)
            try:
                await self.instances.beat()
                await self._mark_orphans()
                # what a gone server left (its mail), on the side: the next beat never waits for it
                spawn(self.instances.after_sweep())
            except Exception:  # the next beat tries again
                log.exception("[jupyter-anvil] could not renew this server's heartbeat in the store")

    async def _record_stop(self, records: list[TaskRecord]) -> None:
        if records:
            await self.store.mark_stopped(records)
        await self.instances.unregister()

    async def stop(self, timeout: float = 4.0) -> None:
        """Record the unfinished tasks ``missing`` (the server, not the task, ended them)
        with what they printed, leave the servers table, then stop the tasks' kernels.
        The record comes first: it is quick, and the kernels may take their whole bound."""
        self.stopping = True
        for loop in self._loops:
            loop.cancel()
        records = [self._with_output(t) for t in self.live.values()]
        try:  # if this fails, the next start (or another server's sweep) marks them instead
            await asyncio.wait_for(self._record_stop(records), 2.0)
        except asyncio.TimeoutError:
            log.warning(
                "[jupyter-anvil] the store did not answer in 2 s: this stop (and %d tasks) not recorded", len(records)
            )
        except Exception:
            log.exception("[jupyter-anvil] could not record this stop (and %d tasks) in the store", len(records))
        # each runner shuts its task's kernel down as it ends (tracked in _shutdowns),
        # including one that is handed a kernel only now
        waiting: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(t.kernel.shutdown()) for t in self.live.values() if t.kernel
        }
        waiting.update(t.runner for t in self.live.values() if t.runner is not None)
        clock = asyncio.get_running_loop()
        deadline = clock.time() + timeout
        while True:
            waiting = {w for w in waiting | self._shutdowns if not w.done()}
            if not waiting or clock.time() >= deadline:
                break
            await asyncio.wait(waiting, timeout=deadline - clock.time())
        if waiting:
            log.warning("[jupyter-anvil] %d task kernels did not stop in %.0f s", len(waiting), timeout)

    # -- launching ------------------------------------------------------------------------
    async def launch(
        self,
        app_name: str,
        name: str,
        request: CallRequest,
        launched_by: dict[str, Any],
        *,
        schedule_id: str | None = None,
    ) -> TaskRecord:
        """Record the task (``queued``) and queue it. ``schedule_id``: the schedule that
        launched it, kept in its record and shown in its ``server.context.call_stack``."""
        if self.stopping:
            raise errors.RuntimeUnavailableError("The server is stopping: no background task can be launched")
        app = await self.apps.get(app_name)
        pool = app.pool if app is not None else None
        if pool is None:
            raise errors.RuntimeUnavailableError(f"App '{app_name}' is not available")
        if name not in pool.background_tasks:
            raise errors.NoServerFunctionError(f'No background task matching "{name}" has been registered')
        task_id = new_task_id()
        record = TaskRecord(
            id=task_id,
            app=app_name,
            name=name,
            status="queued",
            launched=time.time(),
            launched_by=launched_by,
            owner=self.instances.id,
            schedule_id=schedule_id,
        )
        await self.store.insert(record)
        request.command, request.call_id, request.from_client = name, task_id, False
        task = LiveTask(record, request)
        self.live[task_id] = task
        self._queues.setdefault(app_name, deque()).append(task)
        self._publish(task.record)
        self._schedule(app_name)
        return record

    def _schedule(self, app_name: str) -> None:
        queue = self._queues.get(app_name)
        running = sum(1 for t in self.live.values() if t.record.app == app_name and t.record.status == "running")
        while queue and running < self.limits.concurrency:
            task = queue.popleft()
            task.record.status = "running"  # taken: counts against the limit from now
            running += 1
            task.runner = spawn(self._run(task))

    async def _run(self, task: LiveTask) -> None:
        app_name = task.record.app
        reply: CallReply | None = None
        try:
            app = await self.apps.get(app_name)
            if app is None or app.pool is None:
                raise errors.RuntimeUnavailableError(f"App '{app_name}' is not available")
            task.kernel = await app.pool.take_spare()
            if task.killed:
                raise errors.BackgroundTaskKilled("The background task was killed.")
            session = self.sessions.new(app_name, "background_task")
            origin = [scheduled_frame(task.record.schedule_id)] if task.record.schedule_id else []
            task.request.caller = Caller(session, "background_task", background_task_id=task.id, origin=origin)
            timeout = self.limits.timeout or None
            task.record.started = time.time()
            # the record follows; the task need not wait for the database to begin
            task.started_write = spawn(
                self.store.update(task.id, {"status": "running", "started": task.record.started})
            )
            self._publish(task.record)
            try:
                reply = await task.kernel.call(task.request, timeout, kind=BACKGROUND_TASK)
            except asyncio.TimeoutError:
                raise errors.TimeoutError("The background task took too long") from None
            reply = await self.sessions.keep_state(app_name, task.request, reply)
        except errors.AnvilError as e:
            reply = CallReply.failure(e)
        except Exception as e:
            log.exception("[jupyter-anvil] background task %s failed to run", task.id)
            reply = CallReply.failure(errors.InternalError(f"The background task could not run: {e}"))
        finally:
            if task.kernel is not None:  # one task, one kernel: nothing leaks into the next
                shutdown = spawn(task.kernel.shutdown())
                self._shutdowns.add(shutdown)  # a stop waits for it: no kernel outlives the server
                shutdown.add_done_callback(self._shutdowns.discard)
        await self._finish(task, reply)

    async def _finish(self, task: LiveTask, reply: CallReply) -> None:
        if self.stopping:
            return
        record = task.record
        record.ended = time.time()
        if task.killed:
            record.status = "killed"
            record.error = errors.to_wire(errors.BackgroundTaskKilled("The background task was killed."))
        elif reply.error is not None:
            record.status = "failed"
            # what a task's error keeps (from a kernel: read leniently)
            record.error = {
                "type": str(reply.error.get("type") or "Exception"),
                "message": str(reply.error.get("message") or ""),
                "trace": reply.error.get("trace") or [],
            }
            record.traceback = reply.traceback
        else:
            record.status = "completed"
            record.result = {
                "v": reply.response,
                "objects": reply.objects,
                "media": {k: base64.b64encode(v).decode() for k, v in reply.media.items()},
            }
        if reply.task_state is not None and not task.killed:
            record.state = reply.task_state
        self._publish_output(task)  # its last output before its end
        record.output = "".join(task.output)
        record.output_dropped = task.dropped
        task.output_written = len(task.output)  # the end writes it all: no batch may follow
        try:
            if task.started_write is not None:
                # the end must land after 'running', however fast the task replied
                await asyncio.wait({task.started_write})
            await self.store.update(
                task.id,
                {
                    "status": record.status,
                    "ended": record.ended,
                    "error": record.error,
                    "traceback": record.traceback,
                    "result": record.result,
                    "state": record.state,
                    "output": record.output,
                    "output_dropped": record.output_dropped,
                },
            )
            await self.store.prune(self.limits.records_kept, self.limits.records_days)
        except Exception:
            log.exception("[jupyter-anvil] could not store the end of background task %s", task.id)
        self.live.pop(task.id, None)
        self._publish(record)
        self._schedule(record.app)

    # -- while it runs ----------------------------------------------------------------------
    def on_state(self, task_id: str, state: dict[str, Any]) -> None:
        task = self.live.get(task_id)
        if task is None or task.killed:
            return
        task.record.state = state
        self._publish(task.record)
        now = time.monotonic()
        if now - task.state_written >= self.limits.state_write_every:
            task.state_written = now
            spawn(self.store.update(task_id, {"state": state}))

    def on_output(self, task_id: str, text: str) -> None:
        task = self.live.get(task_id)
        if task is None:
            return
        room = self.limits.output_limit - task.output_size
        if room <= 0:
            task.dropped += len(text)
            return
        if len(text) > room:
            task.dropped += len(text) - room
            text = text[:room] + OUTPUT_CUT.format(limit=self.limits.output_limit)
        task.output.append(text)
        task.output_size += len(text)
        task.output_unwritten += len(text)
        if not self.output_feed.subscribers:
            task.output_published = len(task.output)  # a follower to come fetches what came before
        elif self._output_due is None:
            self._output_due = asyncio.get_running_loop().call_later(OUTPUT_EVENT_EVERY, self._publish_outputs)
        if task.output_unwritten >= self.limits.output_batch:
            spawn(self._write_output(task))

    def _publish_outputs(self) -> None:
        self._output_due = None
        for task in list(self.live.values()):
            self._publish_output(task)

    def _publish_output(self, task: LiveTask) -> None:
        """Publish what ``task`` printed since its last task_output event."""
        start, end = task.output_published, len(task.output)
        if start >= end:
            return
        task.output_published = end
        if not self.output_feed.subscribers:
            return
        text = "".join(task.output[start:end])
        base = task.output_size - len(text)  # its offset in the whole output (pieces up to ``end``)
        for at in range(0, len(text), OUTPUT_EVENT_CHARS):
            chunk = text[at : at + OUTPUT_EVENT_CHARS]
            event: TaskOutputEvent = {
                "type": "task_output",
                "id": task.id,
                "text": chunk,
                "offset": base + at + len(chunk),
            }
            self.output_feed.publish(event)

    async def _write_output(self, task: LiveTask) -> None:
        """Append what the task printed since the last write to its record."""
        start, end = task.output_written, len(task.output)
        if start >= end or self.stopping:
            return
        task.output_written, task.output_unwritten = end, 0  # taken now: a later write takes what follows
        try:
            await self.store.append_output(task.id, "".join(task.output[start:end]), task.dropped)
        except Exception:  # the end of the task writes the whole output anyway
            log.exception("[jupyter-anvil] could not store the output of background task %s", task.id)

    async def _write_output_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.limits.output_write_every)
            for task in list(self.live.values()):
                await self._write_output(task)
            await self._kill_as_asked()

    async def _kill_as_asked(self) -> None:
        """Kill the tasks running here that another server was asked to kill."""
        running = [task_id for task_id, task in self.live.items() if not task.killed]
        try:
            asked = await self.store.kill_requests(running)
        except Exception:  # asked again at the next poll
            log.exception("[jupyter-anvil] could not read the kill requests of background tasks")
            return
        for task_id in asked:
            if task_id in self.live:
                log.info("[jupyter-anvil] killing background task %s, as asked through another server", task_id)
                spawn(self.kill(task_id))

    async def _kill_elsewhere(self, task_id: str, wait: float = 15.0) -> TaskRecord:
        """Kill a task this server does not run: ask its owner through the store (it polls
        each ``output_write_every`` seconds) and wait, bounded, for the record to say so."""
        record = await self.get(task_id)
        if is_finished(record.status) or not await self.store.request_kill(task_id):
            return await self.get(task_id)  # already over: killing it again changes nothing
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            record = await self.get(task_id)
            if is_finished(record.status):
                break
        return record

    async def kill(self, task_id: str) -> TaskRecord:
        """Capture the last state, then stop the task's kernel; status ``killed``."""
        task = self.live.get(task_id)
        if task is None:
            return await self._kill_elsewhere(task_id)
        task.killed = True
        queue = self._queues.get(task.record.app)
        if queue is not None and task in queue:
            queue.remove(task)
            await self._finish(task, CallReply())
            return task.record
        if task.kernel is not None:
            try:
                data, _ = await asyncio.wait_for(task.kernel.get_task_state(task_id), 2)
                if data.get("state") is not None:
                    task.record.state = data["state"]
            except Exception:  # noqa: BLE001 - a stuck kernel: keep the last state it sent
                log.info("[jupyter-anvil] task %s gave no final state before being killed", task_id)
            await task.kernel.shutdown()
        if task.runner is not None:
            await asyncio.wait({task.runner}, timeout=10)
        return task.record

    # -- reading ------------------------------------------------------------------------------
    async def get(self, task_id: str) -> TaskRecord:
        """The record, live if the task runs here; BackgroundTaskNotFound if none."""
        task = self.live.get(task_id) if isinstance(task_id, str) else None
        if task is not None:
            return self._with_output(task)
        record = await self.store.get(task_id) if isinstance(task_id, str) else None
        if record is None:
            raise errors.BackgroundTaskNotFound(f"Background Task not found: {task_id}")
        return record

    async def list(self, **filters: Any) -> list[TaskSummary]:
        """Stored summaries, with the status and state of those running here as they are now."""
        return [self._live_summary(r) for r in await self.store.list(**filters)]

    def _live_summary(self, stored: TaskSummary) -> TaskSummary:
        task = self.live.get(stored.id)
        return replace(stored, status=task.record.status, state=task.record.state) if task else stored

    @staticmethod
    def _with_output(task: LiveTask) -> TaskRecord:
        """A copy of a live task's record with what it has printed so far."""
        return replace(task.record, output="".join(task.output), output_dropped=task.dropped)

    # -- the live feed --------------------------------------------------------------------------
    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, callback: Callable[[TaskSummary], None]) -> Callable[[], None]:
        """``callback`` gets a snapshot of a task's summary at each launch, start, state
        change and end; the returned function unsubscribes."""
        self._subscribers.add(callback)
        return lambda: self._subscribers.discard(callback)

    def _publish(self, record: TaskRecord) -> None:
        self._publish_summary(record.summary())

    def _publish_summary(self, summary: TaskSummary) -> None:
        for callback in list(self._subscribers):
            try:
                callback(summary)
            except Exception:
                log.exception("[jupyter-anvil] task feed subscriber failed")
