"""Building an outgoing message from ``email.send``'s keywords, and handing it to the host.

The kernel builds the whole RFC 5322 message (the stdlib ``email`` package, CRLF lines,
7-bit clean: non-ASCII text is base64 or quoted-printable, names and subjects RFC 2047
encoded, domains IDNA); the host only relays it, so SMTP credentials never reach a kernel.
The layout is Anvil's::

    multipart/mixed
      multipart/related            (only with inline_attachments)
        multipart/alternative
          text/plain               (text; an empty one when there is neither text nor html)
          text/html                (html)
        inline parts               (Content-ID <id>, disposition inline)
      attachments                  (disposition attachment, named after the Media or "Attachment N")

``Bcc`` is never a header: its addresses are only envelope recipients.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address as HeaderAddress
from email.message import MIMEPart
from email.utils import format_datetime
from typing import Any

from ..errors import SendFailure
from ..media import BlobMedia, Media
from ..protocol import EMAIL_SEND, MAX_MESSAGE_BYTES, MailToSend
from . import runtime

#: CRLF line ends, and nothing 8-bit on the wire: any relay takes it, no SMTPUTF8/8BITMIME needed
POLICY = email_policy.SMTP.clone(cte_type="7bit")
#: the keywords ``email.send`` takes: Anvil's, and ``reply_to`` (which Anvil ignores)
KEYWORDS = (
    "to",
    "cc",
    "bcc",
    "from_address",
    "from_name",
    "subject",
    "text",
    "html",
    "attachments",
    "inline_attachments",
    "in_reply_to",
    "references",
    "reply_to",
)
#: the most envelope recipients (to, cc and bcc together) one message may have: every relay
#: must take 100 (RFC 5321 4.5.3.1.8); send to more in several messages
MAX_RECIPIENTS = 100
#: the longest subject, name or threading header, in characters (folding a longer one is slow,
#: and no mail reader shows it)
MAX_HEADER_CHARS = 10_000
#: the longest one address, name included, in characters (an address alone is at most 254)
MAX_ADDRESS_CHARS = 1_000
#: the domain of the default sender when the host's settings name none
FALLBACK_DOMAIN = "localhost"
DEFAULT_LOCAL_PART = "no-reply"

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
#: control characters, and what str.splitlines() breaks at (the stdlib refuses these in a header)
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = re.compile("\\s*[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+\\s*")


@dataclass(frozen=True)
class Mailbox:
    """One parsed address: the display name ("" if none) and the address itself, its domain
    in ASCII (IDNA)."""

    name: str
    username: str
    domain: str

    @property
    def address(self) -> str:
        return HeaderAddress(username=self.username, domain=self.domain).addr_spec

    def header(self) -> HeaderAddress:
        return HeaderAddress(display_name=self.name, username=self.username, domain=self.domain)


@dataclass(frozen=True)
class Outgoing:
    """A built message, as the host is handed it."""

    raw: bytes
    envelope_from: str
    recipients: list[str]
    message_id: str


# -- addresses ---------------------------------------------------------------------------------
def split_addresses(text: str) -> list[str]:
    """The pieces of a comma-separated address list, each as written (commas inside quotes,
    ``<...>`` or comments do not split). Empty pieces are left out."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = comment = 0
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or comment):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"' and not comment:
            quoted = True
        elif char == "(":
            comment += 1
        elif char == ")" and comment:
            comment -= 1
        elif char == "<" and not comment:
            angle += 1
        elif char == ">" and angle and not comment:
            angle -= 1
        elif char == "," and not (angle or comment):
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [piece.strip() for piece in pieces if piece.strip()]


def parse_mailbox(piece: str) -> Mailbox:
    """One address (``a@b.c``, ``Name <a@b.c>``, ``"Doe, J." <a@b.c>``, a Unicode name or
    domain), or ``SendFailure("Invalid email address: <piece>")``."""
    invalid = SendFailure(f"Invalid email address: {_shown(piece)}")
    if not piece or len(piece) > MAX_ADDRESS_CHARS or _CONTROL.search(piece):
        raise invalid  # a line break would start a header of the sender's choosing
    try:
        header = POLICY.header_factory("To", piece)
        addresses = header.addresses  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the stdlib parser raises on some malformed input
        raise invalid from None
    if len(addresses) != 1 or header.defects:
        raise invalid
    found = addresses[0]
    username, domain = found.username, _ascii_domain(found.domain)
    if not username or not username.isascii() or len(username) > 64 or domain is None:
        raise invalid
    return Mailbox(_one_line(found.display_name or ""), username, domain)


def _ascii_domain(domain: str) -> str | None:
    """The domain as it goes on the wire (IDNA for a Unicode one), or None if it is not one."""
    if domain.startswith("[") and domain.endswith("]"):  # an address literal: [192.0.2.1], [IPv6:...]
        literal = domain[1:-1]
        try:
            ipaddress.ip_address(literal[5:] if literal[:5].lower() == "ipv6:" else literal)
        except ValueError:
            return None
        return domain
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = domain.rstrip(".").split(".") if len(domain) <= 253 else []
    return domain.rstrip(".").lower() if labels and all(_LABEL.match(label) for label in labels) else None


def parse_addresses(value: Any, keyword: str) -> list[Mailbox]:
    """The addresses of ``to``, ``cc``, ``bcc`` or ``reply_to``: a str (comma-separated) or a
    list of str (each may be comma-separated too); None: none."""
    if value is None:
        return []
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        texts = list(value)
    else:
        raise SendFailure(f"Keyword argument '{keyword}' must be a string, or list of strings, not {_kind(value)}")
    if sum(len(text) for text in texts) > MAX_ADDRESS_CHARS * MAX_RECIPIENTS:
        raise SendFailure(f"Too many recipients in '{keyword}': at most {MAX_RECIPIENTS} addresses")
    pieces = [piece for text in texts for piece in split_addresses(text)]
    if len(pieces) > MAX_RECIPIENTS:
        raise SendFailure(f"Too many recipients in '{keyword}': {len(pieces)}, at most {MAX_RECIPIENTS} addresses")
    return [parse_mailbox(piece) for piece in pieces]


def sender(from_address: Any, from_name: Any, domain: str) -> Mailbox:
    """The From mailbox: ``no-reply@<domain>`` by default; a bare local part (``"support"``,
    ``"Support <support>"``) gets ``@<domain>``; ``from_name`` (else the address's own name)."""
    text = _optional_str(from_address, "from_address")
    name = _optional_str(from_name, "from_name")
    if not text or not text.strip():
        text = f"{DEFAULT_LOCAL_PART}@{domain}"
    elif "@" not in text:
        text = re.sub(r">\s*$", f"@{domain}>", text) if text.rstrip().endswith(">") else f"{text.strip()}@{domain}"
    pieces = split_addresses(text)
    if len(pieces) != 1:
        raise SendFailure(f"Invalid email address: {_shown(text)}")
    mailbox = parse_mailbox(pieces[0])
    if name is not None:
        mailbox = Mailbox(_one_line(name), mailbox.username, mailbox.domain)
    return mailbox


# -- the message ---------------------------------------------------------------------------------
def compose(kwargs: Mapping[str, Any], *, domain: str, app: str, max_bytes: int = MAX_MESSAGE_BYTES) -> Outgoing:
    """Build the message ``email.send(**kwargs)`` sends, sent from ``domain`` by ``app``, of at
    most ``max_bytes`` once encoded.

    Raises TypeError for an unknown keyword (as a Python function would) and SendFailure
    for a value that cannot be sent (a malformed address, a wrong type, no recipient, too big).
    """
    unknown = [key for key in kwargs if key not in KEYWORDS]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(f"send() got {'an ' if not plural else ''}unexpected keyword argument{plural} {names}")
    kw = {key: value for key, value in kwargs.items() if value is not None}
    to, cc, bcc = (parse_addresses(kw.get(key), key) for key in ("to", "cc", "bcc"))
    reply_to = parse_addresses(kw.get("reply_to"), "reply_to")
    from_mailbox = sender(kw.get("from_address"), kw.get("from_name"), domain)
    recipients = _unique([mailbox.address for mailbox in (*to, *cc, *bcc)])
    if not recipients:
        raise SendFailure("No recipients: give at least one address in to, cc or bcc")
    if len(recipients) > MAX_RECIPIENTS:
        raise SendFailure(
            f"Too many recipients: {len(recipients)} (to, cc and bcc together); one message may have "
            f"at most {MAX_RECIPIENTS}: send several messages"
        )
    subject = _optional_str(kw.get("subject"), "subject") or ""
    text = _optional_str(kw.get("text"), "text")
    html = _optional_str(kw.get("html"), "html")
    attachments = _attachments(kw.get("attachments"))
    inline = _inline_attachments(kw.get("inline_attachments"))
    in_reply_to = _optional_str(kw.get("in_reply_to"), "in_reply_to")
    references = _references(kw.get("references"))
    _check_size(subject, text, html, attachments, inline.values(), max_bytes)

    message = MIMEPart(policy=POLICY)  # the type of its parts (attach wants its own type)
    message["From"] = from_mailbox.header()
    if to:
        message["To"] = tuple(mailbox.header() for mailbox in to)
    if cc:
        message["Cc"] = tuple(mailbox.header() for mailbox in cc)
    if reply_to:
        message["Reply-To"] = tuple(mailbox.header() for mailbox in reply_to)
    message["Subject"] = _one_line(subject)
    message["Date"] = format_datetime(dt.datetime.now(dt.timezone.utc))
    message_id = new_message_id(app, domain)
    message["Message-ID"] = message_id
    if in_reply_to and in_reply_to.strip():
        message["In-Reply-To"] = _one_line(in_reply_to)
    if references:
        message["References"] = references
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = "multipart/mixed"
    message.attach(_body(text, html, inline))
    for index, media in attachments:
        message.attach(_media_part(media, f"Attachment {index}", "attachment"))
    raw = message.as_bytes(policy=POLICY)
    if len(raw) > max_bytes:
        raise _too_big(len(raw), max_bytes)
    return Outgoing(raw, from_mailbox.address, recipients, message_id)


def new_message_id(app: str, domain: str) -> str:
    """``<{millis:x}-{random hex}-{app}@{domain}>`` (Anvil's is ``<millis-hex-appid@anvil>``)."""
    app_part = re.sub(r"[^A-Za-z0-9-]+", "-", app).strip("-") or "app"
    return f"<{int(time.time() * 1000):x}-{secrets.token_hex(6)}-{app_part}@{domain}>"


def _body(text: str | None, html: str | None, inline: Mapping[str, Media]) -> MIMEPart:
    alternative = _multipart("alternative")
    if text is not None or html is None:
        alternative.attach(_text_part(text or "", "plain"))
    if html is not None:
        alternative.attach(_text_part(html, "html"))
    if not inline:
        return alternative
    related = _multipart("related")
    related.attach(alternative)
    for index, (content_id, media) in enumerate(inline.items(), start=1):
        part = _media_part(media, f"Attachment {index}", "inline")
        part["Content-ID"] = f"<{content_id}>"
        related.attach(part)
    return related


def _multipart(subtype: str) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    part["Content-Type"] = f"multipart/{subtype}"
    return part


def _text_part(content: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    part.set_content(content, subtype=subtype, charset="utf-8")
    return part


def _media_part(media: Media, default_name: str, disposition: str) -> MIMEPart:
    maintype, subtype = _content_type(media.content_type)
    part = MIMEPart(policy=POLICY)
    name = _one_line(media.name) if isinstance(media.name, str) and media.name.strip() else default_name
    name = _SURROGATE.sub("\ufffd", name)  # a name that cannot be encoded is shown with a replacement
    part.set_content(media.get_bytes(), maintype, subtype, disposition=disposition, filename=name)
    return part


def _content_type(content_type: str | None) -> tuple[str, str]:
    """The Media's type as ``(maintype, subtype)``; application/octet-stream when it has none,
    it is malformed, or it is a multipart or message type (their bodies cannot be base64)."""
    maintype, _, subtype = (content_type or "").split(";")[0].strip().lower().partition("/")
    token = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
    if not (token.match(maintype) and token.match(subtype)) or maintype in ("multipart", "message"):
        return "application", "octet-stream"
    return maintype, subtype


# -- checking the keywords -------------------------------------------------------------------------
def _optional_str(value: Any, keyword: str) -> str | None:
    if isinstance(value, str) and _SURROGATE.search(value):
        # a lone surrogate (from bytes decoded with surrogateescape) cannot be encoded at all
        raise SendFailure(f"Keyword argument '{keyword}' is not valid Unicode: it holds a lone surrogate")
    if value is None or isinstance(value, str):
        if value is not None and keyword not in ("text", "html") and len(value) > MAX_HEADER_CHARS:
            raise SendFailure(
                f"Keyword argument '{keyword}' is too long: {len(value)} characters, at most {MAX_HEADER_CHARS}"
            )
        return value
    raise SendFailure(f"Keyword argument '{keyword}' must be a string, not {_kind(value)}")


def _attachments(value: Any) -> list[tuple[int, Media]]:
    """``attachments``: a Media or a list of Media (None items are skipped, as in Anvil),
    each with its 1-based position (``Attachment N`` names an unnamed one)."""
    if value is None:
        return []
    items = [value] if isinstance(value, Media) else value
    if not isinstance(items, (list, tuple)):
        items = [items]
    bad = [item for item in items if item is not None and not isinstance(item, Media)]
    if bad:
        raise SendFailure(
            f"Keyword argument 'attachments' must be a Media object or a list of Media objects, not {_kind(bad[0])}"
        )
    return [(index, item) for index, item in enumerate(items, start=1) if item is not None]


def _inline_attachments(value: Any) -> dict[str, Media]:
    """``inline_attachments``: ``{content_id: Media}``; the id is what ``cid:`` names in the html."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SendFailure(
            f"Keyword argument 'inline_attachments' must be a dict of {{content_id: Media}}, not {_kind(value)}"
        )
    out: dict[str, Media] = {}
    for key, media in value.items():
        if not isinstance(key, str) or not isinstance(media, Media):
            raise SendFailure(
                "Keyword argument 'inline_attachments' must be a dict of {content_id: Media}: "
                f"found {_kind(key)} -> {_kind(media)}"
            )
        content_id = key.strip().strip("<>").strip()
        if not content_id or _CONTROL.search(content_id) or re.search(r"[\s<>]", content_id):
            raise SendFailure(f"Invalid inline attachment id: {key!r} (no spaces or <>, e.g. 'logo')")
        out[content_id] = media
    return out


def _references(value: Any) -> str | None:
    """``references``: a str of message ids, or a list of them."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        value = " ".join(item.strip() for item in value)
    if not isinstance(value, str):
        raise SendFailure(f"Keyword argument 'references' must be a string, or list of strings, not {_kind(value)}")
    if _SURROGATE.search(value):
        raise SendFailure("Keyword argument 'references' is not valid Unicode: it holds a lone surrogate")
    if len(value) > MAX_HEADER_CHARS:
        raise SendFailure(
            f"Keyword argument 'references' is too long: {len(value)} characters, at most {MAX_HEADER_CHARS}"
        )
    return _one_line(value).strip() or None


def _check_size(
    subject: str, text: str | None, html: str | None, attachments: Any, inline: Any, max_bytes: int
) -> None:
    """Refuse before building what would be too big once built (base64 grows it by a third)."""
    media_bytes = sum(media.length for _, media in attachments) + sum(media.length for media in inline)
    estimate = len(subject) + len(text or "") + len(html or "") + media_bytes * 4 // 3
    if estimate > max_bytes:
        raise _too_big(estimate, max_bytes)


def _too_big(size: int, max_bytes: int) -> SendFailure:
    return SendFailure(
        f"Message too big: {size} bytes encoded, the limit is {max_bytes} bytes "
        "(attachments grow by a third once encoded)"
    )


def _one_line(value: str) -> str:
    """A header value on one line: a line break in it would end the header."""
    return _CONTROL.sub(" ", _LINE_BREAKS.sub(" ", value))


def _unique(addresses: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            out.append(address)
    return out


def _shown(text: str) -> str:
    """An address as an error shows it: cut to 200 characters."""
    return text if len(text) <= 200 else text[:200] + "..."


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


# -- handing it to the host ------------------------------------------------------------------------
def mail_from_domain() -> str:
    """The domain of the default sender: the host's setting, else ``localhost``."""
    active = runtime.active()
    configured = active.settings.get("mail_from_domain") if active is not None else None
    domain = _ascii_domain(configured) if isinstance(configured, str) and configured else None
    return domain or FALLBACK_DOMAIN


def max_message_bytes() -> int:
    """The largest message the host takes: its setting, else MAX_MESSAGE_BYTES (25 MB)."""
    active = runtime.active()
    configured = active.settings.get("mail_max_bytes") if active is not None else None
    valid = isinstance(configured, int) and not isinstance(configured, bool) and configured > 0
    return configured if valid and isinstance(configured, int) else MAX_MESSAGE_BYTES


def hand_to_host(mail: MailToSend) -> Any:
    """Hand a built message to the host's send service; its answer is ``{"message_id": ...}``.
    The one place a kernel sends mail: tests replace it."""
    active = runtime.active()
    if active is None:
        raise SendFailure(
            "email.send works in the app's server code (a server function, a background task or an email "
            "handler): the notebook you are editing cannot send mail"
        )
    return active.call(EMAIL_SEND, (), dict(mail))


def send(**kwargs: Any) -> str:
    """Build the message and have the host send it; the Message-ID it was sent with."""
    active = runtime.active()
    app = active.app if active is not None else "notebook"
    outgoing = compose(kwargs, domain=mail_from_domain(), app=app, max_bytes=max_message_bytes())
    answer = hand_to_host(
        {
            "raw": BlobMedia("message/rfc822", outgoing.raw, name="message.eml"),
            "envelope_from": outgoing.envelope_from,
            "recipients": outgoing.recipients,
        }
    )
    message_id = answer.get("message_id") if isinstance(answer, dict) else None
    return message_id if isinstance(message_id, str) and message_id else outgoing.message_id
