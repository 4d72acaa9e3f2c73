"""Many server calls over one WebSocket, in the uplink protocol's message shapes.

``{"type": "HELLO", "session": token | null, "client": "browser"}`` first (answered with
``{"type": "SESSION", "session": token | null}``), then ``{"type": "CALL", "id", "command",
"args", "kwargs", "objects"}`` in and ``{"id", "response" | "error", "objects"}`` out,
with Media as CHUNK_HEADER + binary frame pairs both ways (protocol §5, §10).

A token always names a stored session (as over HTTP): a HELLO without one starts a
fresh session that is stored only once it holds something, and is answered with
``"session": null``. The call that stores it is preceded by
``{"type": "SESSION", "session": token, "call": id}``, from which the client keeps the
token (``"call"`` tells it from a HELLO's answer).

A CALL may carry ``"idempotencyKey"`` (run at most once per session, see host/idempotency/):
on a session not stored yet, the session is stored and its SESSION message sent before the
call runs; a reply that is the stored outcome of an earlier run says ``"replayed": true``.

Every CALL with an id gets exactly one reply, whatever it held. What a client can make
the server hold is bounded: calls in flight and calls waiting for Media per connection,
Media bytes per connection and across the server (:mod:`.socket_limits`), and replies
the client has not read (past that bound the connection is closed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from tornado import iostream, web, websocket

from ... import errors
from ..calls import CallOutcome
from ..idempotency import check_key
from ..messages import Caller, CallReply, CallRequest
from ..sessions import Session
from .base import services
from .callers import cookie_headers, make_caller, socket_admitted
from .calls import CHUNK_BYTES, MAX_REQUEST_BYTES, is_media, load_json, parse_call
from .socket_limits import (
    HEAVY_BYTES,
    MAX_CALLS_IN_FLIGHT,
    MAX_CONNECTION_MEDIA_BYTES,
    MAX_HELLOS_PENDING,
    MAX_UNREAD_BYTES,
    MAX_WAITING_CALLS,
    SEND_WINDOW,
    STALL_SECONDS,
    mib,
    release_freed_memory_soon,
)

log = logging.getLogger(__name__)
SESSION_EXPIRED = errors.SessionExpiredError("Session expired")
NOT_AN_OBJECT = "Messages must be JSON objects"
#: a CALL's idempotency key (run at most once per session); its reply says ``"replayed": true``
#: when it is the stored outcome of an earlier run
IDEMPOTENCY_FIELD = "idempotencyKey"
#: a CALL's id among its leading string fields, for a message too malformed to parse
#: (nested too deeply): its caller still gets a reply to wait on
_STRING = r'"(?:[^"\\]|\\.)*"'
_LEADING_ID = re.compile(rf'\s*\{{\s*(?:"(?:type|command)"\s*:\s*{_STRING}\s*,\s*)*"id"\s*:\s*({_STRING})')


@dataclass
class _MediaCall:
    """A call whose Media is still arriving (or, once dispatched, still running)."""

    request: CallRequest
    outstanding: set[str]
    chunks: dict[str, list[bytes]] = field(default_factory=dict)
    #: Media bytes this call holds against the connection's and the server's budgets
    held: int = 0


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
            raise web.HTTPError(errors.http_status(errors.PermissionDenied("This WebSocket handshake is not allowed")))

    def check_origin(self, origin: str) -> bool:
        return socket_admitted(self, self.path_kwargs["app"], origin)

    def open(self, app: str) -> None:  # type: ignore[override]
        self.app = app
        self.caller: Caller | None = None
        self.expired = False
        #: the client knows the token of this connection's session (it presented it, or
        #: was told once the session was stored)
        self._told = False
        #: this connection's cookies: read at the handshake, then kept current with the
        #: changes its own calls make, across HELLOs (a socket cannot see the browser's jar)
        self._cookies: dict[str, dict[str, Any]] | None = None
        self._greeting: asyncio.Future[None] | None = None
        self._hellos_pending = 0
        self._waiting: dict[str, _MediaCall] = {}
        self._chunk_target: tuple[str, str, bool] | None = None
        self._media_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # replies going out (see _deliver)
        self._delivering = asyncio.Lock()
        self._queued = 0  # bytes of replies waiting for their turn
        self._queued_replies = 0
        self._last_write: asyncio.Future[None] | None = None
        #: it held much (Media, big replies): on close, hand the freed memory back
        self._heavy = False

    # -- messages in ----------------------------------------------------------------------
    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._on_chunk(message)
            return
        try:
            data = load_json(message, invalid=NOT_AN_OBJECT)
        except errors.SerializationError as e:
            self._send_error(_call_id_of(message), e)
            return
        if not isinstance(data, dict):
            self._send_error(None, errors.SerializationError(NOT_AN_OBJECT))
            return
        kind = data.get("type")
        if kind == "CALL":
            self._on_call(data)
        elif kind == "CHUNK_HEADER":
            self._chunk_target = (str(data.get("requestId")), str(data.get("mediaId")), bool(data.get("lastChunk")))
        elif kind == "HELLO":
            if self._greeting is not None and self._hellos_pending >= MAX_HELLOS_PENDING:
                # each waits for the one before: a flood would chain without end
                self.close(1008, "Too many HELLOs waiting for an answer")
                return
            self._hellos_pending += 1
            self._greeting = asyncio.ensure_future(self._on_hello(data, self._greeting))
        else:
            self._send_error(data.get("id"), errors.SerializationError(f"Unknown message type {kind!r}"))

    async def _on_hello(self, data: dict[str, Any], previous: asyncio.Future[None] | None) -> None:
        """Resume the window's session, or start one (``"session": null``, which is also
        how a page leaves an expired session: Anvil's ``reset_session``). A new session
        is stored, and its token told, only once it holds something (see _tell_stored)."""
        try:
            if previous is not None:
                await previous
            await self._greet(data)
        finally:
            self._hellos_pending -= 1

    async def _greet(self, data: dict[str, Any]) -> None:
        client_type = "browser" if data.get("client") == "browser" else "http"
        try:
            session = await services(self).calls.open_session(self.app, data.get("session"), client_type)
        except errors.AnvilError as e:  # expired, or a store fault: the page hears why, its calls are refused
            self.caller, self.expired = None, True
            self._write({"type": "SESSION", "session": None, "error": wire_error(e)})
            return
        self.caller, self.expired = self._make_caller(session, client_type), False
        self._told = session.persisted  # a resumed session: the client presented its token
        self._write({"type": "SESSION", "session": session.token if session.persisted else None})

    def _make_caller(self, session: Session, client_type: str) -> Caller:
        caller = make_caller(self, self.app, session, client_type)
        if caller.cookies is not None:
            # one jar per connection: the handshake's cookies plus every change since
            if self._cookies is None:
                self._cookies = caller.cookies
            caller.cookies = self._cookies
        return caller

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
            key = data.get(IDEMPOTENCY_FIELD)
            if key is not None:
                request.idempotency_key = check_key(key, f"A CALL's {IDEMPOTENCY_FIELD!r}")
        except errors.SerializationError as e:
            self._send_error(call_id, e)
            return
        if len(self._tasks) + len(self._waiting) >= MAX_CALLS_IN_FLIGHT:
            self._send_error(
                call_id,
                errors.QuotaExceededError(
                    f"Too many calls in flight on this connection (the limit is {MAX_CALLS_IN_FLIGHT})"
                ),
            )
            return
        media_ids = {str(o.get("id")) for o in request.objects if is_media(o)}
        if not media_ids:
            self._dispatch(call_id, request, None)
        elif call_id in self._waiting:
            self._send_error(call_id, errors.SerializationError(f"Call id {call_id!r} is already waiting for Media"))
        elif len(self._waiting) >= MAX_WAITING_CALLS:
            self._send_error(
                call_id,
                errors.QuotaExceededError(
                    f"Too many calls waiting for Media on this connection (the limit is {MAX_WAITING_CALLS})"
                ),
            )
        else:
            self._waiting[call_id] = _MediaCall(request, media_ids)

    def _on_chunk(self, chunk: bytes) -> None:
        target, self._chunk_target = self._chunk_target, None
        if target is None or target[0] not in self._waiting:
            return  # a binary frame with no header (or for a call already failed): drop it
        call_id, media_id, last = target
        waiting = self._waiting[call_id]
        if media_id not in waiting.outstanding:
            return
        size = len(chunk)
        if self._media_bytes + size > MAX_CONNECTION_MEDIA_BYTES:
            self._refuse_media(
                call_id,
                f"Too much Media data in flight on this connection (the limit is {mib(MAX_CONNECTION_MEDIA_BYTES)})",
            )
            return
        budget = services(self).media_budget
        if not budget.take(size):
            self._refuse_media(
                call_id,
                f"The server holds too much Media data in flight (the limit is {mib(budget.limit)}); try again shortly",
            )
            return
        self._media_bytes += size
        self._heavy = self._heavy or self._media_bytes > HEAVY_BYTES
        waiting.held += size
        waiting.chunks.setdefault(media_id, []).append(chunk)
        if last:
            waiting.outstanding.discard(media_id)
            waiting.request.media[media_id] = b"".join(waiting.chunks.pop(media_id))
            if not waiting.outstanding:
                del self._waiting[call_id]
                self._dispatch(call_id, waiting.request, waiting)

    def _refuse_media(self, call_id: str, message: str) -> None:
        self._release(self._waiting.pop(call_id))
        self._send_error(call_id, errors.QuotaExceededError(message))

    def _release(self, waiting: _MediaCall | None) -> None:
        """Give a call's Media bytes back to the connection's and the server's budgets."""
        if waiting is not None and waiting.held:
            self._media_bytes -= waiting.held
            services(self).media_budget.give_back(waiting.held)
            waiting.held = 0
            waiting.chunks.clear()

    # -- running calls ----------------------------------------------------------------------
    def _dispatch(self, call_id: str, request: CallRequest, media: _MediaCall | None) -> None:
        task = asyncio.create_task(self._run(call_id, request, media))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, call_id: str, request: CallRequest, media: _MediaCall | None) -> None:
        """Run one call and send its one reply, whatever happens on the way."""
        try:
            outcome = await self._call(call_id, request)
            if self.ws_connection is not None:
                self._tell_stored(call_id, request.caller, outcome.session_token)
                await self._send_reply(call_id, outcome.reply, outcome.replayed)
        except Exception:
            log.exception("[jupyter-anvil] call %s over the WebSocket of app %s failed", call_id, self.app)
            self._send_error(call_id, errors.InternalError("The server could not run this call"))
        finally:
            self._release(media)  # the Media bytes stay counted until the call is over

    async def _call(self, call_id: str, request: CallRequest) -> CallOutcome:
        calls = services(self).calls
        if self._greeting is not None:
            await self._greeting  # calls sent right after HELLO wait for the session
        elif self.caller is None and not self.expired:
            # a client that never says HELLO still gets a session, stored once it holds
            # something (without a token, opening one never waits: no other call can race it)
            self.caller = self._make_caller(await calls.open_session(self.app, None, "http"), "http")
            self._told = False
        if self.expired or self.caller is None:
            return CallOutcome(CallReply.failure(SESSION_EXPIRED), None)
        request.caller = caller = self.caller
        if request.idempotency_key is not None and not caller.session.persisted:
            # a key is scoped to a stored session: store it first, and tell the client its
            # token before the call runs, so a replay after a lost reply presents it
            try:
                await calls.keep_session_for_key(caller)
            except errors.AnvilError as e:
                return CallOutcome(CallReply.failure(e), None)
            self._tell_stored(call_id, caller, caller.session.token)
        outcome = await calls.call(self.app, request)
        error = outcome.reply.error
        if error is not None and error.get("type") == SESSION_EXPIRED.wire_name:
            self.caller, self.expired = None, True  # until the page starts a new session
        return outcome

    def _tell_stored(self, call_id: str, caller: Caller | None, token: str | None) -> None:
        """The call stored this connection's new session: the client learns its token
        now, right before the call's reply, so a reconnect (even to a restarted server)
        resumes it. Not for a session the connection has left since (a later HELLO): the
        client moved on from it."""
        if caller is None or caller is not self.caller or self._told or token is None:
            return
        self._told = True
        self._write({"type": "SESSION", "session": token, "call": call_id})

    async def _send_reply(self, call_id: str, reply: CallReply, replayed: bool = False) -> None:
        message = {"id": call_id, **reply.to_json()}
        if replayed:
            message["replayed"] = True
        if reply.cookie_changes:
            headers = cookie_headers(self, self.app, reply.cookie_changes)
            message["cookies"] = services(self).cookie_tickets.issue(self.app, headers)
        text = self._encode(message)
        if text is None:
            return
        frames: list[str | bytes] = [text]
        if reply.error is None:
            for media_id, content in reply.media.items():
                frames.extend(media_frames(call_id, media_id, content))
        await self._deliver(frames)

    # -- messages out ----------------------------------------------------------------------
    # Replies go out as the client takes them: while more than SEND_WINDOW bytes sit unread
    # the next frame waits (one reply at a time, so its Media chunks stay together), and a
    # big Media download never piles up in the server's memory. A client that lets replies
    # wait past MAX_UNREAD_BYTES (one bigger reply alone may wait), or takes nothing for
    # STALL_SECONDS, is not reading: it is cut off.

    async def _deliver(self, frames: list[str | bytes]) -> None:
        size = sum(len(frame) for frame in frames)
        self._heavy = self._heavy or size > HEAVY_BYTES
        if self._queued_replies and self._queued + size > MAX_UNREAD_BYTES:
            self._cut_off()
            return
        self._queued += size
        self._queued_replies += 1
        try:
            async with self._delivering:
                self._queued -= size  # in delivery now: the window bounds what it adds
                self._queued_replies -= 1
                size = 0
                for frame in frames:
                    # wait only before a text frame: a CHUNK_HEADER and its binary frame
                    # go out back to back, nothing written between them
                    if isinstance(frame, str) and self._unread() > SEND_WINDOW and not await self._drained():
                        return
                    if not self._send_frame(frame):
                        return
        finally:
            if size:  # still waiting when the connection went
                self._queued -= size
                self._queued_replies -= 1

    async def _drained(self) -> bool:
        """Wait until what was written so far has gone; False if the connection closed,
        or was cut off for taking nothing for STALL_SECONDS."""
        last = self._last_write
        while last is not None and not last.done():
            before = self._unread()
            try:
                await asyncio.wait_for(asyncio.shield(last), STALL_SECONDS)
            except asyncio.TimeoutError:
                if self._unread() >= before:
                    self._cut_off()
                    return False
            except (websocket.WebSocketClosedError, iostream.StreamClosedError):
                return False  # the connection is closing
        return self.ws_connection is not None

    def _write(self, message: dict[str, Any]) -> bool:
        """Send a small message (SESSION, an error reply) now; False if it was not sent."""
        if self._unread() > MAX_UNREAD_BYTES:
            self._cut_off()
        text = self._encode(message)
        return text is not None and self._send_frame(text)

    def _encode(self, message: dict[str, Any]) -> str | None:
        """A message as JSON; one that cannot be becomes an error reply to its call."""
        try:
            # ensure_ascii: a lone surrogate in a reply is escaped, never an encoding error
            return json.dumps(message, allow_nan=False, ensure_ascii=True)
        except (ValueError, TypeError):
            log.exception("[jupyter-anvil] a reply of app %s could not be encoded as JSON", self.app)
            error = errors.InternalError("The server could not encode this call's reply")
            self._send_frame(json.dumps({"id": message.get("id"), "error": wire_error(error)}))
            return None

    def _send_frame(self, frame: str | bytes) -> bool:
        if self.ws_connection is None:
            return False
        try:
            sent = self.write_message(frame, binary=isinstance(frame, bytes))
        except websocket.WebSocketClosedError:
            return False  # the client went away: on_close frees what it held
        # only _drained awaits a write; one cut short by the connection closing is no error
        sent.add_done_callback(_retrieve)
        self._last_write = sent
        return True

    def _unread(self) -> int:
        """Bytes written to this connection that the client has not taken yet."""
        stream = getattr(self.ws_connection, "stream", None)
        buffer = getattr(stream, "_write_buffer", None)
        return len(buffer) if buffer is not None else 0

    def _cut_off(self) -> None:
        """Close a connection whose client does not read its replies."""
        connection = self.ws_connection
        if connection is None:
            return
        log.warning("[jupyter-anvil] closing a WebSocket of app %s: its client is not reading its replies", self.app)
        self._heavy = True
        stream = connection.stream
        self.close(1008, "Replies not read: the client fell too far behind")
        if stream is not None:
            stream.close()  # drop the unsent data now: this client will not read it

    def _send_error(self, call_id: Any, exc: errors.AnvilError) -> None:
        self._write({"id": call_id, "error": wire_error(exc)})

    def on_close(self) -> None:
        # calls still waiting for Media will never get it: free their bytes now (calls
        # already running free theirs when they end; their replies are dropped)
        for waiting in self._waiting.values():
            self._release(waiting)
        self._waiting.clear()
        self._chunk_target = None
        if self._heavy:
            release_freed_memory_soon()


def media_frames(call_id: str, media_id: str, content: bytes) -> list[str | bytes]:
    """Media as CHUNK_HEADER and binary frame pairs (back to back: the client pairs them)."""
    frames: list[str | bytes] = []
    chunks = [content[i : i + CHUNK_BYTES] for i in range(0, len(content), CHUNK_BYTES)] or [b""]
    for index, chunk in enumerate(chunks):
        header = {
            "type": "CHUNK_HEADER",
            "requestId": call_id,
            "mediaId": media_id,
            "chunkIndex": index,
            "lastChunk": index == len(chunks) - 1,
        }
        frames += [json.dumps(header), chunk]
    return frames


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def wire_error(exc: errors.AnvilError) -> dict[str, Any]:
    error = errors.to_wire(exc)
    return {"type": error["type"], "message": error["message"]}


def _call_id_of(text: str) -> str | None:
    """The id of a message we refused, so its caller hears why: from the plain parse, or
    for one too malformed to parse, from its leading fields (where clients put it)."""
    try:
        data = json.loads(text)
    except (RecursionError, ValueError):
        data = None
    if isinstance(data, dict):
        call_id = data.get("id")
        return call_id if isinstance(call_id, str) else None
    match = _LEADING_ID.match(text[:4096])
    if match is None:
        return None
    try:
        call_id = json.loads(match.group(1))
    except ValueError:
        return None
    return call_id if isinstance(call_id, str) else None
