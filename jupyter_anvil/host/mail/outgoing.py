"""Checking a message server code hands the host to send, before it is stored.

The kernel builds the message; the host trusts it no more than the code that runs there.
What :func:`prepare` insists on, each refusal a :class:`~jupyter_anvil.errors.SendFailure`
naming what was wrong:

* the message is at most ``max_bytes``, and has a header section of well-formed fields
  with a ``From``;
* the envelope sender and every recipient are plain addresses (``local@domain``: no
  spaces, no line breaks that would let a value speak SMTP commands of its own);
* there is at least one recipient, and at most ``max_recipients`` (duplicates dropped).

What it changes, and nothing else (the bytes sent are the bytes given, when the kernel
built them right): line ends become CRLF; ``Bcc`` (and ``Resent-Bcc``) fields are
dropped, since a header would show every recipient the blind copies; a message without
a ``Message-ID`` gets one, so that what ``send`` returns can name it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from ...errors import SendFailure
from .reading import headline

DEFAULT_MAX_BYTES: Final = 25 * 1024 * 1024
DEFAULT_MAX_RECIPIENTS: Final = 1000
#: header fields never sent: they would show every recipient the blind copies
BLIND_FIELDS: Final = frozenset({b"bcc", b"resent-bcc"})
#: a field's text kept in the record's summary columns
SUMMARY_CHARS: Final = 1000

_LINE_END = re.compile(rb"\r\n|\r|\n")
# RFC 5322 field name: printable ASCII but the colon
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# each matched whole (fullmatch: a $ would let a trailing newline through)
# a local part with nothing that needs quoting (quoted local parts are not taken)
_LOCAL = re.compile(r"[^\s\x00-\x1f\x7f<>()\[\],;:\\\"@]{1,64}")
# a domain of labels (Unicode letters allowed: IDNs, sent with SMTPUTF8), or an address literal
_DOMAIN = re.compile(r"(?:(?!-)[\w-]{1,63}(?<!-)\.)*(?!-)[\w-]{1,63}(?<!-)|\[(?:IPv6:)?[0-9A-Fa-f:.]+\]")


@dataclass(frozen=True)
class Outgoing:
    """A checked message: what is stored and sent, and the fields the record lists."""

    raw: bytes
    envelope_from: str
    recipients: list[str]
    message_id: str
    from_header: str
    to_header: str
    subject: str


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def check_address(address: Any) -> str:
    """``address`` if it is a plain ``local@domain`` address; else SendFailure naming it."""
    if not isinstance(address, str):
        raise SendFailure(f"An email address must be a string, not {type(address).__name__}")
    local, at, domain = address.rpartition("@")
    if len(address) > 254 or not at or not _LOCAL.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        raise SendFailure(f"Invalid email address: {_shown(address)}")
    return address


def check_recipients(recipients: Any, most: int = DEFAULT_MAX_RECIPIENTS) -> list[str]:
    """The envelope recipients, checked, without repeats (compared without case)."""
    if not isinstance(recipients, (list, tuple)):
        raise SendFailure(f"The recipients must be a list of addresses, not {type(recipients).__name__}")
    unique: dict[str, str] = {}
    for recipient in recipients:
        unique.setdefault(check_address(recipient).lower(), recipient)
    if not unique:
        raise SendFailure("The message has no recipients: give at least one address in to, cc or bcc")
    if len(unique) > most:
        raise SendFailure(f"The message has {len(unique)} recipients; at most {most} may be given")
    return list(unique.values())


def _header_fields(header: bytes) -> list[bytes]:
    """The header section's fields, each with its folded lines (CRLF at each end)."""
    fields: list[bytes] = []
    for number, line in enumerate(header.split(b"\r\n"), 1):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        elif _FIELD.match(line):
            fields.append(line + b"\r\n")
        else:
            raise SendFailure(f"Line {number} of the message's header is not a header field: {_shown(line[:80])}")
    return fields


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        mib = 1024 * 1024
        raise SendFailure(f"The message is {size / mib:.1f} MB; the most that may be sent is {max_bytes / mib:.1f} MB")


def prepare(
    raw: Any,
    envelope_from: Any,
    recipients: Any,
    *,
    mail_id: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_recipients: int = DEFAULT_MAX_RECIPIENTS,
) -> Outgoing:
    """Check a message and its envelope (see the module's docstring); ``mail_id`` names
    a Message-ID the message lacks."""
    if not isinstance(raw, (bytes, bytearray)):
        raise SendFailure(f"The message must be bytes (message/rfc822), not {type(raw).__name__}")
    _check_size(len(raw), max_bytes)
    sender = check_address(envelope_from)
    to = check_recipients(recipients, max_recipients)
    text = _LINE_END.sub(b"\r\n", bytes(raw))
    if not text.strip():
        raise SendFailure("The message is empty")
    header, blank, body = text.partition(b"\r\n\r\n")
    header = header if blank else header.removesuffix(b"\r\n")  # headers only, no body
    if header.startswith(b"\r\n") or not header:
        raise SendFailure("The message has no header (it must start with header fields such as From)")
    fields = [f for f in _header_fields(header) if _field_name(f) not in BLIND_FIELDS]
    names = {_field_name(f) for f in fields}
    if b"from" not in names:
        raise SendFailure("The message has no From header")
    if b"message-id" not in names:
        domain = sender.rpartition("@")[2]
        fields.insert(0, f"Message-ID: <{mail_id}@{domain}>\r\n".encode())
    head = b"".join(fields)
    fields_read = headline(head + b"\r\n")
    raw_out = head + b"\r\n" + body if blank else head
    _check_size(len(raw_out), max_bytes)  # CRLF line ends and a Message-ID may have added a little
    return Outgoing(
        raw=raw_out,
        envelope_from=sender,
        recipients=to,
        message_id=(fields_read.message_id or "")[:SUMMARY_CHARS].strip(),
        from_header=fields_read.from_header[:SUMMARY_CHARS],
        to_header=fields_read.to_header[:SUMMARY_CHARS],
        subject=fields_read.subject[:SUMMARY_CHARS],
    )
