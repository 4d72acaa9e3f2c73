"""The per-call context, kept per worker thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallFrame:
    """One server call running on this thread."""

    call_id: str
    command: str
    depth: int = 0
    output: dict[str, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


_local = threading.local()


def current() -> CallFrame | None:
    return getattr(_local, "frame", None)


def push(frame: CallFrame | None) -> CallFrame | None:
    previous = current()
    _local.frame = frame
    return previous
