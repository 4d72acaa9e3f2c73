"""Task records: one row per launch, updated as the task runs and when it ends."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypedDict, cast

import sqlalchemy as sa

from ...errors import WireError
from ...protocol import UNFINISHED_TASK_STATUSES, TaskStatus
from .core import Store
from .tables import TASK_JSON_COLUMNS, servers, tasks


@dataclass(kw_only=True)
class TaskSummary:
    """A task record without its bulky parts (printed output, traceback, return value):
    what lists and the live feed carry. Each field is a column of the task table."""

    id: str
    app: str
    name: str
    status: TaskStatus
    launched: float
    started: float | None = None  # when it took a kernel
    ended: float | None = None
    #: the last ``task_state`` it reported, in wire form ``{"v", "objects"}``
    state: dict[str, Any] | None = None
    #: why it failed (or was killed): a wire error ``{"type", "message", "trace"}``
    error: WireError | None = None
    #: the launching call's context (``client``, ``remote_caller``, ``call_stack``...)
    launched_by: dict[str, Any] | None = None
    #: characters of printed output past the limit, counted but not kept
    output_dropped: int = 0
    #: the server instance that runs it (instances.py); None on records of older releases
    owner: str | None = None
    #: the schedule that launched it (schedules/), None when code or a caller launched it
    schedule_id: str | None = None

    def summary(self) -> TaskSummary:
        """A copy of the summary's fields (a snapshot: the live record goes on changing)."""
        return TaskSummary(**{f.name: getattr(self, f.name) for f in fields(TaskSummary)})


@dataclass(kw_only=True)
class TaskRecord(TaskSummary):
    """The whole record of one background task."""

    #: what it returned, in wire form ``{"v", "objects", "media"}`` (Media as base64)
    result: dict[str, Any] | None = None
    #: the author's traceback of its failure (for the admin API, never a caller)
    traceback: str | None = None
    #: what it printed (at most the task output limit, then a marker)
    output: str = ""


class TaskChanges(TypedDict, total=False):
    """Columns of a record to change (TaskStore.update): any of TaskRecord's but its id."""

    status: TaskStatus
    started: float | None
    ended: float | None
    state: dict[str, Any] | None
    result: dict[str, Any] | None
    error: WireError | None
    traceback: str | None
    output: str
    output_dropped: int


_MISSING: TaskStatus = "missing"  # typed: the SQL values below are not checked otherwise

#: the columns a summary reads: a list leaves the bulky ones in the database
_SUMMARY_COLUMNS = [tasks.c[f.name] for f in fields(TaskSummary)]
_RECORD_COLUMNS = [tasks.c[f.name] for f in fields(TaskRecord)]


def _task_row(values: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if k in TASK_JSON_COLUMNS and v is not None else v for k, v in values.items()}


def _decoded(row: Any) -> dict[str, Any]:
    return {k: json.loads(v) if k in TASK_JSON_COLUMNS and v is not None else v for k, v in dict(row).items()}


def _task_record(row: Any) -> TaskRecord:
    return TaskRecord(**_decoded(row))


def _task_summary(row: Any) -> TaskSummary:
    return TaskSummary(**_decoded(row))


class TaskStore:
    """Task records: one row per launch, updated as the task runs and when it ends."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def insert(self, record: TaskRecord) -> None:
        values = _task_row(asdict(record))

        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(tasks.insert().values(values))

        await self.store.run(work)

    async def update(self, task_id: str, changes: TaskChanges) -> None:
        values = _task_row(cast("dict[str, Any]", changes))

        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(tasks.update().where(tasks.c.id == task_id).values(values))

        await self.store.run(work)

    async def get(self, task_id: str) -> TaskRecord | None:
        def work() -> TaskRecord | None:
            with self.store.engine.begin() as db:
                row = db.execute(sa.select(*_RECORD_COLUMNS).where(tasks.c.id == task_id)).mappings().first()
                return _task_record(row) if row is not None else None

        return await self.store.run(work)

    async def request_kill(self, task_id: str) -> bool:
        """Ask the server that runs the task to kill it (it polls, see
        :meth:`kill_requests`); False if the task is over already."""

        def work() -> bool:
            with self.store.engine.begin() as db:
                unfinished = tasks.c.status.in_(UNFINISHED_TASK_STATUSES)
                changed = tasks.update().where(tasks.c.id == task_id, unfinished).values(kill_requested=time.time())
                return bool(db.execute(changed).rowcount)

        return await self.store.run(work)

    async def kill_requests(self, task_ids: Sequence[str]) -> list[str]:
        """Those of ``task_ids`` (running here) that another server asked to kill."""
        if not task_ids:
            return []

        def work() -> list[str]:
            with self.store.engine.connect() as db:
                asked = sa.select(tasks.c.id).where(tasks.c.id.in_(list(task_ids)), tasks.c.kill_requested.is_not(None))
                return [str(row[0]) for row in db.execute(asked)]

        return await self.store.run(work)

    async def list(
        self,
        app: str | None = None,
        status: TaskStatus | None = None,
        name: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[TaskSummary]:
        """Newest first, as summaries; ``before`` (a launch time) pages back."""

        def work() -> list[TaskSummary]:
            query = sa.select(*_SUMMARY_COLUMNS).order_by(tasks.c.launched.desc(), tasks.c.id).limit(limit)
            for column, value in ((tasks.c.app, app), (tasks.c.status, status), (tasks.c.name, name)):
                if value is not None:
                    query = query.where(column == value)
            if before is not None:
                query = query.where(tasks.c.launched < before)
            with self.store.engine.begin() as db:
                return [_task_summary(row) for row in db.execute(query).mappings()]

        return await self.store.run(work)

    async def append_output(self, task_id: str, text: str, dropped: int) -> None:
        """Add printed output to a running task's record (as it comes, so a task cut off
        by a crash keeps what it printed)."""

        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(
                    tasks.update()
                    .where(tasks.c.id == task_id)
                    .values(output=tasks.c.output + text, output_dropped=dropped)
                )

        await self.store.run(work)

    async def mark_orphans(self, sweep: Callable[[sa.Connection], Sequence[str]]) -> int:
        """Tasks left queued or running by servers that are gone: ``missing``. ``sweep``
        removes the gone servers' rows (instances.py); what is left are the live owners.
        Tasks without an owner are from a release before owners: theirs is gone too."""

        def work() -> int:
            with self.store.engine.begin() as db:
                sweep(db)
                live_owners = sa.select(servers.c.id)
                unfinished = tasks.c.status.in_(UNFINISHED_TASK_STATUSES)
                orphaned = sa.or_(tasks.c.owner.is_(None), tasks.c.owner.notin_(live_owners))
                result = db.execute(
                    tasks.update().where(unfinished, orphaned).values(status=_MISSING, ended=time.time())
                )
                return int(result.rowcount)

        return await self.store.run(work)

    async def mark_stopped(self, records: Sequence[TaskRecord]) -> None:
        """This server is stopping under these tasks: ``missing``, with the output they
        printed, unless they ended meanwhile."""

        def work() -> None:
            now = time.time()
            with self.store.engine.begin() as db:
                for record in records:
                    unfinished = tasks.c.status.in_(UNFINISHED_TASK_STATUSES)
                    db.execute(
                        tasks.update()
                        .where(tasks.c.id == record.id, unfinished)
                        .values(
                            status=_MISSING,
                            ended=now,
                            output=record.output,
                            output_dropped=record.output_dropped,
                        )
                    )

        await self.store.run(work)

    async def prune(self, keep: int, max_age_days: float) -> int:
        """Drop finished records beyond the newest ``keep``, or older than ``max_age_days``."""

        def work() -> int:
            finished = tasks.c.status.notin_(UNFINISHED_TASK_STATUSES)
            removed = 0
            with self.store.engine.begin() as db:
                if max_age_days > 0:
                    too_old = tasks.c.launched < time.time() - max_age_days * 86400
                    removed += db.execute(tasks.delete().where(finished, too_old)).rowcount
                newest = sa.select(tasks.c.launched).where(finished).order_by(tasks.c.launched.desc())
                cutoff = db.execute(newest.offset(keep).limit(1)).scalar()
                if cutoff is not None:
                    removed += db.execute(tasks.delete().where(finished, tasks.c.launched <= cutoff)).rowcount
            return int(removed)

        return await self.store.run(work)
