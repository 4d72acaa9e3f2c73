"""The per-call state, kept per worker thread: which call this is, its session,
cookies and context (who called, from where)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cookies import CookieJar
    from .session import SessionData
    from .tasks import TaskState


@dataclass
class CallFrame:
    """One server call running on this thread."""

    call_id: str
    command: str
    depth: int = 0
    output: dict[str, list[str]] = field(default_factory=dict)
    #: the session and cookies, shared with the calls it makes (they are one session)
    session: SessionData | None = None
    cookies: dict[str, CookieJar] = field(default_factory=dict)
    #: what the host says about the call: client, remote caller, call stack
    info: dict[str, Any] = field(default_factory=dict)
    #: True for the call that owns the session: it reports the changes when it ends
    owns_session: bool = False
    #: the ``task_state`` of a background task (None for ordinary calls)
    task_state: TaskState | None = None


_local = threading.local()


def current() -> CallFrame | None:
    return getattr(_local, "frame", None)


def push(frame: CallFrame | None) -> CallFrame | None:
    previous = current()
    _local.frame = frame
    return previous
