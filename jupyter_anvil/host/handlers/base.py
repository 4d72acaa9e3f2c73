"""What every public handler shares: the services, and errors mapped to HTTP status once."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tornado import web

from ... import errors

if TYPE_CHECKING:
    from ..services import Services

#: HTTP status of each error type; anything else (the function raised) is 500. Errors
#: that are the caller's fault are 4xx; the 5xx ones are faults of the server or of the
#: app's code (StackOverflow, ServiceNotAdded: 500 like any error server code raises).
STATUS_BY_TYPE = {
    errors.NoServerFunctionError.wire_name: 404,
    errors.SerializationError.wire_name: 400,
    errors.CookieError.wire_name: 400,
    errors.BackgroundTaskError.wire_name: 400,
    errors.BackgroundTaskNotFound.wire_name: 404,
    errors.BackgroundTaskKilled.wire_name: 409,
    errors.PermissionDenied.wire_name: 403,
    errors.SessionExpiredError.wire_name: 401,
    errors.QuotaExceededError.wire_name: 429,
    errors.RuntimeUnavailableError.wire_name: 503,
    errors.UplinkDisconnectedError.wire_name: 503,
    errors.InvalidResponseError.wire_name: 502,
    errors.ExecutionTerminatedError.wire_name: 500,
    errors.InternalError.wire_name: 500,
    errors.TimeoutError.wire_name: 504,
}


def status_for(error: errors.WireError) -> int:
    if isinstance(error.get("status"), int):  # the kernel knows better (a bad return value is a 500)
        return int(error["status"])
    return STATUS_BY_TYPE.get(str(error.get("type")), 500)


def services(handler: web.RequestHandler) -> Services:
    return handler.settings["jupyter_anvil"]  # type: ignore[no-any-return]


class PublicHandler(web.RequestHandler):
    """A handler of the public app surface: no Jupyter auth, no XSRF cookie (a JSON
    content type is required instead, which a cross-site form cannot send), and errors
    as Anvil error objects, never tracebacks."""

    def check_xsrf_cookie(self) -> None:
        return

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body, allow_nan=False))

    def write_anvil_error(self, exc: errors.AnvilError, status: int | None = None) -> None:
        error = errors.to_wire(exc)
        self.write_json(status or status_for(error), {"error": {"type": error["type"], "message": error["message"]}})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason if status_code < 500 else "Internal server error"
        self.write_json(
            status_code,
            {"error": {"type": "anvil.server.InternalError" if status_code >= 500 else "HTTPError", "message": reason}},
        )
