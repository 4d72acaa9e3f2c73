"""What one WebSocket client may make the server hold, and the Media budget all share.

A client can send calls whose Media never finishes, and stop reading its replies; each
would otherwise keep bytes in the server's memory for as long as the connection lives.
"""

from __future__ import annotations

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
#: Media bytes held by all WebSocket connections of this server together
MAX_SERVER_MEDIA_BYTES = 256 * MIB
#: reply bytes written but not yet taken by the client; past this the connection closes
MAX_UNREAD_BYTES = 32 * MIB


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


#: one per server process (all handlers run on its one event loop)
SERVER_MEDIA = MediaBudget(MAX_SERVER_MEDIA_BYTES)
