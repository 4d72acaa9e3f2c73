"""Anvil's value encoding, shared by every surface (browser, HTTP, kernel comm).

A message is a JSON object plus ``objects``: descriptors of the values JSON cannot carry,
each with a ``path`` from the top of the message and a ``null`` placeholder at that path
(reference: anvil-uplink-protocol.md §11). Media bytes never sit in the JSON: ``encode``
returns them beside the message, keyed by the descriptor's ``id``, and each transport
carries them its own way (comm buffers, WebSocket chunks, base64 over plain HTTP).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import SerializationError
from .media import BlobMedia, Media

JSON = Any
Path = list[str | int]

INT_LIMIT = 2147483647
#: after the year, which strftime leaves unpadded before 1000 (``999-01-01``)
_DATETIME_FORMAT = "-%m-%d %H:%M:%S.%f%z"

_portable_classes: dict[str, type] = {}


@dataclass
class Encoded:
    """An encoded message: JSON-safe ``message`` with its ``objects`` and Media bytes."""

    message: dict[str, JSON]
    objects: list[dict[str, JSON]] = field(default_factory=list)
    media: dict[str, bytes] = field(default_factory=dict)


def register_portable_class(cls: type, name: str | None = None) -> type:
    """Make ``cls`` portable under ``name`` (default ``module.Class``)."""
    type_name = name or f"{cls.__module__}.{cls.__name__}"
    cls.SERIALIZATION_INFO = (type_name, cls)  # type: ignore[attr-defined]
    _portable_classes[type_name] = cls
    return cls


def describe_path(path: Path) -> str:
    """``['args', 0]`` → ``msg['args'][0]``, as Anvil names a place in a message."""
    return "msg" + "".join(f"[{p!r}]" for p in path)


def cell_number(index: int) -> int:
    """A notebook cell's number as people count it (the first cell is cell 1), from its index
    among all the notebook's cells: what every message, traceback and panel says."""
    return index + 1


def cell_file(notebook: str, index: int) -> str:
    """The file name the cell at ``index`` runs as, so its traceback frames say where they are."""
    return f"{notebook} cell {cell_number(index)}"


def format_datetime(value: dt.datetime) -> str:
    """Anvil's DateTime string: six fraction digits and an offset, always."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.astimezone()  # a naive value is the sender's local time, as in Anvil
    return f"{value.year:04d}{value.strftime(_DATETIME_FORMAT)}"


# Anvil's DateTime form (``2024-02-28 09:30:00.000000+0000``) and the ISO forms browsers
# send (``T``, ``Z``, any fraction, ``+05:30``). Parsed by hand, not by fromisoformat: on
# Python 3.10 that takes only what isoformat() writes, not Anvil's ``+0000`` or 3 digits.
_DATETIME_TEXT = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?)?"
    r" ?(?:(?P<utc>Z)|(?P<sign>[+-])(?P<off_h>\d{2})(?::?(?P<off_m>\d{2})(?::?(?P<off_s>\d{2}))?)?)?)?",
    re.ASCII | re.IGNORECASE,
)


def parse_datetime(text: str) -> dt.datetime:
    """Parse Anvil's DateTime string (lenient about the fraction, ``T`` and ``Z``).

    Naive without an offset, as fromisoformat; ``ValueError`` for anything else.
    """
    match = _DATETIME_TEXT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{_short(text)} is not a date and time (YYYY-MM-DD HH:MM:SS.ffffff+HHMM)")
    part = match.groupdict()
    tz: dt.tzinfo | None = None
    if part["utc"]:
        tz = dt.timezone.utc
    elif part["sign"]:
        hours, minutes, seconds = (int(part[name] or 0) for name in ("off_h", "off_m", "off_s"))
        offset = dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
        tz = dt.timezone(-offset if part["sign"] == "-" else offset)  # ValueError past 24 hours
    fraction = (part["fraction"] or "")[:6].ljust(6, "0")  # digits past microseconds are dropped, as 3.11 does
    return dt.datetime(
        int(part["year"]), int(part["month"]), int(part["day"]),
        int(part["hour"] or 0), int(part["minute"] or 0), int(part["second"] or 0), int(fraction),
        tzinfo=tz,
    )  # fmt: skip


class _Encoder:
    def __init__(self) -> None:
        self.objects: list[dict[str, JSON]] = []
        self.media: dict[str, bytes] = {}

    def describe(self, kind: str, path: Path, **extra: JSON) -> None:
        self.objects.append({"type": [kind], "path": list(path), **extra})

    def encode(self, value: Any, path: Path) -> JSON:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            if -INT_LIMIT <= value <= INT_LIMIT:
                return value
            self.describe("Long", path, value=str(value))
            return None
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            self.describe("Float", path, value=text)
            return None
        if isinstance(value, (list, tuple)):
            return [self.encode(item, [*path, i]) for i, item in enumerate(value)]
        if isinstance(value, dict):
            encoded: dict[str, JSON] = {}
            for key in sorted(value, key=_sort_key):
                if not isinstance(key, str):
                    raise SerializationError(
                        f"Cannot serialize dictionaries with keys that aren't strings at {describe_path(path)}"
                    )
                encoded[key] = self.encode(value[key], [*path, key])
            return encoded
        if isinstance(value, dt.datetime):
            self.describe("DateTime", path, value=format_datetime(value))
            return None
        if isinstance(value, dt.date):
            self.describe("Date", path, value=value.isoformat())
            return None
        if isinstance(value, Media):
            media_id = str(len(self.media))
            self.media[media_id] = value.get_bytes()
            self.describe("DataMedia", path, id=media_id, **{"mime-type": value.content_type, "name": value.name})
            return None
        if isinstance(value, type) and hasattr(value, "SERIALIZATION_INFO"):
            self.describe("ClassType", path, typeName=value.SERIALIZATION_INFO[0])
            return None
        info = getattr(type(value), "SERIALIZATION_INFO", None)
        if info is not None and info[1] is type(value):
            data = value.__serialize__(None) if hasattr(value, "__serialize__") else dict(vars(value))
            encoded_data = self.encode(data, path)
            # post-order: the descriptors of values inside the object come first
            self.describe("ValueType", path, typeName=info[0])
            return encoded_data
        if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
            return self.encode(value.tolist(), path)
        if isinstance(value, (bytes, bytearray)):
            raise SerializationError(
                f"Cannot serialize binary data (bytes) at {describe_path(path)}: wrap it in a BlobMedia"
            )
        raise SerializationError(f"Cannot serialize {type(value).__name__} object at {describe_path(path)}")


def _sort_key(key: Any) -> tuple[str, str]:
    return (type(key).__name__, str(key))


def encode(message: dict[str, Any]) -> Encoded:
    """Encode a message's values (e.g. ``{"args": [...], "kwargs": {...}}``)."""
    encoder = _Encoder()
    encoded = {key: encoder.encode(value, [key]) for key, value in message.items()}
    return Encoded(encoded, encoder.objects, encoder.media)


def decode(
    message: dict[str, JSON],
    objects: list[dict[str, JSON]] | None,
    media: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Replace the placeholders ``objects`` describe with real values, in list order."""
    media = media or {}
    if not isinstance(objects, list):
        if objects is None:
            return message
        raise SerializationError("'objects' must be a list of descriptors")
    for descriptor in objects:
        if not isinstance(descriptor, dict):
            raise SerializationError("Each entry of 'objects' must be an object")
        path = descriptor.get("path")
        if not isinstance(path, list) or not path:
            raise SerializationError(f"Descriptor has no valid 'path': {_short(descriptor)}")
        container, last = locate(message, path)
        value = _rebuild(descriptor, container[last], media, path)
        container[last] = value
    return message


def _has_step(node: Any, step: Any) -> bool:
    if isinstance(node, dict):
        return isinstance(step, str) and step in node
    if isinstance(node, list):
        return isinstance(step, int) and not isinstance(step, bool) and 0 <= step < len(node)
    return False


def locate(message: Any, path: list[Any]) -> tuple[Any, Any]:
    """The container and key ``path`` leads to in ``message``; SerializationError if it
    leads nowhere."""
    node = message
    for depth, step in enumerate(path):
        at_end = depth == len(path) - 1
        if _has_step(node, step):
            if at_end:
                return node, step
            node = node[step]
        else:
            break
    raise SerializationError(f"Descriptor path {path!r} does not lead to a value in the message")


def _rebuild(descriptor: dict[str, JSON], inline: JSON, media: dict[str, bytes], path: Path) -> Any:
    kinds = descriptor.get("type")
    if isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        raise SerializationError(f"Descriptor at {describe_path(path)} has no 'type' (a list of kind names)")
    for kind in kinds:
        builder = _BUILDERS.get(kind)
        if builder is not None:
            try:
                return builder(descriptor, inline, media)
            except SerializationError as e:
                raise SerializationError(f"{e} at {describe_path(path)}") from None
            except (ValueError, TypeError, KeyError) as e:
                raise SerializationError(f"Invalid {kind} value at {describe_path(path)}: {e}") from None
    raise SerializationError(f"Unknown value type {kinds!r} at {describe_path(path)}")


def _long(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> int:
    text = str(d["value"])
    if len(text) > 4300:
        raise SerializationError("Integer too long")
    return int(text)


def _float(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> float:
    text = d["value"]
    if text not in ("Infinity", "-Infinity", "NaN"):
        raise ValueError(f"{text!r} is not Infinity, -Infinity or NaN")
    return float(text.replace("Infinity", "inf"))


def _datetime(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> dt.datetime | None:
    text = d.get("value")
    return parse_datetime(str(text)) if text else None


def _date(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> dt.date | None:
    text = d.get("value")
    return dt.date.fromisoformat(str(text)) if text else None


def _media(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> Media:
    media_id = str(d.get("id"))
    if media_id not in media:
        raise SerializationError(f"Media {media_id!r} has no content")
    content_type, name = d.get("mime-type"), d.get("name")
    if not isinstance(content_type, (str, type(None))) or not isinstance(name, (str, type(None))):
        raise SerializationError("A Media's 'mime-type' and 'name' must be strings")
    return BlobMedia(content_type, media[media_id], name=name)


def _portable_class(type_name: JSON) -> type:
    """Only a class server code registered (``@server.portable_class``, run as the server
    cells load): the name comes from the caller, so it is looked up, never imported."""
    cls = _portable_classes.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        name = type_name if isinstance(type_name, str) else repr(type_name)
        raise SerializationError(f"No such serializable type: {name[:200]}")
    return cls


def _value_type(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> Any:
    cls = _portable_class(d.get("typeName"))
    if hasattr(cls, "__new_deserialized__"):
        return cls.__new_deserialized__(inline, None)
    obj: Any = object.__new__(cls)
    if hasattr(obj, "__deserialize__"):
        obj.__deserialize__(inline, None)
    elif isinstance(inline, dict):
        obj.__dict__.update(inline)
    else:
        raise SerializationError(f"Data for {d.get('typeName')} must be an object")
    return obj


def _class_type(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> type:
    return _portable_class(d.get("typeName"))


def _primitive(d: dict[str, JSON], inline: JSON, media: dict[str, bytes]) -> JSON:
    return d.get("value")


_BUILDERS: dict[str, Callable[[dict[str, JSON], JSON, dict[str, bytes]], Any]] = {
    "Long": _long,
    "Float": _float,
    "DateTime": _datetime,
    "Date": _date,
    "DataMedia": _media,
    "ValueType": _value_type,
    "ClassType": _class_type,
    "Primitive": _primitive,
}


def without_surrogates(value: JSON) -> JSON:
    """``value`` with each lone UTF-16 surrogate in its strings (and keys) replaced by
    U+FFFD: such a string is not Unicode, so no UTF-8 transport can carry it."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_surrogates(v) for v in value]
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def media_to_buffers(media: dict[str, bytes]) -> tuple[list[str], list[bytes]]:
    """Media bytes as (ids, buffers) for a transport with binary buffers (the comm)."""
    ids = list(media)
    return ids, [media[i] for i in ids]


def media_from_buffers(ids: Any, buffers: list[Any]) -> dict[str, bytes]:
    """The inverse of :func:`media_to_buffers`."""
    if not ids:
        return {}
    if not isinstance(ids, list) or len(ids) != len(buffers):
        raise SerializationError("Media ids and buffers do not match")
    return {str(i): bytes(b) for i, b in zip(ids, buffers, strict=True)}


# -- cookies --------------------------------------------------------------------------
# A cookie holds, per key, the encoded value and its expiry (epoch seconds). The kernel
# builds the payload (so it can refuse a cookie that would be too big the moment server
# code sets it); only the host, which holds the key, seals it.

COOKIE_LIMIT = 4000


def encode_value(value: Any, what: str) -> dict[str, JSON]:
    """One value as ``{"v": json, "objects": [...]}``; Media is refused (``what`` names
    where it was going, e.g. ``anvil.server.session``)."""
    encoded = encode({"v": value})
    if encoded.media:
        raise SerializationError(f"Cannot store Media in {what}")
    return {"v": encoded.message["v"], "objects": encoded.objects}


def decode_value(encoded: dict[str, JSON]) -> Any:
    return decode({"v": copy_json(encoded.get("v"))}, copy_json(encoded.get("objects") or []))["v"]


def copy_json(value: JSON) -> JSON:
    """A deep copy of a JSON value (lists and dicts), cheaper than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def cookie_payload(kind: str, app: str, values: dict[str, Any]) -> bytes:
    """The plaintext of a cookie: its kind and app are inside, so a cookie cannot be
    replayed as another app's or as the other kind."""
    return json.dumps({"kind": kind, "app": app, "values": values}, separators=(",", ":"), sort_keys=True).encode()


def sealed_cookie_length(payload_length: int) -> int:
    """Length of the Fernet token for a payload: version, timestamp, IV, AES blocks with
    PKCS7 padding, HMAC, all in padded URL-safe base64."""
    raw = 1 + 8 + 16 + (payload_length // 16 + 1) * 16 + 32
    return 4 * ((raw + 2) // 3)


def embed(
    message: dict[str, JSON], objects: list[dict[str, JSON]], path: Path, encoded: dict[str, JSON] | None
) -> None:
    """Put an already-encoded value (``{"v", "objects"}``) at ``path`` of a message being
    built, re-rooting its descriptors: the host composes replies from stored values
    without decoding them (it may not know their portable classes)."""
    container: Any = message
    for step in path[:-1]:
        container = container[step]
    if encoded is None:
        container[path[-1]] = None
        return
    container[path[-1]] = copy_json(encoded.get("v"))
    for descriptor in encoded.get("objects") or []:
        objects.append({**descriptor, "path": [*path, *descriptor.get("path", [])[1:]]})
