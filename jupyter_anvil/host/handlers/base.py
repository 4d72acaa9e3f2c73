"""What every public handler shares: the services, and errors written with the status
the one error map gives them (:func:`errors.http_status`)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tornado import web

from ... import errors

if TYPE_CHECKING:
    from ..services import Services


def services(handler: web.RequestHandler) -> Services:
    return handler.settings["jupyter_anvil"]  # type: ignore[no-any-return]


#: a content type fit for a header: type/subtype and parameters, nothing that could end it
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;[ -~]*)?")


def send_download(handler: web.RequestHandler, data: bytes, content_type: str, name: str) -> None:
    """Answer ``data`` as a download with its content type and file name, never shown
    inline: what a task returned or a stranger mailed must not run as a page of the
    Jupyter server's own origin."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:200] or "download"
    handler.set_header(
        "Content-Type", content_type if _CONTENT_TYPE.fullmatch(content_type) else "application/octet-stream"
    )
    handler.set_header("Content-Disposition", f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
    handler.finish(data)


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
