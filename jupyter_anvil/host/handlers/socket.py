"""Many server calls over one WebSocket, in the uplink protocol's message shapes.

``{"type": "HELLO", "session": token | null, "client": "browser"}`` first (answered with
``{"type": "SESSION", "session": token}``), then ``{"type": "CALL", "id", "command",
"args", "kwargs", "objects"}`` in and ``{"id", "response" | "error", "objects"}`` out,
with Media as CHUNK_HEADER + binary frame pairs both ways (protocol §5, §10).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado import web, websocket

from ... import errors
from ..messages import Caller, CallRequest
from ..sessions import SessionExpired
from .base import services
from .callers import cookie_headers, make_caller, socket_admitted
from .calls import CHUNK_BYTES, MAX_MEDIA_BYTES, MAX_REQUEST_BYTES, parse_call

SESSION_EXPIRED = errors.SessionExpiredError("Session expired")


class CallSocketHandler(websocket.WebSocketHandler):
    """``anvil/apps/<app>/_/ws``: one connection is one window, so one session."""

    @property
    def max_message_size(self) -> int:  # type: ignore[override]
        return MAX_REQUEST_BYTES

    def prepare(self) -> None:
        # the handshake is judged here, before tornado's own origin check, which counts
        # http:// and https:// as one origin and asks nothing without an Origin header
        # (a handshake addressed to a foreign host, DNS rebinding, is refused all the same)
        if not socket_admitted(self, self.path_kwargs["app"], self.request.headers.get("Origin")):
            raise web.HTTPError(403)

    def check_origin(self, origin: str) -> bool:
        return socket_admitted(self, self.path_kwargs["app"], origin)

    def open(self, app: str) -> None:  # type: ignore[override]
        self.app = app
        self.caller: Caller | None = None
        self.expired = False
        self._greeting: asyncio.Task[None] | None = None
        # calls whose Media is still arriving: the request, media ids not yet complete, chunks so far
        self._waiting: dict[str, tuple[CallRequest, set[str], dict[str, list[bytes]]]] = {}
        self._chunk_target: tuple[str, str, bool] | None = None
        self._media_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- messages in ----------------------------------------------------------------------
    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._on_chunk(message)
            return
        try:
            data = json.loads(message)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._send_error(None, errors.SerializationError("Messages must be JSON objects"))
            return
        kind = data.get("type")
        if kind == "CALL":
            self._on_call(data)
        elif kind == "CHUNK_HEADER":
            self._chunk_target = (str(data.get("requestId")), str(data.get("mediaId")), bool(data.get("lastChunk")))
        elif kind == "HELLO":
            self._greeting = asyncio.ensure_future(self._on_hello(data, self._greeting))
        else:
            self._send_error(data.get("id"), errors.SerializationError(f"Unknown message type {kind!r}"))

    async def _on_hello(self, data: dict[str, Any], previous: asyncio.Task[None] | None) -> None:
        """Resume the window's session, or start one (``"session": null``, which is also
        how a page leaves an expired session: Anvil's ``reset_session``)."""
        if previous is not None:
            await previous
        client_type = "browser" if data.get("client") == "browser" else "http"
        token = data.get("session")
        sessions = services(self).sessions
        try:
            session = await sessions.resume(token, self.app) if token else await sessions.create(self.app, client_type)
        except SessionExpired:
            self.caller, self.expired = None, True
            self._write({"type": "SESSION", "session": None, "error": wire_error(SESSION_EXPIRED)})
            return
        self.caller, self.expired = make_caller(self, self.app, session, client_type), False
        self._write({"type": "SESSION", "session": session.token})

    def _on_call(self, data: dict[str, Any]) -> None:
        call_id = data.get("id")
        if not isinstance(call_id, str) or not call_id:
            self._send_error(None, errors.SerializationError("A CALL needs a string 'id'"))
            return
        command = data.get("command")
        if not isinstance(command, str):
            self._send_error(call_id, errors.SerializationError("A CALL needs a string 'command'"))
            return
        try:
            request = parse_call(data, command)
        except errors.SerializationError as e:
            self._send_error(call_id, e)
            return
        media_ids = {str(o.get("id")) for o in request.objects if "DataMedia" in (o.get("type") or [])}
        if media_ids:
            self._waiting[call_id] = (request, media_ids, {})
        else:
            self._dispatch(call_id, request)

    def _on_chunk(self, chunk: bytes) -> None:
        target, self._chunk_target = self._chunk_target, None
        if target is None or target[0] not in self._waiting:
            return  # a binary frame with no header (or for a call already failed): drop it
        call_id, media_id, last = target
        request, outstanding, chunks = self._waiting[call_id]
        if media_id not in outstanding:
            return
        self._media_bytes += len(chunk)
        if self._media_bytes > MAX_MEDIA_BYTES:
            del self._waiting[call_id]
            self._media_bytes -= sum(len(c) for parts in chunks.values() for c in parts) + len(chunk)
            self._send_error(call_id, errors.SerializationError("Too much Media data in flight on this connection"))
            return
        chunks.setdefault(media_id, []).append(chunk)
        if last:
            outstanding.discard(media_id)
            request.media[media_id] = b"".join(chunks.pop(media_id))
            self._media_bytes -= len(request.media[media_id])
            if not outstanding:
                del self._waiting[call_id]
                self._dispatch(call_id, request)

    # -- running calls ----------------------------------------------------------------------
    def _dispatch(self, call_id: str, request: CallRequest) -> None:
        task = asyncio.create_task(self._run(call_id, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, call_id: str, request: CallRequest) -> None:
        if self._greeting is not None:
            await self._greeting  # calls sent right after HELLO wait for the session
        elif self.caller is None and not self.expired:
            # a client that never says HELLO still gets a session, stored once it holds something
            self.caller = make_caller(self, self.app, services(self).sessions.new(self.app, "http"), "http")
        if self.expired or self.caller is None:
            self._send_error(call_id, SESSION_EXPIRED)
            return
        request.caller = self.caller
        reply = await services(self).calls.call(self.app, request)
        if reply.error is not None and reply.error.get("type") == SESSION_EXPIRED.wire_name:
            self.caller, self.expired = None, True  # until the page starts a new session
        if self.ws_connection is None:
            return
        message = {"id": call_id, **reply.to_json()}
        if reply.cookie_changes:
            headers = cookie_headers(self, self.app, reply.cookie_changes)
            message["cookies"] = services(self).cookie_tickets.issue(self.app, headers)
        self._write(message)
        if reply.error is None:
            for media_id, content in reply.media.items():
                self._send_media(call_id, media_id, content)

    # -- messages out ----------------------------------------------------------------------
    def _write(self, message: dict[str, Any]) -> None:
        if self.ws_connection is not None:
            self.write_message(json.dumps(message, allow_nan=False))

    def _send_media(self, call_id: str, media_id: str, content: bytes) -> None:
        chunks = [content[i : i + CHUNK_BYTES] for i in range(0, len(content), CHUNK_BYTES)] or [b""]
        for index, chunk in enumerate(chunks):
            header = {
                "type": "CHUNK_HEADER",
                "requestId": call_id,
                "mediaId": media_id,
                "chunkIndex": index,
                "lastChunk": index == len(chunks) - 1,
            }
            # header and its binary frame back to back: the client pairs them
            self.write_message(json.dumps(header))
            self.write_message(chunk, binary=True)

    def _send_error(self, call_id: Any, exc: errors.AnvilError) -> None:
        self._write({"id": call_id, "error": wire_error(exc)})

    def on_close(self) -> None:
        self._waiting.clear()


def wire_error(exc: errors.AnvilError) -> dict[str, Any]:
    error = errors.to_wire(exc)
    return {"type": error["type"], "message": error["message"]}
