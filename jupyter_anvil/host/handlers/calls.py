"""Server calls over plain HTTP and over a WebSocket (uplink-protocol message shapes)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from tornado import web, websocket

from ... import errors
from ..messages import CallReply, CallRequest
from .base import PublicHandler, services, status_for

MAX_REQUEST_BYTES = 16 * 1024 * 1024
MAX_MEDIA_BYTES = 256 * 1024 * 1024
CHUNK_BYTES = 65536
TOO_BIG = (
    "Tried to pass too much data to a server function ({size} bytes; the limit is 16 MiB) - "
    "please use Media objects to transfer large amounts of data."
)


def parse_call(body: Any, command: str) -> CallRequest:
    """Validate a decoded JSON call body; raise SerializationError saying what is wrong."""
    if not isinstance(body, dict):
        raise errors.SerializationError('The request body must be a JSON object like {"args": [], "kwargs": {}}')
    args = body.get("args")
    kwargs = body.get("kwargs")
    objects = body.get("objects")
    args = [] if args is None else args
    kwargs = {} if kwargs is None else kwargs
    objects = [] if objects is None else objects
    if not isinstance(args, list):
        raise errors.SerializationError("'args' must be a JSON array")
    if not isinstance(kwargs, dict):
        raise errors.SerializationError("'kwargs' must be a JSON object")
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise errors.SerializationError("'objects' must be a JSON array of descriptor objects")
    return CallRequest(command=command, args=args, kwargs=kwargs, objects=objects)


def reply_message(reply: CallReply) -> dict[str, Any]:
    return reply.to_json()


@web.stream_request_body
class HttpCallHandler(PublicHandler):
    """``POST anvil/apps/<app>/_/call/<function>`` with ``{"args": [], "kwargs": {}}``."""

    def prepare(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            self.write_anvil_error(errors.SerializationError(TOO_BIG.format(size=length)), 413)

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > MAX_REQUEST_BYTES:
            self.write_anvil_error(errors.SerializationError(TOO_BIG.format(size=f"over {self._size}")), 413)
            return
        self._chunks.append(chunk)

    async def post(self, app: str, function: str) -> None:
        if self._finished:
            return
        try:
            request = self._parse(function)
        except errors.SerializationError as e:
            self.write_anvil_error(e, 400)
            return
        reply = await services(self).calls.call(app, request)
        body = reply_message(reply)
        if reply.error is None:
            inline_media(body, reply.media)
        self.write_json(200 if reply.error is None else status_for(reply.error), body)

    def _parse(self, function: str) -> CallRequest:
        content_type = self.request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise errors.SerializationError(f"Send the call as application/json, not {content_type}")
        raw = b"".join(self._chunks)
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise errors.SerializationError(f"The request body is not valid JSON: {e}") from None
        request = parse_call(body, function)
        request.media = extract_inline_media(request.objects)
        return request


def extract_inline_media(objects: list[dict[str, Any]]) -> dict[str, bytes]:
    """Over plain HTTP a DataMedia descriptor carries its bytes as ``base64``."""
    media: dict[str, bytes] = {}
    for descriptor in objects:
        if "DataMedia" in (descriptor.get("type") or []):
            media_id = str(descriptor.get("id"))
            try:
                media[media_id] = base64.b64decode(descriptor.pop("base64", "") or "", validate=True)
            except (binascii.Error, TypeError):
                raise errors.SerializationError(f"Media {media_id!r} has invalid base64 content") from None
    return media


def inline_media(body: dict[str, Any], media: dict[str, bytes]) -> None:
    for descriptor in body.get("objects", []):
        media_id = descriptor.get("id")
        if media_id in media:
            descriptor["base64"] = base64.b64encode(media[media_id]).decode("ascii")


class CallSocketHandler(websocket.WebSocketHandler):
    """``anvil/apps/<app>/_/ws``: many concurrent calls over one connection.

    ``{"type": "CALL", "id", "command", "args", "kwargs", "objects"}`` in; ``{"id",
    "response" | "error", "objects"}`` out; Media as CHUNK_HEADER + binary frame pairs
    both ways (uplink protocol §5, §10).
    """

    @property
    def max_message_size(self) -> int:  # type: ignore[override]
        return MAX_REQUEST_BYTES

    def open(self, app: str) -> None:  # type: ignore[override]
        self.app = app
        # calls whose Media is still arriving: the request, media ids not yet complete, chunks so far
        self._waiting: dict[str, tuple[CallRequest, set[str], dict[str, list[bytes]]]] = {}
        self._chunk_target: tuple[str, str, bool] | None = None
        self._media_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._on_chunk(message)
            return
        try:
            data = json.loads(message)
        except ValueError:
            self._send_error(None, errors.SerializationError("Messages must be JSON objects"))
            return
        if not isinstance(data, dict):
            self._send_error(None, errors.SerializationError("Messages must be JSON objects"))
            return
        kind = data.get("type")
        if kind == "CALL":
            self._on_call(data)
        elif kind == "CHUNK_HEADER":
            self._chunk_target = (str(data.get("requestId")), str(data.get("mediaId")), bool(data.get("lastChunk")))
        else:
            self._send_error(data.get("id"), errors.SerializationError(f"Unknown message type {kind!r}"))

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
            self._send_error(
                call_id, errors.SerializationError("Too much Media data in flight on this connection (256 MiB)")
            )
            return
        chunks.setdefault(media_id, []).append(chunk)
        if last:
            outstanding.discard(media_id)
            request.media[media_id] = b"".join(chunks.pop(media_id))
            self._media_bytes -= len(request.media[media_id])
            if not outstanding:
                del self._waiting[call_id]
                self._dispatch(call_id, request)

    def _dispatch(self, call_id: str, request: CallRequest) -> None:
        task = asyncio.create_task(self._run(call_id, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, call_id: str, request: CallRequest) -> None:
        reply = await services(self).calls.call(self.app, request)
        if self.ws_connection is None:
            return
        self.write_message(json.dumps({"id": call_id, **reply_message(reply)}, allow_nan=False))
        if reply.error is None:
            for media_id, content in reply.media.items():
                self._send_media(call_id, media_id, content)

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
        error = errors.to_wire(exc)
        self.write_message(json.dumps({"id": call_id, "error": {"type": error["type"], "message": error["message"]}}))

    def on_close(self) -> None:
        self._waiting.clear()
