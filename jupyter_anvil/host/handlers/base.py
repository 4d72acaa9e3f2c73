"""What every public handler shares: the services, and errors written with the status
the one error map gives them (:func:`errors.http_status`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tornado import web

from ... import errors

if TYPE_CHECKING:
    from ..services import Services


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

    def write_anvil_error(self, exc: errors.AnvilError) -> None:
        """Refuse a request with an Anvil error, at the status the error map gives it."""
        error = errors.to_wire(exc)
        self.write_json(errors.http_status(exc), {"error": {"type": error["type"], "message": error["message"]}})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason if status_code < 500 else "Internal server error"
        self.write_json(
            status_code,
            {"error": {"type": "anvil.server.InternalError" if status_code >= 500 else "HTTPError", "message": reason}},
        )
