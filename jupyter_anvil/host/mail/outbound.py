"""Sending mail: every message is stored first, then handed to the transport and retried.

``send`` checks the message (outgoing.py) and stores it before anything else, so nothing
it accepted is lost: with the outbox it stays there (``kept``) and ``send`` returns at
once; with a relay it is ``queued`` with a deadline (``retry_seconds`` from now) and
delivered by a task of this service, not of the caller: a caller that goes away (its
call timed out) does not stop the delivery, it only stops waiting for the outcome.

Each attempt is recorded (``attempts``, ``smtp_code``, ``outcome``, ``next_attempt``).
Accepted: box ``sent``. A permanent refusal, or a temporary failure that outlasts the
deadline: ``failed``, and ``send`` raises SendFailure with the relay's reply or the last
error. Temporary failures are retried after 1, 2, 4 ... seconds (at most 30, each with
jitter so that many messages do not hit a recovering relay at once); the last attempt
is made at the deadline itself. At most ``connections`` attempts run at a time.

Exactly once, as near as SMTP allows: a message is written ``sent`` right after the
relay's 250, and only ``queued`` records are sent again by :meth:`MailSender.start` (the
next server's start). The one window where a message goes twice is a crash (or a stop
that outwaits its bound) after the relay's 250 to DATA and before that write, or a
connection lost after our final dot and before the 250 arrives; SMTP has no way to ask a
relay whether it took a message. The write is one small UPDATE: the window is a few
milliseconds. A stop waits (up to its timeout) for attempts under way to finish and be
written, and cancels only the waits between attempts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final

from ...errors import SendFailure
from .outgoing import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECIPIENTS, prepare
from .records import MailChanges, MailRecord, MailSummary
from .store import MailStore, new_mail_id
from .transport import Attempt, Delivered, PermanentFailure, TemporaryFailure, Transport

module_log = logging.getLogger(__name__)

KEPT_OUTCOME: Final = "kept in the outbox: no mail relay is configured, so nothing was sent"
STOPPED: Final = (
    "The server stopped before the mail relay accepted the message; it stays queued and "
    "is sent when the server starts again"
)
#: tries at writing 'sent' after the relay accepted (a failed write means a second send later)
_SENT_WRITES: Final = (0.1, 0.5, 2.0)


def retry_delay(failures: int, *, first: float = 1.0, most: float = 30.0, jitter: float | None = None) -> float:
    """Seconds to wait after the ``failures``-th failed attempt: ``first`` doubled each
    time, times a jitter between 0.75 and 1.25 (``jitter`` 0..1; random when None), at
    most ``most``."""
    base = first * 2.0 ** min(max(failures, 1) - 1, 32)
    spread = random.random() if jitter is None else jitter  # noqa: S311 - not for secrets
    return min(most, base * (0.75 + 0.5 * spread))


class MailSender:
    """The sending service: ``send`` for server code, ``start``/``stop`` for the server."""

    def __init__(
        self,
        mail: MailStore,
        transport: Transport,
        *,
        retry_seconds: float = 120.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_recipients: int = DEFAULT_MAX_RECIPIENTS,
        connections: int = 4,
        max_waiting: int = 1000,
        retry_first: float = 1.0,
        retry_most: float = 30.0,
        server_id: str | None = None,
        owner_is_gone: Callable[[str], Awaitable[bool]] | None = None,
        log: logging.Logger = module_log,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mail = mail
        self.transport = transport
        self.retry_seconds = retry_seconds
        self.max_bytes = max_bytes
        self.max_recipients = max_recipients
        #: messages being delivered or waiting to retry, at most (each holds its bytes in memory)
        self.max_waiting = max_waiting
        self.retry_first = retry_first
        self.retry_most = retry_most
        self.server_id = server_id
        #: servers sharing a store: whether the server that queued a message is gone (so
        #: this one takes it over at start); None: every queued message is this server's
        self.owner_is_gone = owner_is_gone
        self.log = log
        self.clock = clock
        self._connections = asyncio.Semaphore(max(1, connections))
        #: deliveries under way (or waiting to retry), by mail id
        self._deliveries: dict[str, asyncio.Task[tuple[MailSummary, SendFailure | None]]] = {}
        #: of those, the ones in an attempt or writing its outcome: a stop lets them finish
        self._busy: set[str] = set()
        self._stopping = False

    # -- the server's start and stop ---------------------------------------------------------
    async def start(self) -> None:
        """Resume every ``queued`` record a previous run left (each at once; one attempt
        at least, even if its deadline passed while no server ran), but those of another
        server that ``owner_is_gone`` says is still running."""
        self._stopping = False
        await self.resume()

    async def resume(self) -> None:
        """Send the ``queued`` records of servers that are gone (each taken over first, so
        of several live servers only one sends it): at start, and whenever a server sharing
        the store is found gone (a crash). Never this server's own (each process has an id
        of its own: at start it has none; later, its own are being sent already, or about
        to be by the ``send`` that stored them). Not while stopping."""
        if self._stopping:
            return
        found = await self.mail.find(box="outbox", status="queued")
        queued = [r for r in found if (self.server_id is None or r.owner != self.server_id) and await self._ours(r)]
        if not queued:
            return
        if not self.transport.sends_mail:
            self.log.warning(
                "[jupyter-anvil] %d messages are queued for a mail relay, but none is configured: "
                "they wait until one is",
                len(queued),
            )
            return
        self.log.info("[jupyter-anvil] sending %d queued messages via %s", len(queued), self.transport.shown)
        for record in queued:
            if record.id not in self._deliveries and not self._stopping:
                if self.server_id is not None:
                    try:
                        if not await self.mail.take_over(record.id, record.owner, self.server_id):
                            continue  # another live server took it over first, or it was sent meanwhile
                    except Exception:
                        self.log.exception("[jupyter-anvil] could not take over mail %s", record.id)
                        continue
                    record.owner = self.server_id
                self._deliver_later(record)

    async def _ours(self, record: MailRecord) -> bool:
        if self.owner_is_gone is None or record.owner is None or record.owner == self.server_id:
            return True
        return await self.owner_is_gone(record.owner)

    async def stop(self, timeout: float = 4.0) -> None:
        """Stop delivering: waits between attempts are cancelled at once; attempts under
        way get up to ``timeout`` seconds to finish and be recorded. What is not sent
        stays ``queued`` for the next start."""
        self._stopping = True
        deliveries = dict(self._deliveries)
        for mail_id, task in deliveries.items():
            if mail_id not in self._busy:
                task.cancel()
        if deliveries:
            await asyncio.wait(deliveries.values(), timeout=timeout)
        cut = [task for task in deliveries.values() if not task.done()]
        for task in cut:
            task.cancel()
        if cut:
            self.log.warning(
                "[jupyter-anvil] %d messages were being handed to the mail relay when the server stopped: "
                "they stay queued and are sent at the next start (the relay may then get them twice)",
                len(cut),
            )

    # -- sending ------------------------------------------------------------------------------
    async def send(
        self, app: str, raw: bytes, envelope_from: str, recipients: list[str], call_id: str | None = None
    ) -> MailSummary:
        """Store the message, then (with a relay) wait until the relay accepted it.
        SendFailure: the message is malformed (nothing stored), the relay refused it, or
        could not be reached before the retry window closed (stored ``failed``)."""
        if self._stopping:
            raise SendFailure("The server is stopping: the message was not sent")
        if self.transport.sends_mail and len(self._deliveries) >= self.max_waiting:
            raise SendFailure(
                f"{len(self._deliveries)} messages are waiting for the mail relay already: "
                "this one was not sent; try again later"
            )
        mail_id = new_mail_id()
        limits = {"max_bytes": self.max_bytes, "max_recipients": self.max_recipients}
        message = prepare(raw, envelope_from, recipients, mail_id=mail_id, **limits)
        now = self.clock()
        keep = not self.transport.sends_mail
        record = MailRecord(
            id=mail_id,
            app=app,
            box="outbox",
            status="kept" if keep else "queued",
            created=now,
            updated=now,
            message_id=message.message_id,
            envelope_from=message.envelope_from,
            recipients=message.recipients,
            from_header=message.from_header,
            to_header=message.to_header,
            subject=message.subject,
            size=len(message.raw),
            outcome=KEPT_OUTCOME if keep else "",
            next_attempt=None if keep else now,
            deadline=None if keep else now + self.retry_seconds,
            owner=self.server_id,
            call_id=call_id,
            raw=message.raw,
        )
        try:
            await self.mail.insert(record)
        except Exception:
            self.log.exception("[jupyter-anvil] could not store a message of app %s", app)
            raise SendFailure("The message could not be stored, so it was not sent") from None
        if keep:
            self.log.info("[jupyter-anvil] mail %s of app %s kept in the outbox (not sent)", mail_id, app)
            return record.summary()
        task = self._deliver_later(record)
        try:
            # shielded: the caller going away must not cancel the delivery
            summary, failure = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # the service stopped, not the caller
                raise SendFailure(STOPPED) from None
            raise
        if failure is not None:
            raise failure
        return summary

    def _deliver_later(self, record: MailRecord) -> asyncio.Task[tuple[MailSummary, SendFailure | None]]:
        task = asyncio.ensure_future(self._deliver(record))
        self._deliveries[record.id] = task
        task.add_done_callback(lambda _: self._deliveries.pop(record.id, None))
        return task

    async def _deliver(self, record: MailRecord) -> tuple[MailSummary, SendFailure | None]:
        """Attempts until the relay accepts, refuses for good, or the deadline passes.
        Returns the record's summary and, unless it was sent, the SendFailure for the caller."""
        attempts = record.attempts
        deadline = record.deadline if record.deadline is not None else self.clock() + self.retry_seconds
        while True:
            async with self._connections:
                self._busy.add(record.id)
                try:
                    attempt = await self._attempt(record, deadline)
                    attempts += 1
                    if isinstance(attempt, Delivered):
                        return await self._sent(record, attempts, attempt), None
                    if isinstance(attempt, PermanentFailure):
                        failure = SendFailure(
                            f"The mail relay refused the message: {attempt.reply}"
                            if attempt.of_message
                            else f"Could not send the message: {attempt.reply}"
                        )
                        return await self._failed(record, attempts, attempt, failure), failure
                    now = self.clock()
                    if now >= deadline:
                        failure = SendFailure(self._window_closed(record, deadline, attempt))
                        return await self._failed(record, attempts, attempt, failure), failure
                    wait = min(deadline - now, retry_delay(attempts, first=self.retry_first, most=self.retry_most))
                    changes: MailChanges = {
                        "attempts": attempts,
                        "smtp_code": attempt.smtp_code,
                        "outcome": attempt.outcome,
                        "next_attempt": now + wait,
                    }
                    summary = await self._write(record, changes)
                finally:
                    self._busy.discard(record.id)
            if summary is not None and not self._stopping:
                self.log.info(
                    "[jupyter-anvil] mail %s of app %s not sent yet (%s); trying again in %.1f s",
                    record.id,
                    record.app,
                    attempt.outcome,
                    wait,
                )
                await asyncio.sleep(wait)
                # marks the attempt, and finds out whether the record is still there
                summary = await self._write(record, {"next_attempt": self.clock()})
            if summary is None:  # deleted (the admin API) while it waited: nothing left to send
                self.log.info("[jupyter-anvil] mail %s was deleted before it could be sent", record.id)
                return record.summary(), SendFailure("The message was deleted before the mail relay accepted it")
            if self._stopping:
                return summary, SendFailure(STOPPED)

    async def _attempt(self, record: MailRecord, deadline: float) -> Attempt:
        try:
            # the relay's own timeout, unless the window closes sooner
            timeout = max(1.0, deadline - self.clock())
            return await self.transport.deliver(record.raw, record.envelope_from, record.recipients, timeout)
        except Exception as e:  # a fault of the transport's own: worth another try, not a lost message
            self.log.exception("[jupyter-anvil] the mail transport failed on mail %s", record.id)
            return TemporaryFailure(None, f"the mail transport failed ({type(e).__name__})")

    def _window_closed(self, record: MailRecord, deadline: float, last: TemporaryFailure) -> str:
        window = f"{max(deadline - record.created, 0):.0f} s"
        if last.smtp_code is None:
            return f"Could not reach the mail relay {self.transport.shown} for {window}: {last.reply}"
        return f"The mail relay {self.transport.shown} kept deferring the message for {window}: {last.reply}"

    async def _sent(self, record: MailRecord, attempts: int, attempt: Delivered) -> MailSummary:
        changes: MailChanges = {
            "box": "sent",
            "status": "sent",
            "attempts": attempts,
            "smtp_code": attempt.smtp_code,
            "outcome": attempt.outcome,
            "next_attempt": None,
        }
        self.log.info("[jupyter-anvil] mail %s of app %s sent via %s", record.id, record.app, self.transport.shown)
        # the relay has it: this write is all that stands between it and a second send
        for pause in (*_SENT_WRITES, None):
            try:
                summary = await self.mail.update(record.id, changes)
            except Exception:
                if pause is None:
                    self.log.exception(
                        "[jupyter-anvil] mail %s was sent but could not be recorded so: it may be sent again", record.id
                    )
                    break
                await asyncio.sleep(pause)
            else:
                if summary is not None:
                    return summary
                break  # deleted meanwhile: it was sent all the same
        local = record.summary()
        local.box, local.status, local.attempts = "sent", "sent", attempts
        local.smtp_code, local.outcome, local.next_attempt = attempt.smtp_code, attempt.outcome, None
        return local

    async def _failed(
        self, record: MailRecord, attempts: int, attempt: TemporaryFailure | PermanentFailure, failure: SendFailure
    ) -> MailSummary:
        self.log.warning("[jupyter-anvil] mail %s of app %s not sent: %s", record.id, record.app, failure)
        changes: MailChanges = {
            "status": "failed",
            "attempts": attempts,
            "smtp_code": attempt.smtp_code,
            "outcome": str(failure),
            "next_attempt": None,
        }
        summary = await self._write(record, changes)
        return summary if summary is not None else record.summary()

    async def _write(self, record: MailRecord, changes: MailChanges) -> MailSummary | None:
        """Record a change; None if the record is gone (deleted). A store that fails here
        costs the record's detail, not the mail: the stale summary is returned."""
        try:
            return await self.mail.update(record.id, changes)
        except Exception:
            self.log.exception("[jupyter-anvil] could not record an attempt to send mail %s", record.id)
            return record.summary()
