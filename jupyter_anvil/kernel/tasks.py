"""Background tasks inside a kernel: ``task_state`` and the pump that sends it to the host.

The pump sends each running task's state at most four times a second, and only when it
changed, so a tight loop updating ``task_state`` cannot flood the comm.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import wire
from ..errors import SerializationError

WHAT = "anvil.server.task_state"
PUMP_INTERVAL = 0.25


class TaskState(dict[str, Any]):
    """A task's ``task_state``: a dict of portable values (no Media)."""

    def __setitem__(self, key: str, value: Any) -> None:
        check(value)
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for value in dict(*args, **kwargs).values():
            check(value)
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        check(default)
        return super().setdefault(key, default)


def check(value: Any) -> None:
    try:
        wire.encode_value(value, WHAT)
    except SerializationError as e:
        raise SerializationError(f"Illegal value in a {WHAT}. {e}") from None


def encode_state(state: dict[str, Any]) -> dict[str, Any] | None:
    """The state in wire form, or None if something in it (changed in place) is illegal."""
    try:
        return wire.encode_value(dict(state), WHAT)
    except SerializationError:
        return None


class StatePump:
    """A thread that sends changed task states to the host."""

    def __init__(
        self, running: Callable[[], Iterable[tuple[str, TaskState]]], send: Callable[[str, Any], None]
    ) -> None:
        self._running = running
        self._send = send
        self._sent: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="anvil-task-state", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(PUMP_INTERVAL)
            live = dict(self._running())
            for task_id in list(self._sent):
                if task_id not in live:
                    del self._sent[task_id]
            for task_id, state in live.items():
                encoded = encode_state(state)
                if encoded is not None and encoded != self._sent.get(task_id):
                    self._sent[task_id] = encoded
                    self._send(task_id, encoded)
