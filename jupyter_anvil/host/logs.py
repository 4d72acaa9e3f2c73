"""The app log: what calls print, full tracebacks and load errors, per app.

Each record is tagged with app, function and call id. Records go to the server's
logger (``jupyter_anvil.app.<name>``) at once and to the store in batches (twice a
second, off the event loop), so the log outlives the server; the newest
``max_records_per_app`` records of each app are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import sqlalchemy as sa

from .background import spawn
from .store import Store, metadata

log_records = sa.Table(
    "anvil_log",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("app", sa.String(255), nullable=False, index=True),
    sa.Column("function", sa.String(255), nullable=False),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("stream", sa.String(16), nullable=False),  # stdout, stderr, traceback, or system
    sa.Column("text", sa.Text, nullable=False),
)


class AppLog:
    def __init__(self, store: Store, max_records_per_app: int = 5000, flush_every: float = 0.5) -> None:
        self.store = store
        self.max_records = max_records_per_app
        self.flush_every = flush_every
        self._pending: list[dict[str, Any]] = []
        self._seq = self._last_seq()
        self._flusher: asyncio.Task[None] | None = None
        self._writes = 0

    def _last_seq(self) -> int:
        with self.store.engine.begin() as db:
            return int(db.execute(sa.select(sa.func.max(log_records.c.seq))).scalar() or 0)

    def start(self) -> None:
        self._flusher = spawn(self._flush_periodically())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()

    def write(self, app: str, function: str, call_id: str, stream: str, text: str) -> None:
        self._seq += 1
        self._pending.append(
            {"seq": self._seq, "time": time.time(), "app": app, "function": function[:255],
             "call_id": call_id[:64], "stream": stream, "text": text}
        )  # fmt: skip
        level = logging.WARNING if stream in ("traceback", "stderr") else logging.INFO
        logging.getLogger(f"jupyter_anvil.app.{app}").log(
            level, "[%s %s %s] %s", app, function, call_id, text.rstrip("\n")
        )

    async def flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        self._writes += 1
        prune = self._writes % 20 == 0

        def work() -> None:
            with self.store.engine.begin() as db:
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

        await self.store.run(work)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await self.flush()
            except Exception:  # the records are lost, the log goes on; say so
                logging.getLogger(__name__).exception("[jupyter-anvil] could not store app log records")

    async def read(self, app: str | None = None, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Records after sequence number ``since``, oldest first, for one app or all."""
        await self.flush()

        def work() -> list[dict[str, Any]]:
            query = sa.select(log_records).where(log_records.c.seq > since).order_by(log_records.c.seq).limit(limit)
            if app:
                query = query.where(log_records.c.app == app)
            with self.store.engine.begin() as db:
                return [dict(row) for row in db.execute(query).mappings()]

        return await self.store.run(work)
