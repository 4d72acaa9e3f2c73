"""Who is calling: origin checks (CORS), sessions and cookies, shared by both transports."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from typing import Any
from urllib.parse import urlparse

from jupyter_server.utils import urldecode_unix_socket_path
from tornado import web

from ... import errors
from ..idempotency.keys import HEADER as IDEMPOTENCY_HEADER
from ..idempotency.keys import REPLAYED_HEADER
from ..messages import Caller
from ..sessions import Session
from .base import PublicHandler, services

SESSION_HEADER = "X-Anvil-Session"
#: on an HTTP reply whose call changed cookies: other connections of the window should renew
COOKIES_HEADER = "X-Anvil-Cookies"
CLIENT_HEADER = "X-Anvil-Client"
ALLOWED_HEADERS = f"Content-Type, {SESSION_HEADER}, {CLIENT_HEADER}, {IDEMPOTENCY_HEADER}"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST_AND_PORT = re.compile(r"^(.*?)(?::(\d+))?$")

log = logging.getLogger(__name__)


# -- the Host header: DNS rebinding ------------------------------------------------------
def request_hostname(handler: web.RequestHandler) -> str:
    """The host name the request was addressed to, without port or IPv6 brackets."""
    match = _HOST_AND_PORT.match(handler.request.host)
    host = match.group(1) if match else handler.request.host
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_allowed(handler: web.RequestHandler) -> bool:
    """jupyter_server's own ``JupyterHandler.check_host``, for the app surface (whose
    handlers are not JupyterHandlers): unless the server allows remote access, a request
    must be addressed to a loopback address or one of ``ServerApp.local_hostnames``. A page
    on ``evil.example`` whose DNS was rebound to 127.0.0.1 still says ``Host: evil.example``."""
    if handler.settings.get("allow_remote_access", False):
        return True
    host = request_hostname(handler)
    unix_socket = urldecode_unix_socket_path(host)
    if unix_socket.startswith("/") and os.path.exists(unix_socket):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in handler.settings.get("local_hostnames", ["localhost"])


def host_refusal(handler: web.RequestHandler) -> errors.PermissionDenied | None:
    """The error for a request addressed to a host this server does not answer to (and a
    log line saying how to allow it), or None."""
    if host_allowed(handler):
        return None
    log.warning(
        "[jupyter-anvil] refused a request for %s with non-local Host %r; if the server should be "
        "reachable at that name, set ServerApp.allow_remote_access or ServerApp.local_hostnames",
        handler.request.path[:200],
        handler.request.host[:200],
    )
    return errors.PermissionDenied(
        f"This server does not answer to host {request_hostname(handler)[:200]!r} (it only accepts local "
        "host names unless ServerApp.allow_remote_access is set)"
    )


# -- the Origin header: which pages may call --------------------------------------------
def origin_key(scheme: str, netloc: str) -> tuple[str, str, int | None] | None:
    """An origin as (scheme, host, port) with the default port filled in: ``http://h`` and
    ``http://h:80`` are one origin, ``http://h`` and ``https://h`` are two."""
    scheme = scheme.lower()
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    try:
        parsed = urlparse(f"{scheme}://{netloc}")
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    return scheme, parsed.hostname.lower(), port if port is not None else DEFAULT_PORTS.get(scheme)


def parse_origin(origin: str) -> tuple[str, str, int | None] | None:
    """An ``Origin`` header (or a listed origin) as its key; None for ``null`` and junk."""
    parsed = urlparse(origin.strip())
    return origin_key(parsed.scheme, parsed.netloc) if parsed.scheme and parsed.netloc else None


def same_origin(handler: web.RequestHandler, origin: str) -> bool:
    """The page's origin is this server's own, compared by scheme, host and port (the
    scheme is the one the request came by, or the proxy's when ``trust_xheaders`` is set)."""
    theirs = parse_origin(origin)
    return theirs is not None and theirs == origin_key(handler.request.protocol, handler.request.host)


def allowed_origins(handler: web.RequestHandler, app: str) -> tuple[str, ...]:
    served = services(handler).apps.apps.get(app)
    return served.spec.allowed_origins if served is not None and served.spec is not None else ()


def origin_allowed(handler: web.RequestHandler, app: str, origin: str | None) -> bool:
    """No Origin (not a browser), this server's own origin, or one the app lists."""
    if not origin or same_origin(handler, origin):
        return True
    listed = allowed_origins(handler, app)
    if "*" in listed:
        return True
    theirs = parse_origin(origin)
    return theirs is not None and any(parse_origin(entry) == theirs for entry in listed)


def set_cors_headers(handler: web.RequestHandler, origin: str | None) -> None:
    """For an allowed cross-origin caller: name it (never ``*``, since credentials flow)."""
    if origin and not same_origin(handler, origin):
        handler.set_header("Access-Control-Allow-Origin", origin)
        handler.set_header("Access-Control-Allow-Credentials", "true")
        exposed = f"{SESSION_HEADER}, {COOKIES_HEADER}, {REPLAYED_HEADER}, Retry-After"
        handler.set_header("Access-Control-Expose-Headers", exposed)
        handler.add_header("Vary", "Origin")


def socket_admitted(handler: web.RequestHandler, app: str, origin: str | None) -> bool:
    """A WebSocket handshake: addressed to a host this server answers to, from an origin
    the app accepts."""
    return host_refusal(handler) is None and origin_allowed(handler, app, origin)


def admit_origin(handler: PublicHandler, app: str) -> bool:
    """Refuse (PermissionDenied) a request addressed to a foreign host (DNS rebinding) or from an origin
    the app does not list; name an allowed origin."""
    refusal = host_refusal(handler)
    if refusal is not None:
        handler.write_anvil_error(refusal)
        return False
    origin = handler.request.headers.get("Origin")
    if not origin_allowed(handler, app, origin):
        handler.write_anvil_error(errors.PermissionDenied(f"Calls to app '{app}' from {origin} are not allowed"))
        return False
    set_cors_headers(handler, origin)
    return True


def browser_cookies(handler: web.RequestHandler, app: str) -> dict[str, dict[str, Any]]:
    raw = {name: morsel.value for name, morsel in handler.request.cookies.items()}
    return services(handler).cookies.read(raw, app)


def make_caller(handler: web.RequestHandler, app: str, session: Session, client_type: str) -> Caller:
    # cookies belong to this server's own pages: a page on another origin (even one the
    # app lets call it) gets none, over either transport
    origin = handler.request.headers.get("Origin")
    own_page = not origin or same_origin(handler, origin)
    cookies = browser_cookies(handler, app) if client_type == "browser" and own_page else None
    return Caller(session, client_type, ip=handler.request.remote_ip, cookies=cookies)


def cookie_headers(handler: web.RequestHandler, app: str, changes: dict[str, dict[str, Any]]) -> list[str]:
    sealer = services(handler).cookies
    base_url = handler.settings.get("base_url", "/")
    secure = handler.request.protocol == "https"
    return [sealer.headers(kind, app, values, base_url, secure) for kind, values in changes.items()]
