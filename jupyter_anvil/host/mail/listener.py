"""Starting the inbound SMTP server when it is needed: once a served app has a handler."""

from __future__ import annotations

from ..logs import AppLog
from ..notebooks import AppSpec
from ..pool import KernelPool
from .handling import has_email_handler
from .inbound import MailServer


class StartOnHandler:
    """An app listener (apps.ServedListener): the first version served with an
    ``@email.handle_message`` starts the mail server. A server that cannot listen (the
    port is taken) or is turned off is said in that app's log, where its author looks."""

    def __init__(self, server: MailServer, app_log: AppLog, enabled: bool) -> None:
        self.server = server
        self.app_log = app_log
        self.enabled = enabled

    async def served(self, app: str, spec: AppSpec, pool: KernelPool) -> list[str]:
        if not has_email_handler(pool):
            return []
        where = f"{self.server.host}:{self.server.port}"
        if not self.enabled:
            self._say(app, "it handles email, but the SMTP server is off (--AnvilApp.smtp_server_port=0)")
        elif await self.server.ensure_started():
            self._say(app, f"mail for it is received on {where} (SMTP)")
        else:
            self._say(app, f"it handles email, but the SMTP server cannot listen on {where}: see the server log")
        return []

    def unserved(self, app: str) -> None:
        return  # the server keeps listening: other apps may have handlers, and mail for none is refused

    def _say(self, app: str, text: str) -> None:
        self.app_log.write(app, "(load)", "-", "system", text)
