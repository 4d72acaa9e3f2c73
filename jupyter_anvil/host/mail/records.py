"""What the store keeps of each message, sent or received: one record per message.

A message's ``box`` says where it is, its ``status`` how it got there::

    box     status     meaning
    outbox  kept       the outbox transport (the default): kept here, never sent anywhere
    outbox  queued     waiting for the relay: being tried, or retried after a temporary failure
    outbox  failed     the relay refused it (5xx), or the retry window closed first
    sent    sent       the relay accepted it
    inbox   received   stored; its handler has not answered yet (or the server stopped first)
    inbox   handled    the handler returned: the sender was answered 250
    inbox   rejected   refused for good: no handler (551), DeliveryFailure (554 or its code),
                       require_dkim without a valid signature
    inbox   failed     answered 451 (a temporary failure): the handler raised, or took too long
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal, TypedDict, get_args

MailBox = Literal["outbox", "sent", "inbox"]
MAIL_BOXES: Final[tuple[MailBox, ...]] = get_args(MailBox)

MailStatus = Literal["kept", "queued", "sent", "failed", "received", "handled", "rejected"]
MAIL_STATUSES: Final[tuple[MailStatus, ...]] = get_args(MailStatus)


@dataclass(kw_only=True)
class MailSummary:
    """A message's record without its bytes: what lists and the live feed carry."""

    id: str
    app: str
    box: MailBox
    status: MailStatus
    created: float  # when the store took it (epoch seconds)
    updated: float  # its last change
    #: the Message-ID header, as written (None if the message has none)
    message_id: str | None
    #: the SMTP envelope: ``MAIL FROM`` ("" for a bounce) and every ``RCPT TO`` (bcc included)
    envelope_from: str
    recipients: list[str]
    #: the decoded From, To and Subject headers, for lists ("" when absent)
    from_header: str
    to_header: str
    subject: str
    size: int  # bytes of the raw message
    #: outbound: delivery attempts made so far
    attempts: int = 0
    #: outbound: the relay's last reply code; inbound: the code the sender was answered
    smtp_code: int | None = None
    #: in words: the relay's reply, the handler's error, why it failed (never a credential)
    outcome: str = ""
    #: outbound, while queued: when the next attempt is due, and when retrying stops
    next_attempt: float | None = None
    deadline: float | None = None
    #: the server instance that sends or handles it (instances.py)
    owner: str | None = None
    #: the app log's id of the call that sent it, or of the handler's run
    call_id: str | None = None

    def summary(self) -> MailSummary:
        """A copy of the summary's fields (without the bytes)."""
        return MailSummary(**{f.name: getattr(self, f.name) for f in fields(MailSummary)})


@dataclass(kw_only=True)
class MailRecord(MailSummary):
    """The whole record: the message as sent or received (RFC 5322 bytes, CRLF line ends)."""

    raw: bytes


class MailChanges(TypedDict, total=False):
    """Columns of a record to change (``MailStore.update``); ``updated`` is set by the store."""

    box: MailBox
    status: MailStatus
    attempts: int
    smtp_code: int | None
    outcome: str
    next_attempt: float | None
    deadline: float | None
    owner: str | None
    call_id: str | None
