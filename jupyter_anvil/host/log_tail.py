"""The live feed's app log events: the records as they are stored, with their ``seq``.

The feed follows the store as ``anvil/api/logs?since=`` does: after each batch this
server writes (app log flushes, about every 0.25 s), the records after the last one
sent are read back and published, oldest first, in events of at most ``BATCH_RECORDS``
records and about ``BATCH_CHARS`` characters. So an event's records are exactly what the
route returns (numbered by the database, in order), and a reader that reconnects can
fetch what it missed by ``since``. Nothing is read while nobody follows."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .background import spawn
from .feed import EventFeed
from .store import log_records

if TYPE_CHECKING:
    from collections.abc import Callable

    from .api_types import LogRecord, LogsEvent
    from .logs import AppLog

log = logging.getLogger(__name__)

BATCH_RECORDS = 500
BATCH_CHARS = 256 * 1024


class LogTail:
    def __init__(self, app_log: AppLog) -> None:
        self.app_log = app_log
        self.feed: EventFeed[LogsEvent] = EventFeed("app log feed")
        self._since: int | None = None  # the last seq published (None: not following)
        self._reading: asyncio.Task[None] | None = None
        self._again = False

    def subscribe(self, callback: Callable[[LogsEvent], None]) -> Callable[[], None]:
        """``callback`` gets the records stored from now on; the returned function unsubscribes."""
        unsubscribe = self.feed.subscribe(callback)
        if self._since is None:
            self.flushed()  # starts from the newest record stored
        return unsubscribe

    def flushed(self) -> None:
        """Records were stored (the app log's flush): publish them."""
        if not self.feed.subscribers:
            return
        if self._reading is not None and not self._reading.done():
            self._again = True
            return
        self._reading = spawn(self._read())

    async def _read(self) -> None:
        try:
            while self.feed.subscribers:
                self._again = False
                if self._since is None:
                    self._since = await self.app_log.store.run(self._newest)
                    continue
                records = await self.app_log.read(None, self._since, BATCH_RECORDS)
                if records:
                    self._since = int(records[-1]["seq"])
                    self._publish(records)
                if len(records) < BATCH_RECORDS and not self._again:
                    break
            if not self.feed.subscribers:
                self._since = None  # the next follower starts from the records stored then
        except Exception:  # the next flush tries again
            log.exception("[jupyter-anvil] could not read app log records for the live feed")

    def _newest(self) -> int:
        with self.app_log.store.engine.begin() as db:
            return int(db.execute(sa.select(sa.func.max(log_records.c.seq))).scalar() or 0)

    def _publish(self, records: list[LogRecord]) -> None:
        batch: list[LogRecord] = []
        size = 0
        for record in records:
            if batch and size + len(record["text"]) > BATCH_CHARS:
                self.feed.publish({"type": "logs", "records": batch})
                batch, size = [], 0
            batch.append(record)
            size += len(record["text"])
        if batch:
            self.feed.publish({"type": "logs", "records": batch})
