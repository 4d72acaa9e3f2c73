"""The inbound SMTP server (aiosmtpd) that takes mail for the apps' ``@email.handle_message``.

It runs aiosmtpd's ``SMTP`` protocol on the server's own asyncio loop (where the kernels
and the store live), not in aiosmtpd's threaded ``Controller``. A message's way in:

* ``MAIL FROM`` and ``RCPT TO`` with a control character in the address: 553.
* ``RCPT TO``: the router names the app that takes the recipient, or the recipient is
  refused (550) before any data is sent. At most ``max_recipients`` per message (452
  beyond, as RFC 5321 allows: the sender sends the rest in another transaction).
* ``MAIL FROM ... SIZE=n`` above ``max_bytes`` is refused at once (552), and so is data
  past it (552 at its end; aiosmtpd drops what comes past the limit instead of keeping it):
  SIZE is announced in the EHLO reply, so a sender knows the limit before it sends.
* ``DATA``: what does not begin with a header is not mail (554, nothing stored). Else one
  record per app the recipients route to is stored (inbox, ``received``) *before* any
  handler runs, so nothing accepted is lost; DKIM is checked once (on a worker thread: its
  DNS lookups block; bounded by DKIM_TIMEOUT); then each app's handler runs once (two
  recipients of one app: once), the apps at the same time, and the sender is answered with
  their outcome. Once stored, a message's handlers run to their end and store their
  outcome even if the sender hangs up first (it sends again: it was never told 250).
* One message has one reply: 250 when every handler took it, else the first temporary
  failure (4xx, so the sender tries again), else the first refusal (5xx). A handler that
  took it is given it again on the retry: SMTP delivery is at-least-once.

Connections are bounded (``max_connections``, 421 beyond), and so are the messages held in
memory at once (``max_transactions``: a DATA waits for its turn, 451 if it waits too
long); an idle connection is closed after ``idle_timeout``, one command sent too often
(NOOP...) closes it too, and aiosmtpd answers what is not SMTP (binary garbage, commands
out of order, lines too long) with its 5xx while the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import re
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from ...protocol import DkimResult, MailEnvelope
from ..background import spawn
from .dkim_check import DnsFunc, check_dkim
from .reading import Headline, headline
from .records import MailChanges, MailRecord, MailStatus, MailSummary
from .routing import MailRouter
from .store import new_mail_id

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
MAX_RECIPIENTS = 100
MAX_CONNECTIONS = 100
#: messages read or handled at once: each holds up to ``max_bytes`` in memory; a DATA
#: past them waits for a turn, up to DATA_WAIT seconds, then is told 451 (try later)
MAX_TRANSACTIONS = 10
DATA_WAIT = 30.0
#: seconds the DKIM check of one message may take (its DNS lookups): past it, the message
#: is handled as carrying no valid signature, so a slow DNS cannot eat the handler's time
DKIM_TIMEOUT = 15.0
#: seconds a stop gives the handlers running to store their outcome
STOP_GRACE = 2.0
IDLE_TIMEOUT = 300.0  # RFC 5321 4.5.3.2.7: a server waits 5 minutes for the next command
#: how often one connection may send each command (a connection that only sends NOOPs
#: would hold one of the ``max_connections`` forever); 421 and closed past it
COMMAND_LIMITS = {"NOOP": 50, "VRFY": 10, "HELP": 10, "*": 10_000}
STOPPED_OUTCOME = "the server stopped before the handler answered"
NOT_STORED_OUTCOME = "the message could not be stored for every app it was sent to: no handler ran"
#: an RFC 5322 header field's first line: a name of printable ASCII but ':', then ':'
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")
#: control characters: no address holds them (a NUL cannot even be stored in PostgreSQL text)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InboxStore(Protocol):
    """What the server needs of the mail store (``MailStore``)."""

    async def insert(self, record: MailRecord) -> None: ...

    async def update(self, mail_id: str, changes: MailChanges) -> MailSummary | None: ...

    async def find(self, *, box: Any, status: MailStatus) -> list[MailRecord]: ...


class Handling(Protocol):
    """Runs an app's handler on a stored message (``MailHandling``): the SMTP code and text."""

    def handle(
        self, app: str, record: MailRecord, dkim: DkimResult, envelope: MailEnvelope, *, peer: str | None = None
    ) -> Awaitable[tuple[int, str]]: ...


def is_mail(raw: bytes) -> bool:
    """Whether ``raw`` begins with a header field, as every message does (RFC 5322)."""
    return _HEADER_LINE.match(raw) is not None


def shown(text: str, limit: int = 100) -> str:
    """A sender's text as it may appear in a reply line: printable ASCII, bounded."""
    return _NOT_PRINTABLE.sub("?", text)[:limit]


class MailServer:
    def __init__(
        self,
        mail: InboxStore,
        router: MailRouter,
        handling: Handling,
        *,
        host: str = "127.0.0.1",
        port: int = 8025,
        max_bytes: int = DEFAULT_MAX_BYTES,
        hostname: str | None = None,
        dnsfunc: DnsFunc | None = None,
        server_id: str | None = None,
        owner_is_gone: Callable[[str], Awaitable[bool]] | None = None,
        max_recipients: int = MAX_RECIPIENTS,
        max_connections: int = MAX_CONNECTIONS,
        max_transactions: int = MAX_TRANSACTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        """``port`` 0: any free port (:attr:`port` says which once started); whether the
        server runs at all is the caller's choice. ``dnsfunc``: the DKIM key lookups
        (None: dkimpy's, i.e. real DNS). ``server_id``: the records' ``owner``;
        ``owner_is_gone``: whether another owner is gone (None: every other one is)."""
        self.mail = mail
        self.owner_is_gone = owner_is_gone
        self.router = router
        self.handling = handling
        self.host = host
        self.max_bytes = max_bytes
        self.hostname = hostname or socket.gethostname()  # not getfqdn(): no DNS lookup at start
        self.dnsfunc = dnsfunc
        self.server_id = server_id
        self.max_recipients = max_recipients
        self.max_connections = max_connections
        self.transactions = asyncio.Semaphore(max_transactions)
        self.idle_timeout = idle_timeout
        self._port = port
        self._server: asyncio.Server | None = None
        self._starting = asyncio.Lock()
        self.connections: set[_Connection] = set()
        #: deliveries running: stored, and their handlers not yet answered
        self._deliveries: set[asyncio.Task[str]] = set()
        #: each transaction's recipients and the app each routed to, at RCPT
        self._routes: weakref.WeakKeyDictionary[Envelope, dict[str, str]] = weakref.WeakKeyDictionary()

    @property
    def port(self) -> int:
        """The port listened on (the one bound once started: a given 0 is a free port then)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def ensure_started(self) -> bool:
        """Start unless started (when the first app with a handler is loaded); idempotent,
        and safe to call from several places at once. Never raises: a port that cannot be
        listened on is logged (and tried again at the next call); False then."""
        async with self._starting:
            if self._server is None:
                try:
                    await self.start()
                except OSError as e:
                    log.error("[jupyter-anvil] cannot receive mail on %s:%d: %s", self.host, self._port, e)
                    return False
            return True

    async def start(self) -> None:
        """Mark what a previous run left ``received`` as failed, then listen (OSError if it cannot)."""
        await self.sweep()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self, _Hooks(self), loop), self.host, self._port)
        log.info("[jupyter-anvil] receiving mail on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close every connection: a message whose handler has not
        answered stays ``received`` (its sender was never answered 250, and retries)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        await server.wait_closed()
        if self._deliveries:  # a handler about to answer may still store its outcome
            await asyncio.wait(set(self._deliveries), timeout=STOP_GRACE)
        for delivery in list(self._deliveries):
            delivery.cancel()

    async def sweep(self) -> None:
        """Records left ``received`` by a run that stopped before their handler answered:
        the sender was never answered 250, so it will send again; the record says so.
        (A server sharing the store that is handling one now stores its outcome over this.)
        Run at start, and whenever a server sharing the store is found gone (a crash):
        the mail it was handling is then marked failed by a live server, never lost silently."""
        try:
            left = await self.mail.find(box="inbox", status="received")
        except Exception:
            log.exception("[jupyter-anvil] could not read the mail left unanswered by the last run")
            return
        for record in left:
            if self.server_id is not None and record.owner == self.server_id:
                continue
            if (
                record.owner is not None
                and self.owner_is_gone is not None
                and not await self.owner_is_gone(record.owner)
            ):
                continue  # a live server sharing the store is handling it
            try:
                await self.mail.update(record.id, {"status": "failed", "outcome": STOPPED_OUTCOME})
            except Exception:
                log.exception("[jupyter-anvil] could not mark mail %s failed", record.id)

    # -- a transaction ----------------------------------------------------------------------
    def mail_from(self, envelope: Envelope, address: str, options: list[str]) -> str:
        if _CONTROL.search(address):
            return "553 5.1.7 The sender's address holds control characters"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    def rcpt(self, envelope: Envelope, address: str) -> str:
        if _CONTROL.search(address):
            return "553 5.1.3 The recipient's address holds control characters"
        routes = self._routes.setdefault(envelope, {})
        if address in routes:
            return "250 2.1.5 OK"  # said twice: taken once
        if len(routes) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        app = self.router.route(address)
        if app is None:
            return f"550 5.1.1 No app here takes mail for <{shown(address)}>"
        routes[address] = app
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def data(self, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if not is_mail(raw):
            return "554 5.6.0 The message is not mail: it does not begin with a header"
        routes = self._routes.pop(envelope, {})
        by_app: dict[str, list[str]] = {}
        for address in envelope.rcpt_tos:
            app = routes.get(address)
            if app is not None:
                by_app.setdefault(app, []).append(address)
        if not by_app:
            return "503 5.5.1 Error: need RCPT command"
        heads = await asyncio.to_thread(_headline, raw)
        # the null sender (a bounce): aiosmtpd keeps it as "<>"; the handler's envelope says ""
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        records = [self._record(app, raw, heads, mail_from, recipients) for app, recipients in by_app.items()]
        stored: list[MailRecord] = []
        try:
            for record in records:  # all stored before any handler runs
                await self.mail.insert(record)
                stored.append(record)
        except Exception:
            log.exception("[jupyter-anvil] could not store an inbound message")
            for record in stored:  # no handler runs: the records say so (the sender retries)
                with contextlib.suppress(Exception):
                    await self.mail.update(record.id, {"status": "failed", "outcome": NOT_STORED_OUTCOME})
            return "451 4.3.0 The message could not be stored; try again later"
        peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else None
        # stored: from here the handlers run to their end and store how it went, even if the
        # sender hangs up (it was not answered 250, so it sends again; the record says why)
        delivery = spawn(self._deliver(records, raw, heads, mail_from, peer))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        return await asyncio.shield(delivery)

    async def _deliver(
        self, records: list[MailRecord], raw: bytes, heads: Headline, mail_from: str, peer: str | None
    ) -> str:
        dkim = await self._dkim(raw, heads)
        answers = await asyncio.gather(
            *(
                self._handle(record, dkim, {"from_address": mail_from, "recipient": record.recipients[0]}, peer)
                for record in records
            )
        )
        return _one_reply(answers)

    async def _dkim(self, raw: bytes, heads: Headline) -> DkimResult:
        """The message's DKIM verdict, on a worker thread (DNS blocks), within DKIM_TIMEOUT."""
        check = asyncio.to_thread(check_dkim, raw, _domain_of(heads.from_header), self.dnsfunc)
        try:
            return await asyncio.wait_for(check, DKIM_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("[jupyter-anvil] a DKIM check took over %g s: no valid signature", DKIM_TIMEOUT)
            return {"valid_from_sender": False, "domains": []}

    def _record(self, app: str, raw: bytes, heads: Headline, mail_from: str, recipients: list[str]) -> MailRecord:
        now = time.time()
        return MailRecord(
            id=new_mail_id(),
            app=app,
            box="inbox",
            status="received",
            created=now,
            updated=now,
            message_id=heads.message_id,
            envelope_from=mail_from,
            recipients=recipients,
            from_header=heads.from_header,
            to_header=heads.to_header,
            subject=heads.subject,
            size=len(raw),
            owner=self.server_id,
            raw=raw,
        )

    async def _handle(self, record: MailRecord, dkim: DkimResult, envelope: MailEnvelope, peer: str | None) -> str:
        try:
            code, text = await self.handling.handle(record.app, record, dkim, envelope, peer=peer)
        except Exception:  # handling never raises; if it did, the sender tries again later
            log.exception("[jupyter-anvil] the handling of mail %s failed", record.id)
            return "451 4.3.0 The message could not be handled; try again later"
        return f"{code} {text}"


def _headline(raw: bytes) -> Headline:
    try:
        return headline(raw)
    except Exception:  # a message the parser chokes on is listed without its headers
        log.debug("inbound mail: headers not readable", exc_info=True)
        return Headline(None, "", "", "")


def _domain_of(from_header: str) -> str:
    """The domain of the From header's first address ("" if none can be read)."""
    try:
        addresses = email.utils.getaddresses([from_header])
    except Exception:  # noqa: BLE001 - an unreadable From has no domain: no DKIM from its sender
        return ""
    address = addresses[0][1] if addresses else ""
    return address.rpartition("@")[2] if "@" in address else ""


def _one_reply(answers: list[str]) -> str:
    """One reply for a message handled by several apps: 250 if all took it, else the
    first temporary failure (the sender retries), else the first refusal."""
    failures = [a for a in answers if not a.startswith("2")]
    if not failures:
        return answers[0] if len(answers) == 1 else "250 2.0.0 OK: handled"
    return next((a for a in failures if a.startswith("4")), failures[0])


class _Hooks:
    """aiosmtpd's handler: its hooks hand over to the server."""

    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_MAIL(  # aiosmtpd names its hooks so
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        return self.server.mail_from(envelope, address, mail_options)

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        return self.server.rcpt(envelope, address)

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        return await self.server.data(session, envelope)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("[jupyter-anvil] inbound SMTP session failed", exc_info=error)
        return "451 4.3.0 Local error; try again later"  # never the exception's text


class _Connection(SMTP):
    """One SMTP connection; past ``max_connections`` refused with 421 before the greeting."""

    def __init__(self, server: MailServer, hooks: _Hooks, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            hooks,
            data_size_limit=server.max_bytes,
            enable_SMTPUTF8=True,
            hostname=server.hostname,
            ident="jupyter-anvil",
            timeout=server.idle_timeout,
            command_call_limit=COMMAND_LIMITS,
            loop=loop,
        )
        self.server = server
        self.refused = False
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.counted:  # the first time: STARTTLS would call it again
            if len(self.server.connections) >= self.server.max_connections:
                self.refused = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(b"421 4.7.0 Too many connections; try again later\r\n")
                transport.close()
                return
            self.counted = True
            self.server.connections.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        self.server.connections.discard(self)
        super().connection_lost(error)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # aiosmtpd's name
        """DATA, a bounded number at once: each message is held in memory whole."""
        try:
            await asyncio.wait_for(self.server.transactions.acquire(), DATA_WAIT)
        except asyncio.TimeoutError:
            await self.push("451 4.3.2 Too many messages in progress; try again later")
            return
        try:
            await super().smtp_DATA(arg)
        finally:
            self.server.transactions.release()

    def eof_received(self) -> bool | None:
        if self.refused:
            return False
        return super().eof_received()
