"""``GET|HEAD anvil/apps/<app>/_/check-app-online``: is the server there for this app?

What an offline client asks to tell "no connection" from "connected": cheap (no session,
no kernel, no store access), never cached (a cached yes would hide a lost connection),
and under the same host check and CORS rules as the app's other public routes.
"""

from __future__ import annotations

from ... import errors
from .base import PublicHandler, services
from .callers import admit_origin


class CheckAppOnlineHandler(PublicHandler):
    def get(self, app: str) -> None:
        if not admit_origin(self, app):
            return
        served = services(self).apps.apps.get(app)
        if served is None:
            self.write_anvil_error(errors.NoServerFunctionError(f'No app named "{app}" is served here'))
            return
        # Cache-Control: no-store comes with every public handler (set_default_headers)
        self.write_json(200, {"online": True, "app": app, "status": served.status})

    def head(self, app: str) -> None:
        self.get(app)
