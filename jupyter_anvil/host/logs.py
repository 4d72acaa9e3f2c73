"""The app log: what calls print, full tracebacks and load errors, per app.

Each record is tagged with app, function and call id. Records go to the server's
logger (``jupyter_anvil.app.<name>``) at once and to the store in batches (four times
a second, off the event loop; the live feed reads them back: log_tail.py), so the log outlives the server; the newest
``max_records_per_app`` records of each app are kept.

Sequence numbers come from the database (an autoincrement key), so several servers can
write one store. Everything is bounded: a record keeps its first ``RECORD_LIMIT`` bytes
and a call at most ``CALL_LIMIT`` bytes of printed output in the log, each with a marker where
it was cut; records waiting for the store are capped too, and if the store falls that
far behind, what does not fit is dropped and counted in a record of its own. A failed
write is logged and its records tried again with the next batch (within the cap);
stopping never raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

import sqlalchemy as sa

from .background import spawn
from .log_tail import LogTail
from .store import Store, log_records
from .store.numbering import numbered_in_commit_order

if TYPE_CHECKING:
    from .api_types import LogRecord

log = logging.getLogger(__name__)

RECORD_LIMIT = 64 * 1024  # bytes of text one record keeps
CALL_LIMIT = 1024 * 1024  # bytes of printed output (stdout, stderr) one call keeps
PENDING_LIMIT = 8 * 1024 * 1024  # bytes of records waiting for the store
CALLS_TRACKED = 4096  # calls whose printed total is remembered (the most recent ones)
#: what a log record is: what a call printed (``stdout``, ``stderr``), the author's
#: ``traceback`` of a failure, or a ``system`` note of the server's (loads, stops, drops)
LogStream = Literal["stdout", "stderr", "traceback", "system"]
LOG_STREAMS: Final[tuple[LogStream, ...]] = get_args(LogStream)
PRINTED: Final[tuple[LogStream, ...]] = ("stdout", "stderr")

RECORD_CUT = "\n[jupyter-anvil: output cut here: a log record keeps its first {limit} KiB; {more} more bytes dropped]\n"
CALL_CUT = (
    "\n[jupyter-anvil: output cut here: the app log keeps at most {limit} KiB of what a call prints;"
    " the rest of this call's output is dropped]\n"
)
DROPPED = "[jupyter-anvil: {count} log records of this app were dropped: the store could not keep up]"


def cut_to_bytes(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (never inside a character), and
    how many bytes were cut off."""
    if len(text) * 4 <= limit:  # fast path: cannot be over
        return text, 0
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text, 0
    kept = data[:limit].decode("utf-8", "ignore")
    return kept, len(data) - len(kept.encode("utf-8", "surrogatepass"))


class AppLog:
    def __init__(self, store: Store, max_records_per_app: int = 5000, flush_every: float = 0.25) -> None:
        self.store = store
        self.max_records = max_records_per_app
        self.flush_every = flush_every
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._dropped: dict[str, int] = {}  # app -> records dropped since the last flush
        self._printed: OrderedDict[str, int] = OrderedDict()  # call id -> bytes printed
        self._flusher: asyncio.Task[None] | None = None
        self._writes = 0
        #: the live feed's records, read back as they are stored
        self.tail = LogTail(self)

    def start(self) -> None:
        self._flusher = spawn(self._flush_periodically())

    async def stop(self, timeout: float = 5.0) -> None:
        """Store what is pending, within ``timeout``; never raises (a failure is logged)."""
        self.tail.stop()
        if self._flusher is not None:
            self._flusher.cancel()
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except asyncio.TimeoutError:
            log.warning(
                "[jupyter-anvil] could not store the last app log records at stop: the store did not answer in %.0f s",
                timeout,
            )
        except Exception:
            log.exception("[jupyter-anvil] could not store the last app log records at stop")

    def write(self, app: str, function: str, call_id: str, stream: str, text: str) -> None:
        if stream not in LOG_STREAMS:  # a kernel names its own streams: any other is its print,
            stream = "stdout"  # under the call's printed limit (and within the column's 16 characters)
        text, cut = cut_to_bytes(text, RECORD_LIMIT)
        if cut:
            text += RECORD_CUT.format(limit=RECORD_LIMIT // 1024, more=cut)
        kept = self._within_call_limit(call_id, stream, text)  # counts what is kept, not what was printed
        if kept is None:
            return
        text = kept
        level = logging.WARNING if stream in ("traceback", "stderr") else logging.INFO
        logging.getLogger(f"jupyter_anvil.app.{app}").log(
            level, "[%s %s %s] %s", app, function, call_id, text.rstrip("\n")
        )
        size = len(text) + 200  # the other columns, roughly
        if self._pending_bytes + size > PENDING_LIMIT:
            self._dropped[app] = self._dropped.get(app, 0) + 1
            return
        self._pending_bytes += size
        self._pending.append(
            {"time": time.time(), "app": app, "function": function[:255], "call_id": call_id[:64],
             "stream": stream, "text": text}
        )  # fmt: skip

    def _within_call_limit(self, call_id: str, stream: str, text: str) -> str | None:
        """What of ``text`` fits in the call's printed total (None: nothing)."""
        if stream not in PRINTED:
            return text  # tracebacks and system notes are not the author's prints
        printed = self._printed.pop(call_id, 0)
        self._printed[call_id] = printed  # the most recent last
        while len(self._printed) > CALLS_TRACKED:
            self._printed.popitem(last=False)
        if printed >= CALL_LIMIT:
            return None
        kept, cut = cut_to_bytes(text, CALL_LIMIT - printed)
        if cut:
            self._printed[call_id] = CALL_LIMIT
            return kept + CALL_CUT.format(limit=CALL_LIMIT // 1024)
        self._printed[call_id] = printed + len(kept.encode("utf-8", "surrogatepass"))
        return kept

    async def flush(self) -> None:
        rows, self._pending, self._pending_bytes = self._pending, [], 0
        for app, count in self._dropped.items():
            rows.append(
                {"time": time.time(), "app": app, "function": "(log)", "call_id": "", "stream": "system",
                 "text": DROPPED.format(count=count)}
            )  # fmt: skip
        self._dropped = {}
        if not rows:
            return
        self._writes += 1
        prune = self._writes % 20 == 0

        def work() -> None:
            with self.store.engine.begin() as db:
                numbered_in_commit_order(db, log_records)  # readers tail by seq: see numbering.py
                db.execute(log_records.insert(), rows)
                if prune:
                    for app in {r["app"] for r in rows}:
                        newest = sa.select(log_records.c.seq).where(log_records.c.app == app)
                        cutoff = db.execute(
                            newest.order_by(log_records.c.seq.desc()).offset(self.max_records).limit(1)
                        ).scalar()
                        if cutoff is not None:
                            db.execute(
                                log_records.delete().where(log_records.c.app == app, log_records.c.seq <= cutoff)
                            )

        try:
            await self.store.run(work)
        except BaseException:
            self._take_back(rows)
            raise
        self.tail.flushed()

    def _take_back(self, rows: list[dict[str, Any]]) -> None:
        """Put records a failed write took back in front of the queue, within its cap."""
        kept: list[dict[str, Any]] = []
        size = self._pending_bytes
        for row in rows:
            row_size = len(row["text"]) + 200
            if size + row_size > PENDING_LIMIT:
                self._dropped[row["app"]] = self._dropped.get(row["app"], 0) + 1
                continue
            size += row_size
            kept.append(row)
        self._pending[:0] = kept
        self._pending_bytes = size

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await self.flush()
            except Exception:  # kept for the next try; the log goes on; say so
                log.exception("[jupyter-anvil] could not store app log records (will try again)")

    async def read(self, app: str | None = None, since: int = 0, limit: int = 1000) -> list[LogRecord]:
        """Records after sequence number ``since``, oldest first, for one app or all."""
        try:
            await self.flush()
        except Exception:  # the reader still gets what is stored
            log.exception("[jupyter-anvil] could not store app log records (will try again)")

        def work() -> list[LogRecord]:
            # a BIGINT parameter, as the seq column is on PostgreSQL (migration 0006): a caller's
            # since up to 2**63 (anvil/api/logs takes that much) is no rows, not a range error
            after = log_records.c.seq > sa.literal(since, sa.BigInteger)
            query = sa.select(log_records).where(after).order_by(log_records.c.seq).limit(limit)
            if app:
                query = query.where(log_records.c.app == app)
            with self.store.engine.begin() as db:
                return [cast("LogRecord", dict(row)) for row in db.execute(query).mappings()]

        return await self.store.run(work)
