"""``anvil.private.session.keep``: a browser asks the server to store its session now.

An offline client replays queued calls with idempotency keys, and a key is scoped to a
stored session. A page that never stored its session (it holds nothing yet) calls this
first, so every replay after it presents one token: the session is stored through the
usual path (``session_changes={"persist": True}``, committed before the reply), and its
token comes back the usual way (``X-Anvil-Session``, or the WebSocket's SESSION message).
"""

from __future__ import annotations

from ..protocol import RESERVED_PREFIX
from .host_services import HostCall, HostService, on_callers_session
from .messages import CallReply

KEEP_SESSION = f"{RESERVED_PREFIX}session.keep"


def host_services() -> list[HostService]:
    async def keep(call: HostCall) -> CallReply:
        # no arguments, returns None; what it changes is the caller's own session only
        return CallReply(response=None, session_changes={"persist": True})

    # a browser may call it: it only stores the caller's own (empty) session
    return [on_callers_session(KEEP_SESSION, keep)]
