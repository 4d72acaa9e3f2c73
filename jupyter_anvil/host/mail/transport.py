"""How a message leaves: the outbox (it never does) or an SMTP relay.

A transport has one coroutine, :meth:`Transport.deliver`, which makes one attempt and
says how it went: :class:`Delivered`, :class:`TemporaryFailure` (worth retrying) or
:class:`PermanentFailure` (retrying cannot help). Retrying is the sender's business
(:mod:`.outbound`), not the transport's.

The relay is spoken to with the standard library's ``smtplib`` on a worker thread, so a
slow relay never blocks the event loop. Each attempt is one connection: EHLO, TLS as the
URL says, AUTH when a user is set, then MAIL / RCPT / DATA by hand rather than through
``sendmail``, to keep the relay's own reply to DATA for the record.

Replies are classified by their code: 2xx accepted, 5xx permanent, anything else (4xx,
a refused or reset connection, a timeout, a failed TLS handshake) temporary. A message
some recipients of which were refused (but not all) is delivered: the refused ones are
named in the outcome. Nothing here ever puts the password in an outcome: every text
from the relay passes through :meth:`RelayConfig.scrub`.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .relay import RelayConfig

#: refused recipients named in an outcome; the rest are counted
_REFUSED_SHOWN = 5
#: seconds to wait for the relay's answer to QUIT (the message's outcome is known by then)
QUIT_TIMEOUT = 1.0


@dataclass(frozen=True)
class Delivered:
    """The relay accepted the message (for at least one recipient)."""

    smtp_code: int
    reply: str
    #: recipient -> the relay's refusal, for those it would not take
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        text = f"accepted by the relay: {self.reply}"
        if self.refused:
            shown = "; ".join(f"{r}: {why}" for r, why in list(self.refused.items())[:_REFUSED_SHOWN])
            more = len(self.refused) - _REFUSED_SHOWN
            text += f" (refused {len(self.refused)} recipients: {shown}{f'; and {more} more' if more > 0 else ''})"
        return text


@dataclass(frozen=True)
class TemporaryFailure:
    """Not sent this time; the same attempt later may succeed."""

    smtp_code: int | None  # None: there was no reply (refused, reset, timeout, TLS)
    reply: str

    @property
    def outcome(self) -> str:
        return self.reply


@dataclass(frozen=True)
class PermanentFailure:
    """The relay refused the message for good (5xx), or we refused to send it."""

    smtp_code: int | None
    reply: str
    #: False: the refusal is of something else than the message (the credentials, our
    #: own refusal to log in unencrypted): the caller is not told "the relay refused the message"
    of_message: bool = True

    @property
    def outcome(self) -> str:
        return self.reply


Attempt = Delivered | TemporaryFailure | PermanentFailure


def classify(code: int | None, reply: str, of_message: bool = True) -> TemporaryFailure | PermanentFailure:
    """A refusal by its code: 5xx is for good, anything else may pass later."""
    if code is not None and 500 <= code <= 599:
        return PermanentFailure(code, reply, of_message)
    return TemporaryFailure(code, reply)


def reply_text(code: int | None, message: bytes | str | None) -> str:
    """``"550 5.1.1 <x@y>: no such user"``: a (multi-line) reply on one line."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else (message or "")
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"{code} {text}".strip() if code is not None else text


class Transport(ABC):
    """Where :class:`~.outbound.MailSender` hands messages."""

    #: False: the transport keeps mail (in the store) and :meth:`deliver` is never called
    sends_mail: bool = True
    #: for logs and errors (never a credential)
    shown: str = ""

    @abstractmethod
    async def deliver(
        self, raw: bytes, envelope_from: str, recipients: list[str], timeout: float | None = None
    ) -> Attempt:
        """One attempt at handing ``raw`` (CRLF line ends, sent as given) to the next hop."""


class Outbox(Transport):
    """The default: nothing leaves the machine; every message stays in the store, ``kept``."""

    sends_mail = False
    shown = "the outbox"

    async def deliver(
        self, raw: bytes, envelope_from: str, recipients: list[str], timeout: float | None = None
    ) -> Attempt:
        return PermanentFailure(None, "the outbox keeps mail; it sends nothing")


class SmtpRelay(Transport):
    """An SMTP relay (submission server, smarthost) named by a :class:`RelayConfig`."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.shown = config.shown

    def __repr__(self) -> str:
        return f"SmtpRelay({self.shown!r})"

    async def deliver(
        self, raw: bytes, envelope_from: str, recipients: list[str], timeout: float | None = None
    ) -> Attempt:
        """One connection to the relay, on a worker thread. ``timeout`` (at most the
        config's) bounds the connection and each reply, not the whole attempt."""
        limit = self.config.timeout if timeout is None else max(0.5, min(timeout, self.config.timeout))
        return await asyncio.to_thread(self._attempt, raw, envelope_from, list(recipients), limit)

    def _attempt(self, raw: bytes, envelope_from: str, recipients: list[str], timeout: float) -> Attempt:
        try:
            client = self._connect(timeout)
        except (OSError, smtplib.SMTPException) as e:
            return self._failure(e, f"could not connect to {self.shown}", timeout)
        try:
            return self._session(client, raw, envelope_from, recipients)
        except (OSError, smtplib.SMTPException) as e:
            return self._failure(e, f"the connection to {self.shown} failed", timeout)
        finally:
            # the outcome is known: a failing QUIT must not turn a delivery into a retry, nor
            # a relay that never answers it keep a delivered message unrecorded for its timeout
            with contextlib.suppress(OSError):
                if client.sock is not None:
                    client.sock.settimeout(min(timeout, QUIT_TIMEOUT))
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    def _connect(self, timeout: float) -> smtplib.SMTP:
        config = self.config
        if config.scheme == "smtps":
            return smtplib.SMTP_SSL(config.host, config.port, timeout=timeout, context=config.tls_context())
        return smtplib.SMTP(config.host, config.port, timeout=timeout)

    def _session(self, client: smtplib.SMTP, raw: bytes, envelope_from: str, recipients: list[str]) -> Attempt:
        config = self.config
        client.ehlo_or_helo_if_needed()  # EHLO, else HELO; SMTPHeloError when both are refused
        encrypted = config.scheme == "smtps"
        if config.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=config.tls_context())
            client.ehlo_or_helo_if_needed()  # what the relay offers may change under TLS (AUTH)
            encrypted = True
        if config.user is not None:
            if not encrypted and config.scheme != "smtp+plain":
                return PermanentFailure(
                    None,
                    f"the relay {config.shown} does not offer STARTTLS: refusing to send the credentials "
                    f"for {config.user} unencrypted (use smtps:// if it speaks TLS from the start)",
                    of_message=False,
                )
            try:
                client.login(config.user, config.password or "")
            except smtplib.SMTPAuthenticationError as e:  # 535 for good; 454 and the like may pass later
                reply = self._scrubbed(e.smtp_code, e.smtp_error)
                return classify(e.smtp_code, f"the relay refused the credentials for {config.user}: {reply}", False)
            except smtplib.SMTPNotSupportedError:
                return PermanentFailure(None, f"the relay {config.shown} offers no AUTH, but a user is set", False)
            except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException):
                raise
            except smtplib.SMTPException as e:  # "No suitable authentication method found."
                return PermanentFailure(None, f"cannot log in to the relay {config.shown} as {config.user}: {e}", False)
        options = self._mail_options(client, raw, envelope_from, recipients)
        if isinstance(options, PermanentFailure):
            return options
        code, message = client.mail(envelope_from, options)
        if code != 250:
            return self._refused(client, code, message)
        refused: dict[str, tuple[int, bytes]] = {}
        for recipient in recipients:
            code, message = client.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, message)
        if len(refused) == len(recipients):
            # every recipient refused: for good only if none of the refusals is temporary
            code, message = next(((c, m) for c, m in refused.values() if c < 500), refused[recipients[0]])
            outcome = self._refused(client, code, message)
            if len(recipients) == 1:
                return outcome
            codes = ", ".join(str(c) for c in sorted({c for c, _ in refused.values()}))
            return classify(code, f"{outcome.outcome} (all {len(recipients)} recipients were refused: {codes})")
        try:
            code, message = client.data(raw)  # raw is CRLF already: data() only dot-stuffs it
        except smtplib.SMTPDataError as e:  # DATA itself refused (not 354)
            return classify(e.smtp_code, self._scrubbed(e.smtp_code, e.smtp_error))
        if code != 250:
            return classify(code, self._scrubbed(code, message))
        return Delivered(
            code,
            self._scrubbed(code, message),
            {r: self._scrubbed(c, m) for r, (c, m) in refused.items()},
        )

    def _mail_options(
        self, client: smtplib.SMTP, raw: bytes, envelope_from: str, recipients: list[str]
    ) -> list[str] | PermanentFailure:
        options: list[str] = []
        if not client.does_esmtp:
            return options
        if client.has_extn("size"):
            options.append(f"SIZE={len(raw)}")
        if not raw.isascii() and client.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in (envelope_from, *recipients)):
            if not client.has_extn("smtputf8"):
                return PermanentFailure(None, "the relay does not take non-ASCII addresses (it lacks SMTPUTF8)")
            options.append("SMTPUTF8")
        return options

    def _refused(self, client: smtplib.SMTP, code: int, message: bytes) -> TemporaryFailure | PermanentFailure:
        # the outcome is the refusal, whatever happens to the connection
        with contextlib.suppress(OSError, smtplib.SMTPException):
            client.rset()
        return classify(code, self._scrubbed(code, message))

    def _scrubbed(self, code: int | None, message: bytes | str | None) -> str:
        return self.config.scrub(reply_text(code, message))

    def _failure(self, error: BaseException, doing: str, timeout: float) -> Attempt:
        """An exception of smtplib or the socket, as an attempt's outcome."""
        if isinstance(error, smtplib.SMTPResponseException):  # a reply we did not expect (EHLO, STARTTLS)
            return classify(error.smtp_code, self._scrubbed(error.smtp_code, error.smtp_error))
        if isinstance(error, ssl.SSLCertVerificationError):
            what = f"the relay's TLS certificate was not accepted: {error.verify_message or error}"
        elif isinstance(error, ssl.SSLError):
            what = f"the TLS handshake with the relay failed: {error.reason or error}"
        elif isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
            # smtplib turns a reply that timed out into SMTPServerDisconnected
            what = f"{doing}: the relay did not answer within {timeout:g} s"
        elif isinstance(error, smtplib.SMTPServerDisconnected):
            what = f"{doing}: the relay closed the connection"
        else:
            what = f"{doing}: {error.strerror or error}" if isinstance(error, OSError) else f"{doing}: {error}"
        return TemporaryFailure(None, self.config.scrub(what))
