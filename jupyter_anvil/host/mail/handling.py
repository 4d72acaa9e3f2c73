"""Running an app's ``@email.handle_message`` handler on a message, and the SMTP reply its
outcome gives, as Anvil answers (runtime/email_server.clj):

=====================================  ====================================  ===========
the handler...                         the sender's server is answered       the record
=====================================  ====================================  ===========
returned                               250                                   handled
raised ``DeliveryFailure``             554, or the code it gave              rejected (5xx), failed (4xx)
raised anything else                   451 (try again later)                 failed
gave no answer within ``timeout``      451; its kernel is retired            failed
is not registered by the app           551                                   rejected
could not run (no kernel, overload)    451                                   failed
=====================================  ====================================  ===========

The handler runs like a server call from nobody's browser: on a kernel leased from the
app's current pool (as :class:`~jupyter_anvil.host.calls.CallService` leases one), in a
session of its own (``server.context.client.type == "email"``, the call-stack frame
``email_server``), and what it stores in that session is saved before the sender hears
back. The reply text the sender sees is short and never a traceback: the traceback goes to
the app log, for the author, under ``email:handle_message``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from ... import errors, wire
from ...media import BlobMedia
from ...protocol import (
    EMAIL_CLIENT_TYPE,
    EMAIL_FRAME_TYPE,
    EMAIL_HANDLER,
    EMAIL_HANDLER_NAME,
    DkimResult,
    InboundMail,
    MailEnvelope,
    log_name,
)
from ..app_kernel import AppKernel
from ..apps import App, AppManager
from ..calls import new_call_id
from ..logs import AppLog
from ..messages import Caller, CallReply, CallRequest
from ..pool import KernelPool
from ..sessions import SessionService
from .records import MailChanges, MailRecord, MailStatus, MailSummary

log = logging.getLogger(__name__)

#: Anvil's failsafe: the whole delivery, from the lease of a kernel to the handler's answer
HANDLER_TIMEOUT = 45.0
NO_HANDLER = (551, "5.7.1 This application cannot handle incoming email")
#: what the sender's server is told of a handler that failed (details are the author's)
HANDLER_FAILED = (451, "4.3.0 The application failed to handle this message; try again later")
HANDLER_TIMED_OUT = (451, "4.3.0 The application took too long to handle this message; try again later")
APP_UNAVAILABLE = (451, "4.3.0 The application is not available now; try again later")
#: an SMTP reply line is ASCII; the handler's own text is cut to this many characters
MAX_REPLY_TEXT = 200

_CODE_PREFIX = re.compile(r"^[2-5][0-9][0-9]: ")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")


def has_email_handler(pool: KernelPool | None) -> bool:
    """Whether the version a pool serves registered an email handler (for the wiring: the
    SMTP server starts once an app that has one is served)."""
    return pool is not None and EMAIL_HANDLER_NAME in pool.registered.of(EMAIL_HANDLER)


class OutcomeStore(Protocol):
    """What handling needs of the mail store (``MailStore.update``)."""

    async def update(self, mail_id: str, changes: MailChanges) -> MailSummary | None: ...


class EmailCaller(Caller):
    """The caller of a handler run: the mail server, trusted (Anvil's ``email_server``
    frame), for a client of type ``email``."""

    def context(self) -> dict[str, Any]:
        frame = {"type": EMAIL_FRAME_TYPE, "is_trusted": True}
        return {
            "client": {"type": EMAIL_CLIENT_TYPE, "ip": self.ip, "location": None},
            "remote_caller": frame,
            "background_task_id": None,
            "call_stack": [*self.origin, frame],
        }


@dataclass
class Outcome:
    code: int
    text: str
    status: MailStatus
    #: in words, for the record (the author reads it in the admin API)
    outcome: str


class MailHandling:
    def __init__(
        self,
        apps: AppManager,
        sessions: SessionService,
        app_log: AppLog,
        mail: OutcomeStore,
        *,
        timeout: float = HANDLER_TIMEOUT,
    ) -> None:
        self.apps = apps
        self.sessions = sessions
        self.app_log = app_log
        self.mail = mail
        self.timeout = timeout
        #: call id -> app of the handler runs in flight, to file what they print (:meth:`log_output`)
        self.running: dict[str, str] = {}

    def log_output(self, app: str, call_id: str, stream: str, text: str) -> bool:
        """File what a handler run printed (or its traceback) in the app log under
        ``email:handle_message``; False if ``call_id`` is no handler run of this server's
        (the extension's output sink then asks the next service)."""
        if self.running.get(call_id) != app:
            return False
        self.app_log.write(app, log_name(EMAIL_HANDLER, EMAIL_HANDLER_NAME), call_id, stream, text)
        return True

    async def handle(
        self, app: str, record: MailRecord, dkim: DkimResult, envelope: MailEnvelope, *, peer: str | None = None
    ) -> tuple[int, str]:
        """Run ``app``'s handler on ``record`` (stored already, status ``received``) and
        store how it went; the SMTP code and text to answer the sender. Never raises.
        ``peer``: the sending server's IP address (``server.context.client.ip``)."""
        call_id = new_call_id()
        try:
            outcome = await self._run(app, record, dkim, envelope, call_id, peer)
        except Exception as e:  # a fault of ours: a temporary failure, the sender retries
            log.exception("[jupyter-anvil] could not run the email handler of app %s", app)
            outcome = Outcome(*HANDLER_FAILED, "failed", f"the server could not run the handler: {type(e).__name__}")
        changes: MailChanges = {
            "status": outcome.status,
            "smtp_code": outcome.code,
            "outcome": outcome.outcome,
            "call_id": call_id,
        }
        try:
            await self.mail.update(record.id, changes)
        except Exception:  # the sender is answered anyway; a 250 stays a 250
            log.exception("[jupyter-anvil] could not store the outcome of mail %s", record.id)
        return outcome.code, outcome.text

    async def _run(
        self,
        app_name: str,
        record: MailRecord,
        dkim: DkimResult,
        envelope: MailEnvelope,
        call_id: str,
        peer: str | None,
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        app = await self.apps.get(app_name)
        if app is None:
            return Outcome(*NO_HANDLER, "rejected", f"no app named {app_name!r} is served here")
        if not app.loaded.is_set():
            try:
                await asyncio.wait_for(app.loaded.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                return Outcome(*APP_UNAVAILABLE, "failed", "the app was still starting")
        try:
            leased = await self._lease(app, deadline)
        except errors.AnvilError as e:
            return Outcome(*APP_UNAVAILABLE, "failed", str(e))
        if leased is None:
            return Outcome(*NO_HANDLER, "rejected", "the app registers no @email.handle_message handler")
        pool, kernel = leased
        request = CallRequest(
            command=EMAIL_HANDLER_NAME,
            call_id=call_id,
            from_client=False,
            caller=EmailCaller(self.sessions.new(app_name, EMAIL_CLIENT_TYPE), EMAIL_CLIENT_TYPE, ip=peer),
        )
        inbound: InboundMail = {
            "mail_id": record.id,
            "raw": BlobMedia("message/rfc822", record.raw, name=f"{record.id}.eml"),
            "envelope": envelope,
            "dkim": dkim,
        }
        encoded = wire.encode({"args": [inbound]})
        request.args, request.objects, request.media = encoded.message["args"], encoded.objects, encoded.media
        self.running[call_id] = app_name
        try:
            reply = await kernel.call(request, max(0.0, deadline - loop.time()), kind=EMAIL_HANDLER)
        except asyncio.TimeoutError:
            self.log_output(app_name, call_id, "system", "[EMAIL HANDLER TOOK TOO LONG, WILL BE TERMINATED SHORTLY]")
            pool.retire(kernel)  # as a call that timed out: its thread may run on, the kernel goes
            return Outcome(*HANDLER_TIMED_OUT, "failed", f"the handler gave no answer within {self.timeout:g} s")
        except errors.AnvilError as e:  # the kernel died or was shut down under it
            return Outcome(*HANDLER_FAILED, "failed", str(e))
        finally:
            pool.release(kernel)
            self.running.pop(call_id, None)
        reply = await self.sessions.keep_state(app_name, request, reply)
        return self._outcome(reply)

    async def _lease(self, app: App, deadline: float) -> tuple[KernelPool, AppKernel] | None:
        """A kernel of the app's current version, or None if that version registers no
        handler. A handler waiting on a version that a reload replaces moves to the new one."""
        loop = asyncio.get_running_loop()
        while True:
            pool = app.pool
            if pool is None:
                raise errors.RuntimeUnavailableError(f"App '{app.name}' is not available ({app.status})")
            if not has_email_handler(pool):
                return None
            try:
                kernel = pool.try_lease()
                if kernel is None:
                    kernel = await asyncio.wait_for(pool.lease(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise errors.TimeoutError(f"no kernel of '{app.name}' was free in time") from None
            except errors.RuntimeUnavailableError:
                if pool.closed and app.pool is not None and app.pool is not pool:
                    continue
                raise
            return pool, kernel

    @staticmethod
    def _outcome(reply: CallReply) -> Outcome:
        if reply.error is None:
            return Outcome(250, "2.0.0 OK: handled", "handled", "handled")
        kind = str(reply.error.get("type") or "")
        message = str(reply.error.get("message") or "")
        if kind == errors.DeliveryFailure.wire_name:
            code = errors.smtp_code_of(message)
            if not 400 <= code <= 599:  # a refusal is never an acceptance
                code = errors.DELIVERY_FAILURE_CODE
            text = reply_text(_CODE_PREFIX.sub("", message, count=1)) or "Message rejected"
            status: MailStatus = "failed" if code < 500 else "rejected"
            return Outcome(code, text, status, f"DeliveryFailure: {message}"[:1000])
        return Outcome(*HANDLER_FAILED, "failed", f"the handler raised {kind}: {message}"[:1000])


def reply_text(text: str) -> str:
    """``text`` as one SMTP reply line: printable ASCII, bounded (the rest is dropped)."""
    return _NOT_PRINTABLE.sub(" ", text).strip()[:MAX_REPLY_TEXT]
