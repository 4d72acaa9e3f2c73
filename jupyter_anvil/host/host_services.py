"""The reserved functions the host answers itself (``anvil.private.*``), in one table.

Each entry is a reserved name, the coroutine that answers it, and who may call it: server
code only (a browser is refused with the entry's own error and message, as Anvil refuses
it), or a browser too (entries that only read, given a capability such as a task id).
Background tasks' five functions are five entries (see :mod:`.task_calls`); a new host
service (email's send, schedules) is one more entry, handed to :class:`HostServices` where
the extension wires the services.

A reserved name the table does not hold is no function at all (NoServerFunctionError):
it is never passed on to a kernel, whatever the server code registered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..protocol import RESERVED_PREFIX
from .messages import CallReply, CallRequest


@dataclass(frozen=True)
class HostCall:
    """A call of a host service: the app it is made in, the request, and the context of
    whoever made it (a browser's own, or that of the server code that called)."""

    app: str
    request: CallRequest
    caller_context: dict[str, Any]


HostHandler = Callable[[HostCall], Awaitable[CallReply]]


@dataclass(frozen=True)
class Refusal:
    """What a browser is told when it calls a server-only host service."""

    error: type[errors.AnvilError]
    message: str


@dataclass(frozen=True)
class HostService:
    name: str
    handler: HostHandler
    #: None: a browser may call it too (it touches only the caller's own session); else what it is told
    browser_refusal: Refusal | None

    def check_caller(self, from_client: bool) -> None:
        """The one permission check of a host service."""
        if from_client and self.browser_refusal is not None:
            raise self.browser_refusal.error(self.browser_refusal.message)


def server_only(
    name: str, handler: HostHandler, refused_as: type[errors.AnvilError], refusal_message: str
) -> HostService:
    """An entry only server code may call; a browser gets ``refused_as(refusal_message)``."""
    return HostService(name, handler, Refusal(refused_as, refusal_message))


def browser_readable(name: str, handler: HostHandler) -> HostService:
    """An entry a browser may call too: it must only read what the caller names."""
    return HostService(name, handler, None)


def on_callers_session(name: str, handler: HostHandler) -> HostService:
    """An entry a browser may call too: it must touch nothing but the caller's own session."""
    return HostService(name, handler, None)


def is_reserved(name: str) -> bool:
    return name.startswith(RESERVED_PREFIX)


class HostServices:
    """The table: reserved name -> :class:`HostService`."""

    def __init__(self, entries: Iterable[HostService] = ()) -> None:
        self._entries: dict[str, HostService] = {}
        for entry in entries:
            if not is_reserved(entry.name):
                raise ValueError(f"a host service needs a reserved name (under {RESERVED_PREFIX}), not {entry.name!r}")
            if entry.name in self._entries:
                raise ValueError(f"two host services are named {entry.name!r}")
            self._entries[entry.name] = entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def find(self, command: str, from_client: bool) -> HostService | None:
        """The host service answering ``command``, checked against its caller; None when
        ``command`` is not reserved (server code answers it). Raises the entry's refusal
        for a browser calling a server-only entry, and NoServerFunctionError for a
        reserved name the table does not hold."""
        if not is_reserved(command):
            return None
        service = self._entries.get(command)
        if service is None:
            raise errors.NoServerFunctionError(f'No server function matching "{command}" has been registered')
        service.check_caller(from_client)
        return service
