"""``email.Message``: an inbound message as an ``@email.handle_message`` handler sees it,
built from the host's ``InboundMail`` (protocol.py), and the handler's wrapper.

The message came from anyone on the network: parsing never raises. Mail that is barely
mail (no headers, garbage bytes, no body) still gives a Message, with empty values.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import re
from collections.abc import Callable, Iterator
from email import policy as email_policy
from email.message import EmailMessage
from email.message import Message as StdMessage
from email.parser import BytesParser
from typing import Any

from .. import wire
from ..errors import DeliveryFailure, SendFailure
from ..media import BlobMedia, Media
from . import mail_compose

#: parts nested deeper than this are not looked into (a hostile message may nest thousands)
MAX_DEPTH = 32
_PARSE_POLICY = email_policy.default
#: a message with more lines that could start a part is not split into parts: 25 MB of empty
#: parts is three million of them, minutes and gigabytes to parse (its body is one attachment)
MAX_BOUNDARY_LINES = 10_000
#: header fields decoded into ``Message.headers``, at most: 25 MB holds three million of them,
#: which would take the handler's whole time to decode (mail has tens)
MAX_HEADERS = 10_000
#: a header field's value is decoded up to this many characters, the rest dropped (a To
#: header may be 25 MB long; mail has lines of at most 998)
MAX_VALUE_CHARS = 100_000
_LINE_ENDS = re.compile(r"\r\n|\r|\n")
_FOLD = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])")
#: the longest Message-ID a reply threads on (RFC 5322 lines are at most 998 characters)
_MAX_THREAD_ID_CHARS = 998


class Address:
    """One address of a header: ``.address`` (``joe@example.com``), ``.name`` (the display
    name, or None) and ``.raw_value`` (as written: ``Joe Bloggs <joe@example.com>``)."""

    def __init__(self, address: str, name: str | None = None, raw_value: str | None = None) -> None:
        self.address = address
        self.name = name
        self.raw_value = raw_value if raw_value is not None else address

    def __repr__(self) -> str:
        return f"<anvil.email.Address {self.raw_value!r}>"


class Envelope:
    """The SMTP envelope: ``.from_address`` (``MAIL FROM``; "" for a bounce) and
    ``.recipient`` (the ``RCPT TO`` that brought it to this app, which may be in no header,
    as for a Bcc)."""

    def __init__(self, from_address: str, recipient: str) -> None:
        self.from_address = from_address
        self.recipient = recipient

    def __repr__(self) -> str:
        return f"<anvil.email.Message.Envelope from={self.from_address!r} recipient={self.recipient!r}>"


class DKIM:
    """The message's DKIM signatures, checked by the server: ``.valid_from_sender`` (a valid
    signature by the From address's domain) and ``.domains`` (the ``d=`` of every valid
    signature). Only signatures covering the whole body (no ``l=``) count."""

    def __init__(self, valid_from_sender: bool, domains: list[str]) -> None:
        self.valid_from_sender = valid_from_sender
        self.domains = domains

    def __repr__(self) -> str:
        return f"<anvil.email.Message.DKIM valid_from_sender={self.valid_from_sender} domains={self.domains!r}>"


class Addressees:
    """Who the headers say it is from and to: ``.from_address`` (an :class:`Address`, or
    None), ``.to_addresses`` and ``.cc_addresses`` (lists of :class:`Address`)."""

    def __init__(self, from_address: Address | None, to_addresses: list[Address], cc_addresses: list[Address]) -> None:
        self.from_address = from_address
        self.to_addresses = to_addresses
        self.cc_addresses = cc_addresses

    def __repr__(self) -> str:
        return f"<anvil.email.Message.Addressees from={self.from_address!r} to={self.to_addresses!r}>"


class Message:
    """An email received by the app, as ``@email.handle_message`` hands it to the handler.

    * ``envelope`` (:class:`Envelope`), ``addressees`` (:class:`Addressees`), ``dkim`` (:class:`DKIM`)
    * ``headers``: every header, in order, as ``(name, value)`` pairs (values decoded; the
      first MAX_HEADERS of a message that has more)
    * ``subject``, ``text``, ``html``: str, or None if the message has none (the first
      text/plain and text/html body parts)
    * ``attachments``: a list of Media (named, with their content type); a forwarded message is one
    * ``inline_attachments``: ``{content_id: Media}`` (the parts the html names as ``cid:...``)

    There is no ``message_id`` attribute (as in Anvil): ``msg.get_header("Message-ID")``.
    """

    def __init__(
        self,
        envelope: Envelope,
        dkim: DKIM,
        addressees: Addressees,
        headers: list[tuple[str, str]],
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        attachments: list[Media] | None = None,
        inline_attachments: dict[str, Media] | None = None,
    ) -> None:
        self.envelope = envelope
        self.dkim = dkim
        self.addressees = addressees
        self.headers = headers
        self.subject = subject
        self.text = text
        self.html = html
        self.attachments = attachments if attachments is not None else []
        self.inline_attachments = inline_attachments if inline_attachments is not None else {}

    def get_header(self, header_name: str, default: Any = None) -> Any:
        """The first value of the header ``header_name`` (any case), else ``default``."""
        wanted = str(header_name).lower()
        return next((value for name, value in self.headers if name.lower() == wanted), default)

    def list_header(self, header_name: str) -> list[str]:
        """Every value of the header ``header_name`` (any case), in order."""
        wanted = str(header_name).lower()
        return [value for name, value in self.headers if name.lower() == wanted]

    def reply(self, **kw: Any) -> None:
        """Answer this message with :func:`email.send`, taking the same keywords.

        By default it goes to the ``Reply-To`` header, else the From address, else the
        envelope sender; from the address the message came to (``envelope.recipient``);
        with the same subject, as Anvil keeps it (pass ``subject=`` for another); threaded:
        ``In-Reply-To`` is the message's ``Message-ID``, ``References`` its References
        plus that id. Returns None, as in Anvil.
        """
        if kw.get("to") is None:
            kw["to"] = self._reply_to()
        if "subject" not in kw:  # a stranger's subject may be longer than send() takes: cut
            kw["subject"] = (self.subject or "")[: mail_compose.MAX_HEADER_CHARS]
        message_id = str(self.get_header("Message-ID") or "").strip()
        if message_id and len(message_id) <= _MAX_THREAD_ID_CHARS:  # a longer one is no id: not threaded
            kw.setdefault("in_reply_to", message_id)
            references = str(self.get_header("References", "") or "").split()
            kw.setdefault("references", _thread(references, message_id))
        if kw.get("from_address") is None and self.envelope.recipient:
            sender = _reply_sender(self.envelope.recipient)
            if sender is not None:
                kw["from_address"] = sender
        mail_compose.send(**kw)

    def _reply_to(self) -> str:
        """Where a reply goes: the Reply-To header, else the From address, else the envelope
        sender; the first of them that holds addresses ``send`` can write (a stranger's
        header may not), else SendFailure naming the first one given."""
        from_address = self.addressees.from_address
        candidates = [
            str(value).strip()
            for value in (
                self.get_header("Reply-To"),
                from_address.raw_value if from_address is not None and from_address.address else None,
                self.envelope.from_address,
            )
            if value and str(value).strip()
        ]
        if not candidates:
            raise SendFailure("Cannot reply to a message with no Reply-To header, From address or envelope sender")
        for candidate in candidates:
            try:
                if mail_compose.parse_addresses(candidate, "to"):
                    return candidate
            except SendFailure:
                continue
        raise SendFailure(f"Cannot reply: Invalid email address: {candidates[0][:200]}")

    def _sender_domain(self) -> str:
        """The From address's domain, else the envelope sender's (what DKIM is checked for)."""
        for address in (
            self.addressees.from_address.address if self.addressees.from_address else "",
            self.envelope.from_address,
        ):
            if "@" in address:
                return address.rsplit("@", 1)[1]
        return "the sender"

    def __repr__(self) -> str:
        sender = self.addressees.from_address.raw_value if self.addressees.from_address else None
        return f"<anvil.email.Message from={sender!r} subject={self.subject!r} attachments={len(self.attachments)}>"


def _reply_sender(recipient: str) -> str | None:
    """The address a reply is sent from: the one the message came to, else (a local part
    ``send`` cannot write, such as ``app+jörg``) without its ``+tag``, else None (the default sender)."""
    local, _, domain = recipient.rpartition("@")
    for candidate in (recipient, f"{local.partition('+')[0]}@{domain}"):
        try:
            mail_compose.parse_mailbox(candidate)
        except SendFailure:
            continue
        return candidate
    return None


def _thread(references: list[str], message_id: str) -> str:
    """A reply's References: the message's own, then its Message-ID; a long thread keeps its
    first id and as many of the latest as ``send`` takes (RFC 5322 3.6.4 allows trimming)."""
    ids = [*references, message_id]
    kept = [message_id]
    room = mail_compose.MAX_HEADER_CHARS - len(message_id) - len(ids[0]) - 1
    for reference in reversed(ids[1:-1]):
        if len(reference) + 1 > room:
            break
        kept.insert(0, reference)
        room -= len(reference) + 1
    if len(ids) > 1 and len(ids[0]) + len(message_id) + 1 <= mail_compose.MAX_HEADER_CHARS:
        kept.insert(0, ids[0])
    return " ".join(kept)


# Anvil nests them: ``anvil.email.Message.Envelope`` and so on
Message.Envelope = Envelope  # type: ignore[attr-defined]
Message.DKIM = DKIM  # type: ignore[attr-defined]
Message.Addressees = Addressees  # type: ignore[attr-defined]

for _cls, _name in (
    (Address, "anvil.email.Address"),
    (Envelope, "anvil.email.Message.Envelope"),
    (DKIM, "anvil.email.Message.DKIM"),
    (Addressees, "anvil.email.Message.Addressees"),
    (Message, "anvil.email.Message"),
):
    wire.register_portable_class(_cls, _name)


# -- from the host's InboundMail -------------------------------------------------------------------
def from_inbound(inbound: Any) -> Message:
    """The Message of the host's ``InboundMail`` dict; never raises, whatever it holds."""
    data: dict[str, Any] = inbound if isinstance(inbound, dict) else {}
    envelope_data = _dict(data.get("envelope"))
    dkim_data = _dict(data.get("dkim"))
    raw = data.get("raw")
    try:
        raw_bytes = raw.get_bytes() if isinstance(raw, Media) else b""
    except Exception:  # noqa: BLE001 - a Media we cannot read is an empty message
        raw_bytes = b""
    domains = dkim_data.get("domains")
    envelope = Envelope(_text_of(envelope_data.get("from_address")), _text_of(envelope_data.get("recipient")))
    dkim = DKIM(
        dkim_data.get("valid_from_sender") is True,
        [d for d in domains if isinstance(d, str)] if isinstance(domains, list) else [],
    )
    return parse(raw_bytes, envelope, dkim)


def parse(raw: bytes, envelope: Envelope, dkim: DKIM) -> Message:
    """The Message of ``raw`` (RFC 5322 bytes), received with this envelope and DKIM result."""
    parsed: StdMessage = EmailMessage(policy=_PARSE_POLICY)  # what cannot be parsed is an empty message
    # parts nested thousands deep (RecursionError), or millions of them: the headers at least
    too_many_parts = raw.count(b"\n--") > MAX_BOUNDARY_LINES
    for headers_only in (True,) if too_many_parts else (False, True):
        try:
            parsed = BytesParser(policy=_PARSE_POLICY).parsebytes(raw, headersonly=headers_only)
            break
        except Exception:  # noqa: BLE001, S112 - next, the headers alone
            continue
    headers = _headers(parsed)
    addresses = {kind: _addresses(parsed, kind) for kind in ("from", "to", "cc")}
    message = Message(
        envelope,
        dkim,
        Addressees(next(iter(addresses["from"]), None), addresses["to"], addresses["cc"]),
        headers,
        subject=next((value for name, value in headers if name.lower() == "subject"), None),
    )
    _read_parts(parsed, message)
    return message


def _headers(parsed: StdMessage) -> list[tuple[str, str]]:
    out = []
    try:
        items = list(itertools.islice(parsed.raw_items(), MAX_HEADERS))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - no headers to read
        items = []
    for name, value in items:
        out.append((_unescaped(str(name)), _header_text(str(name), _unescaped(value))))
    return out


def _unescaped(value: Any) -> Any:
    """A raw header value as text: the parser keeps 8-bit bytes (UTF-8 headers, RFC 6532, which
    mail clients send) as surrogate escapes; read them as UTF-8."""
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        return value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:  # already text (not escapes): as it is
        return value


def _header_text(name: str, value: Any) -> str:
    """A header's value decoded (RFC 2047) and unfolded; the raw text if decoding fails."""
    value = _cut(value)
    try:
        return str(_PARSE_POLICY.header_fetch_parse(name, value))
    except Exception:  # noqa: BLE001 - a malformed header stays as it came
        return " ".join(str(value).split())


def _unfolded(value: str) -> str:
    """A raw header value on one line, as the header factory takes it: a folded To or Cc
    (mail clients fold a long one at 78 characters) gives it no addresses at all."""
    return _LINE_ENDS.sub(" ", _FOLD.sub("", value))  # RFC 5322 2.2.3: a fold's line end goes, its space stays


def _cut(value: Any) -> Any:
    """A raw header value cut to MAX_VALUE_CHARS: decoding an address list takes time
    growing faster than its length (a To of a million addresses, minutes)."""
    return value[:MAX_VALUE_CHARS] if isinstance(value, str) else value


def _addresses(parsed: StdMessage, kind: str) -> list[Address]:
    out: list[Address] = []
    try:
        values = [_unescaped(value) for name, value in parsed.raw_items() if name.lower() == kind]  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return out
    for value in values:
        try:
            header = _PARSE_POLICY.header_factory(kind, _unfolded(_cut(value)))
            found = list(header.addresses)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001, S112 - an unparsable address header gives no addresses
            continue
        for address in found:
            try:
                spec, name, raw_value = address.addr_spec, address.display_name or None, str(address)
            except Exception:  # noqa: BLE001, S112 - nor does an address the parser half-made
                continue
            out.append(Address(spec, name, raw_value))
    return out


def _read_parts(parsed: StdMessage, message: Message) -> None:
    """Fill text, html, attachments and inline_attachments from the message's leaf parts."""
    for part in _leaves(parsed, 0):
        try:
            if "Content-Type" not in part and not _part_bytes(part).strip():
                continue  # no body at all (nor a part saying it is one): text stays None
            content_type = part.get_content_type()
            disposition = part.get_content_disposition()
            filename = _filename(part)
            is_body = disposition != "attachment" and filename is None
            if is_body and content_type == "text/plain" and message.text is None:
                message.text = _decoded_text(part)
                continue
            if is_body and content_type == "text/html" and message.html is None:
                message.html = _decoded_text(part)
                continue
            media = BlobMedia(content_type, _part_bytes(part), name=filename)
            content_id = _content_id(part)
            if content_id and disposition != "attachment":
                message.inline_attachments[content_id] = media
            else:
                message.attachments.append(media)
        except Exception:  # noqa: BLE001, S112 - one broken part does not lose the others
            continue


def _leaves(part: StdMessage, depth: int) -> Iterator[StdMessage]:
    """The non-multipart parts, in order; a message/rfc822 part is one leaf (an attachment)."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        if depth >= MAX_DEPTH:
            return
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else []:
            if isinstance(sub, StdMessage):
                yield from _leaves(sub, depth + 1)
    else:
        yield part


def _part_bytes(part: StdMessage) -> bytes:
    if part.is_multipart():  # message/rfc822: the inner message, as it came
        payload = part.get_payload()
        return b"".join(sub.as_bytes() for sub in payload if isinstance(sub, StdMessage))
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _decoded_text(part: StdMessage) -> str:
    """A text part as str, decoded with its charset, with ``\\n`` line ends (mail's text is
    CRLF on the wire); a bad or unknown charset never raises: undecodable bytes become U+FFFD."""
    data = _part_bytes(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):  # unknown, or not a name at all (a NUL in it)
        charset = "utf-8"
    if charset.lower() in ("us-ascii", "ascii"):
        charset = "utf-8"  # mail marked ASCII that is not: read as UTF-8 rather than lose it
    try:
        text = data.decode(charset, errors="replace")
    except Exception:  # noqa: BLE001 - a codec that fails even with errors="replace"
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _filename(part: StdMessage) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        return None
    return str(name) if name else None


def _content_id(part: StdMessage) -> str | None:
    value = part.get("Content-ID")
    if value is None:
        return None
    content_id = str(value).strip().strip("<>").strip()
    return content_id or None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


# -- the handler's wrapper -----------------------------------------------------------------------------
def handler_for(function: Callable[[Message], Any], require_dkim: bool) -> Callable[..., None]:
    """What is registered for ``@email.handle_message``: called by the host with the
    ``InboundMail``, it builds the Message, refuses unsigned mail if ``require_dkim``, and
    calls the author's function (whose return value is ignored)."""

    @functools.wraps(function)
    def handle(inbound: Any = None, *args: Any, **kwargs: Any) -> None:
        message = from_inbound(inbound)
        if require_dkim and not message.dkim.valid_from_sender:
            raise DeliveryFailure(f"No valid DKIM signature for {message._sender_domain()}")
        function(message)

    return handle
