"""The admin API (Jupyter auth): apps and the app log."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ... import errors
from ..api_types import AppsList, ListedApp, LogPage, NotebookProblem
from .base import services
from .calls import load_json

AUTH_RESOURCE = "anvil"


class AdminHandler(APIHandler):
    auth_resource = AUTH_RESOURCE


#: the largest JSON body an admin route takes
MAX_BODY_BYTES = 64 * 1024


@web.stream_request_body
class JsonBodyHandler(AdminHandler):
    """An admin route that takes a JSON body: read as it streams in, up to
    :data:`MAX_BODY_BYTES` (a larger one is dropped as it comes, and refused with 413)."""

    #: what the body is, for the 413's message ("a schedules request")
    body_name = "a request"

    async def prepare(self) -> None:  # type: ignore[override]
        self._body = bytearray()
        self._too_big = False
        await super().prepare()
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._too_big = True

    def data_received(self, chunk: bytes) -> None:
        if self._too_big or len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._too_big = True
            self._body.clear()
            return
        self._body += chunk

    def json_body(self, empty: Any) -> Any:
        """The body's JSON (``empty`` if there is none): 413 past the bound, 400 if not JSON."""
        if self._too_big:
            raise web.HTTPError(413, f"{self.body_name}'s body is at most {MAX_BODY_BYTES} bytes")
        if not bytes(self._body).strip():
            return empty
        try:
            return load_json(bytes(self._body))
        except errors.SerializationError as e:
            raise web.HTTPError(400, str(e)) from None


class AppsHandler(AdminHandler):
    """``GET anvil/api/apps``: every app, its state and its error, and notebooks that
    cannot be apps. An app's ``schedule_problems`` lists what is wrong with the schedules
    its served version declares (``@server.scheduled``, ``scheduled_tasks`` metadata)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        manager = services(self).apps
        await manager.scanned.wait()
        problems: list[NotebookProblem] = [
            {"notebook": p.notebook, "app": p.name, "error": p.message} for p in manager.problems
        ]
        answer: AppsList = {
            "apps": [app.listed(self.base_url) for app in manager.apps.values()],
            "problems": problems,
        }
        self.finish(dict(answer))


class AppReloadHandler(AdminHandler):
    """``POST anvil/api/apps/<app>/reload`` (no body): read the app's notebook again and
    load it again, as a save does. 202 with the app as listed (``loading``) at once; the
    load goes on (the live feed's app events, or ``anvil/api/apps``, say how it ends). The
    version served serves on until the new one is ready, and on if it fails."""

    @web.authenticated
    @authorized
    async def post(self, app: str) -> None:
        reloading = await services(self).apps.reload(app)
        if reloading is None:
            raise web.HTTPError(404, f"no app {app}")
        answer: ListedApp = reloading.listed(self.base_url)
        self.set_status(202)
        self.finish(dict(answer))


class LogsHandler(AdminHandler):
    """``GET anvil/api/logs?app=NAME&since=SEQ&limit=N``: app log records, oldest first;
    pass the last ``seq`` you saw as ``since`` to tail."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        app = self.get_argument("app", None)
        try:
            since = int(self.get_argument("since", "0"))
            limit = int(self.get_argument("limit", "1000"))
        except ValueError:
            raise web.HTTPError(400, "since and limit must be integers") from None
        if not 0 <= since < 2**63:
            raise web.HTTPError(400, "since must be a sequence number (0 or more)")
        limit = max(1, min(limit, 10000))  # a negative LIMIT would mean none in SQLite
        answer: LogPage = {"records": await services(self).app_log.read(app, since, limit)}
        self.finish(dict(answer))
