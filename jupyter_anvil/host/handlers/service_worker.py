"""``anvil/apps/<app>/sw.js``: the service worker that keeps an app's pages working
offline (``static/sw.js``). Served by the extension, not from the app's static folder, so
its scope is the app (``anvil/apps/<app>/``) and no page can put its own worker there.

The script gets a one-line prelude naming its scope and the client's URLs as paths of this
server, so the worker never guesses them from its own URL (the server may live under a
prefix)."""

from __future__ import annotations

import json

from ... import errors
from .base import PublicHandler, services
from .callers import host_refusal
from .static import STATIC_DIR

WORKER_SCRIPT = STATIC_DIR / "sw.js"


class ServiceWorkerHandler(PublicHandler):
    """GET (and HEAD) the app's service worker: ``text/javascript``, revalidated on every
    registration check (``no-cache``), 404 for an app not served."""

    async def get(self, app: str) -> None:
        refusal = host_refusal(self)
        if refusal is not None:
            self.write_anvil_error(refusal)
            return
        if await services(self).apps.get(app) is None:
            self.write_anvil_error(errors.NoServerFunctionError(f'No app named "{app}" is served here'))
            return
        base = self.settings.get("base_url", "/")
        prelude = {
            "app": app,
            "scope": f"{base}anvil/apps/{app}/",
            "client": f"{base}anvil/client.js",
            "clientModules": f"{base}anvil/client/",
        }
        body = f"self.ANVIL_SW = {json.dumps(prelude)};\n" + WORKER_SCRIPT.read_text(encoding="utf-8")
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(body.encode() if self.request.method != "HEAD" else b"")

    async def head(self, app: str) -> None:
        await self.get(app)
