"""The browser client and each app's static front end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tornado import web

from .base import services

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"


class ClientScriptHandler(web.StaticFileHandler):
    """``anvil/client.js``: the ES module browsers import."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(path=str(STATIC_DIR))

    def get_content_type(self) -> str:
        return "text/javascript; charset=utf-8"

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        # public code: pages on other origins import it (whether they may call is the app's say)
        self.set_header("Access-Control-Allow-Origin", "*")


class AppStaticHandler(web.StaticFileHandler):
    """``anvil/apps/<app>/<path>``: files from the app's static folder, never a
    notebook, a dotfile, or anything outside the folder."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(path="/nonexistent", default_filename="index.html")

    async def get(self, app: str, path: str, include_body: bool = True) -> None:  # type: ignore[override]
        served = await services(self).apps.get(app)
        if served is None or served.spec is None:
            raise web.HTTPError(404)
        parts = [p for p in path.split("/") if p]
        if any(p.startswith(".") for p in parts) or path.endswith(".ipynb"):
            raise web.HTTPError(404)
        self.root = str(served.spec.static_dir)
        if not os.path.isdir(self.root):
            raise web.HTTPError(404)
        await super().get(path, include_body)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        # public code: pages on other origins import it (whether they may call is the app's say)
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("X-Content-Type-Options", "nosniff")
