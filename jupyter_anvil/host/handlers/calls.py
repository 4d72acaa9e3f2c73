"""Server calls over plain HTTP and over a WebSocket (uplink-protocol message shapes)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tornado import web

from ... import errors
from ..messages import CallRequest
from ..sessions import SessionExpired
from .base import PublicHandler, services, status_for
from .callers import (
    ALLOWED_HEADERS,
    CLIENT_HEADER,
    COOKIES_HEADER,
    SESSION_HEADER,
    admit_origin,
    cookie_headers,
    make_caller,
)

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
        if not admit_origin(self, app):
            return
        try:
            request = self._parse(function)
        except errors.SerializationError as e:
            self.write_anvil_error(e, 400)
            return
        client_type = "browser" if self.request.headers.get(CLIENT_HEADER) == "browser" else "http"
        token = self.request.headers.get(SESSION_HEADER)
        sessions = services(self).sessions
        try:
            # a caller without a token gets a session that is stored once it holds something
            session = await sessions.resume(token, app) if token else sessions.new(app, client_type)
        except SessionExpired:
            self.write_anvil_error(errors.SessionExpiredError("Session expired"), 401)
            return
        request.caller = make_caller(self, app, session, client_type)
        reply = await services(self).calls.call(app, request)
        if session.persisted:
            self.set_header(SESSION_HEADER, session.token)
        for header in cookie_headers(self, app, reply.cookie_changes or {}):
            self.add_header("Set-Cookie", header)
        if reply.cookie_changes:
            self.set_header(COOKIES_HEADER, "changed")
        body = reply.to_json()
        if reply.error is None:
            inline_media(body, reply.media)
        self.write_json(200 if reply.error is None else status_for(reply.error), body)

    def options(self, app: str, function: str) -> None:
        """CORS preflight: only for origins the app lists."""
        if not admit_origin(self, app):
            return
        self.set_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

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


@web.stream_request_body
class CookieTicketHandler(PublicHandler):
    """``POST anvil/apps/<app>/_/cookies`` ``{"ticket": ...}``: the ``Set-Cookie`` headers
    for cookie changes a call made over the WebSocket (a socket cannot set cookies).

    Only ``application/json``: a cross-site form or ``text/plain`` fetch cannot send it
    without a CORS preflight, which only the app's listed origins pass. The body is read
    as it streams in, up to a few KiB, never buffered whole first."""

    def prepare(self) -> None:
        self._body = bytearray()
        if not admit_origin(self, self.path_kwargs["app"]):
            return
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > MAX_TICKET_BODY:
            self._too_big()

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        if len(self._body) + len(chunk) > MAX_TICKET_BODY:
            self._too_big()
            return
        self._body += chunk

    def _too_big(self) -> None:
        error = errors.SerializationError(f"A cookie ticket request is at most {MAX_TICKET_BODY} bytes")
        self.write_anvil_error(error, 413)

    def post(self, app: str) -> None:
        if self._finished:
            return
        try:
            ticket = parse_ticket(self.request.headers.get("Content-Type", ""), bytes(self._body))
        except TicketRequestError as e:
            self.write_anvil_error(errors.SerializationError(str(e)), e.status)
            return
        headers = services(self).cookie_tickets.redeem(ticket, app)
        if headers is None:
            self.write_anvil_error(errors.CookieError("Unknown or expired cookie ticket"), 400)
            return
        for header in headers:
            self.add_header("Set-Cookie", header)
        self.set_status(204)
        self.finish()


MAX_TICKET_BODY = 4096


class TicketRequestError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_ticket(content_type: str, body: bytes) -> str:
    """The ticket of a cookie-ticket request; TicketRequestError saying what is wrong."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        shown = repr(media_type[:100]) if media_type else "none"
        raise TicketRequestError(
            f'Send the cookie ticket as Content-Type: application/json ({{"ticket": "..."}}), not {shown}', 415
        )
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TicketRequestError("The request body is not valid JSON") from None
    ticket = data.get("ticket") if isinstance(data, dict) else None
    if not isinstance(ticket, str):
        raise TicketRequestError('The request body must be a JSON object like {"ticket": "..."}')
    return ticket
