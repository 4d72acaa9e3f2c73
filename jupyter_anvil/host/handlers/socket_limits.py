"""What one WebSocket client may make the server hold, and the Media budget all share.

A client can send calls whose Media never finishes, and stop reading its replies; each
would otherwise keep bytes in the server's memory for as long as the connection lives.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

MIB = 1024 * 1024

#: calls running or waiting for Media on one connection (more are refused with an error)
MAX_CALLS_IN_FLIGHT = 256
#: HELLOs not yet answered on one connection (each waits for the one before); past
#: this the connection is closed
MAX_HELLOS_PENDING = 4096
#: calls waiting for their Media to arrive on one connection
MAX_WAITING_CALLS = 16
#: Media bytes held (arriving, or passed to a call still running) per connection
MAX_CONNECTION_MEDIA_BYTES = 128 * MIB
#: Media bytes held by all WebSocket connections of this server together, by default
#: (``--AnvilApp.websocket_media_mib``; the budget is made once, in extension.py)
DEFAULT_SERVER_MEDIA_MIB = 256
#: reply bytes written but not yet taken by the client, plus replies waiting to be
#: written; past this the connection closes (one bigger reply alone may go out)
MAX_UNREAD_BYTES = 32 * MIB
#: while more than this is unread, the next reply (or Media chunk) waits
SEND_WINDOW = 4 * MIB
#: a client that takes nothing of its replies for this long is cut off
STALL_SECONDS = 60.0


#: a connection that held more than this (Media, a reply) gives freed memory back on close
HEAVY_BYTES = 8 * MIB
#: how long after such a close (calls it left may still be finishing)
TRIM_DELAY = 5.0


def mib(size: int) -> str:
    return f"{size / MIB:g} MiB"


class MediaBudget:
    """Bytes of incoming Media the whole server may hold at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes, if they fit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        self.used = max(0, self.used - size)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_malloc_trim = _find_malloc_trim()
_trim_scheduled = False


def release_freed_memory_soon() -> None:
    """After a connection that held much closes: glibc keeps the heap memory Python freed
    for reuse, so the server's RSS would stay at its peak; ``malloc_trim`` returns it."""
    global _trim_scheduled
    if _malloc_trim is None or _trim_scheduled:
        return
    _trim_scheduled = True
    asyncio.get_running_loop().call_later(TRIM_DELAY, _trim)


def _trim() -> None:
    global _trim_scheduled
    _trim_scheduled = False
    if _malloc_trim is not None:
        _malloc_trim(0)
