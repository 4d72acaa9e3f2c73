"""The app log: what calls print, full tracebacks and load errors, per app.

Each record is tagged with app, function and call id. Records are kept in a bounded
ring per app and also go to the server's logger (``jupyter_anvil.app.<name>``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class LogRecord:
    seq: int
    time: float
    app: str
    function: str
    call_id: str
    stream: str  # stdout, stderr, traceback, or system
    text: str


class AppLog:
    def __init__(self, max_records_per_app: int = 5000) -> None:
        self.max_records = max_records_per_app
        self._records: dict[str, deque[LogRecord]] = {}
        self._seq = itertools.count(1)

    def write(self, app: str, function: str, call_id: str, stream: str, text: str) -> None:
        record = LogRecord(next(self._seq), time.time(), app, function, call_id, stream, text)
        self._records.setdefault(app, deque(maxlen=self.max_records)).append(record)
        level = logging.WARNING if stream in ("traceback", "stderr") else logging.INFO
        logging.getLogger(f"jupyter_anvil.app.{app}").log(
            level, "[%s %s %s] %s", app, function, call_id, text.rstrip("\n")
        )

    def read(self, app: str | None = None, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Records after sequence number ``since``, oldest first, for one app or all."""
        sources = [self._records.get(app, deque())] if app else list(self._records.values())
        records = sorted((r for q in sources for r in q if r.seq > since), key=lambda r: r.seq)
        return [asdict(r) for r in records[:limit]]
