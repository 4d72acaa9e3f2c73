"""The tasks of other servers sharing the store, told on this server's live feed.

A task runs on the server that launched it, and only that server hears its kernel; but its
record is in the store, and so is what it prints (its server writes it in batches, each
second). So a panel following this server's feed (``anvil/api/feed``,
``anvil/api/tasks/feed``) is told of every server's tasks: while anyone follows, each
``every`` seconds one query reads the tasks of other servers that are unfinished (and those
it saw unfinished at the poll before, to tell their end), and publishes

* a task event when a task's summary changed since the last poll (launched, started, its
  state, its end), as the server that runs it publishes its own;
* task_output events for what the task printed since the last poll: read by offset, a
  slice of the output column (never the whole output again).

Cost, bounded: nothing while nobody follows. While someone does: one query a poll, of the
summary columns and the output's *length* of at most MAX_FOLLOWED tasks (those followed
already, each to its end, then the oldest unfinished), and for each task that printed, one slice of at most OUTPUT_SLICE
characters (the rest follows at the next polls). Delay: the owner's output batch (1 s) plus
a poll (``every``). Once someone follows, each task's summary is told as it is then, and
what it prints from then on (a follower fetches the output printed before, as it does for
this server's own tasks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..protocol import UNFINISHED_TASK_STATUSES
from .store import Store, TaskSummary
from .store.tables import TASK_JSON_COLUMNS, tasks

if TYPE_CHECKING:
    from .api_types import TaskOutputEvent

log = logging.getLogger(__name__)

#: seconds between two polls of the store while anyone follows the feed
POLL_EVERY = 0.5
#: other servers' unfinished tasks followed at once (the oldest first)
MAX_FOLLOWED = 200
#: characters of one task's output read at one poll at most (the rest at the next ones)
OUTPUT_SLICE = 256 * 1024

_SUMMARY_COLUMNS = [tasks.c[f.name] for f in fields(TaskSummary)]
_LENGTH = sa.func.length(tasks.c.output).label("output_length")


@dataclass
class _Seen:
    summary: TaskSummary
    #: characters of its output told (or, for a task first seen at the first poll, skipped)
    told: int
    #: characters of its output in the store at the last poll
    length: int
    #: whether its summary changed since it was last told
    changed: bool

    @property
    def ended(self) -> bool:
        return self.summary.status not in UNFINISHED_TASK_STATUSES


def _summary(row: Any) -> TaskSummary:
    values = {f.name: row[f.name] for f in fields(TaskSummary)}
    for name in TASK_JSON_COLUMNS:
        if name in values and values[name] is not None:
            values[name] = json.loads(values[name])
    return TaskSummary(**values)


class RemoteTasks:
    """Publishes the tasks of other servers (see the module's docstring).

    ``server_id``: this server's (its own tasks are published as they happen, not here);
    ``following``: whether anyone follows now; ``on_task``: told a changed summary;
    ``on_output``: told a task_output event; ``others``: whether other servers share the
    store (None: assume so); alone, with no task of another left to follow to its end, the
    store is not polled."""

    def __init__(
        self,
        store: Store,
        server_id: str,
        following: Callable[[], bool],
        on_task: Callable[[TaskSummary], None],
        on_output: Callable[[TaskOutputEvent], None],
        every: float = POLL_EVERY,
        others: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.server_id = server_id
        self.following = following
        self.on_task = on_task
        self.on_output = on_output
        self.every = every
        self.others = others
        #: the tasks of other servers seen unfinished at the last poll; None: not polled since nobody followed
        self._seen: dict[str, _Seen] | None = None
        #: when someone began to follow (give or take a poll): what was printed before is fetched, not told
        self._since = 0.0
        self._failing = False

    async def run(self) -> None:
        """Poll while anyone follows, until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            alone = self.others is not None and not self.others() and not self._seen
            if alone or not self.following():
                self._seen = None  # the next follower is told what happens from then on
                continue
            if self._seen is None:
                self._since = time.time() - self.every
            try:
                await self.poll()
                self._failing = False
            except Exception:
                if not self._failing:  # once, not each poll, while the store is down
                    log.exception("[jupyter-anvil] could not read other servers' tasks for the live feed")
                self._failing = True

    async def poll(self) -> None:
        first = self._seen is None
        seen = self._seen or {}
        rows = await self.store.run(lambda: self._read(list(seen)))
        now: dict[str, _Seen] = {}
        for row in rows:
            summary, length = _summary(row), int(row["output_length"] or 0)
            before = seen.get(summary.id)
            if before is None:  # new: its summary told; its output whole, unless printed before anyone followed
                earlier = first and summary.launched < self._since
                now[summary.id] = _Seen(summary, length if earlier else 0, length, changed=True)
            else:
                # (an end not told yet, its output still being read, stays to be told)
                changed = before.changed or before.summary != summary
                now[summary.id] = _Seen(summary, before.told, length, changed)
        # as for this server's own tasks: a task's launch before its output, its output before its end
        for entry in now.values():
            if entry.changed and not entry.ended:
                self.on_task(entry.summary)
        behind = {task_id: entry.told for task_id, entry in now.items() if entry.length > entry.told}
        if behind:
            for task_id, text in (await self.store.run(lambda: self._slices(behind))).items():
                entry = now[task_id]
                entry.told += len(text)
                self.on_output({"type": "task_output", "id": task_id, "text": text, "offset": entry.told})
        kept: dict[str, _Seen] = {}
        for task_id, entry in now.items():
            if not entry.ended:
                entry.changed = False  # told above
                kept[task_id] = entry
            elif entry.told < entry.length:  # its end is told once the rest of its output is
                entry.changed = True
                kept[task_id] = entry
            elif entry.changed:
                self.on_task(entry.summary)
        self._seen = kept

    def _read(self, seen: list[str]) -> list[Any]:
        others = sa.and_(tasks.c.owner.is_not(None), tasks.c.owner != self.server_id)
        wanted: sa.ColumnElement[bool] = tasks.c.status.in_(UNFINISHED_TASK_STATUSES)
        order: list[Any] = [tasks.c.launched]
        if seen:  # those followed already first, so each is followed to its end
            known = tasks.c.id.in_(seen)
            wanted = sa.or_(wanted, known)
            order.insert(0, sa.case((known, 0), else_=1))
        query = sa.select(*_SUMMARY_COLUMNS, _LENGTH).where(others, wanted).order_by(*order).limit(MAX_FOLLOWED)
        with self.store.engine.begin() as db:
            return list(db.execute(query).mappings())

    def _slices(self, offsets: dict[str, int]) -> dict[str, str]:
        """Each task's output from its offset, at most OUTPUT_SLICE characters."""
        found = {}
        with self.store.engine.begin() as db:
            for task_id, offset in offsets.items():
                text = db.execute(
                    sa.select(sa.func.substr(tasks.c.output, offset + 1, OUTPUT_SLICE)).where(tasks.c.id == task_id)
                ).scalar()
                if text:
                    found[task_id] = str(text)
        return found
