"""A server that serves no apps (``--AnvilApp.serve_apps=False``): the app surface answers
404 to every method, and ``GET anvil/api/apps`` says why there is nothing to list."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..api_types import AppsOff
from .admin import AdminHandler
from .base import PublicHandler

MESSAGE = "Apps are off on this server (--AnvilApp.serve_apps=False): no notebook is served"


class AppsOffSurfaceHandler(PublicHandler):
    """``anvil/apps/...`` and ``anvil/client.js``: 404 whatever the method (Jupyter's own
    fallback would ask a POST for an XSRF token first, and so answer 403)."""

    def _off(self, *args: Any, **kwargs: Any) -> None:
        self.write_json(404, {"error": {"type": "HTTPError", "message": MESSAGE}})

    get = post = put = patch = delete = options = head = _off


class AppsOffHandler(AdminHandler):
    """The admin API still answers, and says why there is nothing to list."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        answer: AppsOff = {"apps": [], "problems": [], "serving": False, "message": MESSAGE}
        self.finish(dict(answer))


class AppsOffAppHandler(AdminHandler):
    """``anvil/api/apps/<app>/...`` (reload, requirements): no app is served to act on."""

    @web.authenticated
    @authorized
    async def get(self, *args: Any) -> None:
        self.set_status(404)
        self.finish({"message": MESSAGE})

    post = get
