"""Who is calling: origin checks (CORS), sessions and cookies, shared by both transports."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from tornado import web

from ... import errors
from ..messages import Caller
from ..sessions import Session
from .base import PublicHandler, services

SESSION_HEADER = "X-Anvil-Session"
#: on an HTTP reply whose call changed cookies: other connections of the window should renew
COOKIES_HEADER = "X-Anvil-Cookies"
CLIENT_HEADER = "X-Anvil-Client"
ALLOWED_HEADERS = f"Content-Type, {SESSION_HEADER}, {CLIENT_HEADER}"


def same_origin(handler: web.RequestHandler, origin: str) -> bool:
    parsed = urlparse(origin)
    return bool(parsed.netloc) and parsed.netloc.lower() == handler.request.host.lower()


def allowed_origins(handler: web.RequestHandler, app: str) -> tuple[str, ...]:
    served = services(handler).apps.apps.get(app)
    return served.spec.allowed_origins if served is not None and served.spec is not None else ()


def origin_allowed(handler: web.RequestHandler, app: str, origin: str | None) -> bool:
    """No Origin (not a browser), this server's own origin, or one the app lists."""
    if not origin or same_origin(handler, origin):
        return True
    listed = allowed_origins(handler, app)
    return "*" in listed or origin.rstrip("/") in listed


def set_cors_headers(handler: web.RequestHandler, origin: str | None) -> None:
    """For an allowed cross-origin caller: name it (never ``*``, since credentials flow)."""
    if origin and not same_origin(handler, origin):
        handler.set_header("Access-Control-Allow-Origin", origin)
        handler.set_header("Access-Control-Allow-Credentials", "true")
        handler.set_header("Access-Control-Expose-Headers", f"{SESSION_HEADER}, {COOKIES_HEADER}")
        handler.add_header("Vary", "Origin")


def admit_origin(handler: PublicHandler, app: str) -> bool:
    """Refuse (403) a request from an origin the app does not list; name an allowed one."""
    origin = handler.request.headers.get("Origin")
    if not origin_allowed(handler, app, origin):
        handler.write_anvil_error(errors.PermissionDenied(f"Calls to app '{app}' from {origin} are not allowed"), 403)
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
