"""Reading a stored message for people (the admin API): its headers, bodies and parts.

Lenient on purpose: what is stored may be anything a sender's server sent (mail that is
barely mail included), and reading it must never fail, only come out emptier.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser

#: a header value shown is cut at this many characters (a hostile one may be megabytes)
MAX_HEADER_CHARS = 4000
#: the parts listed at most (a hostile message may have thousands)
MAX_PARTS = 500
#: a message with more lines that could start a part is not split into parts (25 MB of
#: empty parts is three million of them: minutes and gigabytes to parse); its body is left unread
MAX_BOUNDARY_LINES = 10_000


@dataclass
class Part:
    """One attachment or inline part of a message, numbered in walk order."""

    index: int
    name: str | None
    content_type: str
    size: int
    content_id: str | None  # without <>; set for an inline part
    inline: bool


@dataclass
class ReadMessage:
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    parts: list[Part] = field(default_factory=list)


def parse(raw: bytes, headers_only: bool = False) -> EmailMessage:
    """The message parsed; with ``headers_only`` its body is left unread, one payload."""
    message = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=headers_only)
    assert isinstance(message, EmailMessage)  # policy.default makes EmailMessage
    return message


def _parse_split(raw: bytes) -> tuple[EmailMessage, str | None, str | None, list[tuple[Part, Message]]]:
    """The message and its bodies and parts; parts nested thousands deep (which the
    stdlib parses and walks recursively), or too many of them, leave the body unread
    rather than fail or take minutes."""
    if raw.count(b"\n--") > MAX_BOUNDARY_LINES:
        message = parse(raw, headers_only=True)
        return (message, *_split(message))
    try:
        message = parse(raw)
        return (message, *_split(message))
    except RecursionError:
        message = parse(raw, headers_only=True)
        return (message, *_split(message))


def header_text(message: Message, name: str) -> str:
    """A header's decoded value ("" when absent or unreadable), cut to a readable length."""
    try:
        wanted = name.lower()
        value = next((v for k, v in message.raw_items() if k.lower() == wanted), None)
        return "" if value is None else _field_text(name, value)
    except Exception:  # noqa: BLE001 - a header the parser cannot decode: shown as nothing, not an error
        return ""


def _content(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _text(part: Message) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return _content(part).decode(charset, errors="replace")
    except (LookupError, ValueError):  # a charset Python does not know, or not a name at all (a NUL in it)
        return _content(part).decode("utf-8", errors="replace")


def _walk(message: Message) -> list[Message]:
    parts: list[Message] = []
    for part in message.walk():
        if len(parts) >= MAX_PARTS:
            break
        parts.append(part)
    return parts


def _split(message: Message) -> tuple[str | None, str | None, list[tuple[Part, Message]]]:
    """The first text/plain and text/html bodies, and every other leaf part, numbered."""
    text: str | None = None
    html: str | None = None
    parts: list[tuple[Part, Message]] = []
    for part in _walk(message):
        if part.is_multipart():
            continue
        disposition = (part.get_content_disposition() or "").lower()
        content_type = part.get_content_type()
        is_body = disposition != "attachment" and part.get_filename() is None
        if is_body and content_type == "text/plain" and text is None:
            text = _text(part)
        elif is_body and content_type == "text/html" and html is None:
            html = _text(part)
        elif not (part is message and is_body):  # a single-part body neither text nor html: no part
            content_id = header_text(part, "Content-ID").strip().strip("<>") or None
            inline = disposition == "inline" or (content_id is not None and disposition != "attachment")
            size = len(_content(part))
            parts.append((Part(len(parts), part.get_filename(), content_type, size, content_id, inline), part))
    return text, html, parts


def read(raw: bytes) -> ReadMessage:
    """Headers, the first text/plain and text/html bodies, and every other leaf part."""
    message, text, html, parts = _parse_split(raw)
    headers = [(name, _field_text(name, value)) for name, value in list(message.raw_items())[:MAX_PARTS]]
    return ReadMessage(headers, text, html, [part for part, _ in parts])


def _field_text(name: str, value: str) -> str:
    """One header field's decoded value (each of several fields of one name its own),
    cut to a readable length; its raw text, unfolded, if it cannot be decoded."""
    value = value[: MAX_HEADER_CHARS * 4]  # decoding an address list takes time growing faster than its length
    try:
        return str(email.policy.default.header_fetch_parse(name, value))[:MAX_HEADER_CHARS]
    except Exception:  # noqa: BLE001 - a malformed field is shown as it came
        return " ".join(str(value).split())[:MAX_HEADER_CHARS]


def part_bytes(raw: bytes, index: int) -> tuple[Part, bytes] | None:
    """The ``index``-th part :func:`read` lists, with its decoded bytes; None if there is none."""
    _, _, _, parts = _parse_split(raw)
    if not 0 <= index < len(parts):
        return None
    part, message = parts[index]
    return part, _content(message)


@dataclass
class Headline:
    """What a mail record lists of its message (records.MailSummary's header fields)."""

    message_id: str | None
    from_header: str
    to_header: str
    subject: str


def headline(raw: bytes) -> Headline:
    """The Message-ID, From, To and Subject of ``raw``, decoded ("" when absent)."""
    message = parse(raw, headers_only=True)  # the header is all it reads
    message_id = header_text(message, "Message-ID").strip() or None
    return Headline(
        message_id, header_text(message, "From"), header_text(message, "To"), header_text(message, "Subject")
    )
