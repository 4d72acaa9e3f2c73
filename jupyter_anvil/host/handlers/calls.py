"""Server calls over plain HTTP and over a WebSocket (uplink-protocol message shapes)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from tornado import web

from ... import errors
from ..idempotency import check_key
from ..idempotency.keys import HEADER as IDEMPOTENCY_HEADER
from ..idempotency.keys import REPLAYED_HEADER
from ..messages import CallRequest
from .base import PublicHandler, services
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


#: how deeply a request's JSON may nest (Anvil values are shallow; deeper is an attack on
#: the recursive walks that follow, and json.loads itself gives up near 1000)
MAX_NESTING = 100
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def load_json(text: str | bytes, invalid: str | None = None) -> Any:
    """Parse a request's JSON strictly; :class:`SerializationError` saying what is wrong.

    Strict beyond ``json.loads``: no ``NaN``/``Infinity`` (or numbers too big for a
    float), at most :data:`MAX_NESTING` levels, and no lone UTF-16 surrogate escapes
    (``"\\ud800"``): such a string is not Unicode, and nothing after us could encode it.
    ``invalid``, if given, is the whole message for text that is not JSON at all."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise errors.SerializationError(f"The JSON is nested more than {MAX_NESTING} levels deep") from None
    except ValueError as e:  # UnicodeDecodeError is one too
        raise errors.SerializationError(invalid or f"The request body is not valid JSON: {e}") from None
    check_json(value)
    return value


def _refuse_constant(name: str) -> Any:
    raise errors.SerializationError(f"{name} is not valid JSON (send non-finite floats as Float descriptors)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise errors.SerializationError(f"The number {text[:40]} is too big for a float")
    return value


def check_json(value: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` and strings (or keys) holding a lone
    surrogate. Iterative, so no input can exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_string(node)
        elif isinstance(node, (list, dict)):
            if depth > MAX_NESTING:
                raise errors.SerializationError(f"The JSON is nested more than {MAX_NESTING} levels deep")
            if isinstance(node, dict):
                for key in node:
                    _check_string(key)
                node = node.values()
            stack.extend((item, depth + 1) for item in node if isinstance(item, (str, list, dict)))


def _check_string(text: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise errors.SerializationError(
            "A string in the request holds a lone UTF-16 surrogate (like \\ud800), which is not valid Unicode"
        )


def descriptor_kinds(descriptor: dict[str, Any]) -> list[str]:
    """A descriptor's ``type``: a list of kind names (a lone string counts as one)."""
    kinds = descriptor.get("type")
    if isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise errors.SerializationError(
            f"A descriptor's 'type' must be a list of strings, not {json.dumps(descriptor.get('type'))[:60]}"
        )
    return kinds


def _check_descriptor(descriptor: dict[str, Any]) -> None:
    descriptor["type"] = descriptor_kinds(descriptor)
    path = descriptor.get("path")
    if (
        not isinstance(path, list)
        or not path
        or not all(isinstance(step, (str, int)) and not isinstance(step, bool) for step in path)
    ):
        raise errors.SerializationError(
            f"A descriptor's 'path' must be a non-empty list of keys and indexes, not {json.dumps(path)[:60]}"
        )


def is_media(descriptor: dict[str, Any]) -> bool:
    return "DataMedia" in descriptor_kinds(descriptor)


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
    for descriptor in objects:
        _check_descriptor(descriptor)
    return CallRequest(command=command, args=args, kwargs=kwargs, objects=objects)


@web.stream_request_body
class HttpCallHandler(PublicHandler):
    """``POST anvil/apps/<app>/_/call/<function>`` with ``{"args": [], "kwargs": {}}``."""

    def prepare(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            self.write_anvil_error(errors.RequestTooLarge(TOO_BIG.format(size=length)))

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > MAX_REQUEST_BYTES:
            self.write_anvil_error(errors.RequestTooLarge(TOO_BIG.format(size=f"over {self._size}")))
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
            self.write_anvil_error(e)
            return
        client_type = "browser" if self.request.headers.get(CLIENT_HEADER) == "browser" else "http"
        token = self.request.headers.get(SESSION_HEADER)
        try:
            outcome = await services(self).calls.call_with_token(
                app, request, token, client_type, lambda session: make_caller(self, app, session, client_type)
            )
        except errors.AnvilError as e:  # no session to run it in (an expired token): it never ran
            self.write_anvil_error(e)
            return
        reply = outcome.reply
        if outcome.replayed:
            self.set_header(REPLAYED_HEADER, "true")
        if outcome.retry_after is not None:  # it did not run: send it again then
            self.set_header("Retry-After", str(max(1, round(outcome.retry_after))))
        if outcome.session_token is not None:
            self.set_header(SESSION_HEADER, outcome.session_token)
        for header in cookie_headers(self, app, reply.cookie_changes or {}):
            self.add_header("Set-Cookie", header)
        if reply.cookie_changes:
            self.set_header(COOKIES_HEADER, "changed")
        body = reply.to_json()
        if reply.error is None:
            inline_media(body, reply.media)
        self.write_json(200 if reply.error is None else errors.http_status(reply.error), body)

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
        key = self.request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None:
            key = check_key(key, f"The {IDEMPOTENCY_HEADER} header")
        body = load_json(b"".join(self._chunks) or b"{}")
        request = parse_call(body, function)
        request.media = extract_inline_media(request.objects)
        request.idempotency_key = key
        return request


def extract_inline_media(objects: list[dict[str, Any]]) -> dict[str, bytes]:
    """Over plain HTTP a DataMedia descriptor carries its bytes as ``base64``."""
    media: dict[str, bytes] = {}
    for descriptor in objects:
        if is_media(descriptor):
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
        self.write_anvil_error(errors.RequestTooLarge(f"A cookie ticket request is at most {MAX_TICKET_BODY} bytes"))

    def post(self, app: str) -> None:
        if self._finished:
            return
        try:
            ticket = parse_ticket(self.request.headers.get("Content-Type", ""), bytes(self._body))
        except errors.SerializationError as e:
            self.write_anvil_error(e)
            return
        headers = services(self).cookie_tickets.redeem(ticket, app)
        if headers is None:
            self.write_anvil_error(errors.CookieError("Unknown or expired cookie ticket"))
            return
        for header in headers:
            self.add_header("Set-Cookie", header)
        self.set_status(204)
        self.finish()


MAX_TICKET_BODY = 4096


def parse_ticket(content_type: str, body: bytes) -> str:
    """The ticket of a cookie-ticket request; a SerializationError (UnsupportedContentType
    for one not sent as JSON) saying what is wrong."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        shown = repr(media_type[:100]) if media_type else "none"
        raise errors.UnsupportedContentType(
            f'Send the cookie ticket as Content-Type: application/json ({{"ticket": "..."}}), not {shown}'
        )
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise errors.SerializationError("The request body is not valid JSON") from None
    ticket = data.get("ticket") if isinstance(data, dict) else None
    if not isinstance(ticket, str):
        raise errors.SerializationError('The request body must be a JSON object like {"ticket": "..."}')
    return ticket
