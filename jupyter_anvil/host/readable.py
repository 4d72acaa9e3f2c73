"""Stored values in plain JSON, for people and the panel (the admin API).

Task states and return values are kept in wire form, ``{"v": json, "objects": [...]}``
(a ``null`` in place of each special value, described in ``objects``). A person reading
``GET anvil/api/tasks/<id>`` wants the values themselves, so the admin API shows:

* a DateTime as its ISO 8601 string (``2024-02-28T09:30:00+00:00``), a Date as ``2024-02-28``;
* a big integer as its decimal string (JSON numbers past 2**53 lose digits in browsers),
  infinities and NaN as ``"Infinity"``, ``"-Infinity"``, ``"NaN"`` (JSON has no numbers for them);
* Media as ``{"__type__": "Media", "content_type", "name", "size", "url"}``, the url a
  download from the admin API;
* a portable class instance as its data with a ``__type__`` key naming the class (its
  data under ``data`` if it is not an object), a portable class itself as
  ``{"__type__": "class", "name": ...}``.

All on the host, from the descriptors alone: no class is imported or built, so what a
kernel registered never runs here. A descriptor that does not fit is left as it was.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from .. import wire
from ..errors import SerializationError
from .api_types import ClassLink, MediaLink

TYPE_KEY = "__type__"


def plain_value(encoded: Any, media_url: Callable[[str], str] | None = None) -> Any:
    """The plain JSON of a stored ``{"v", "objects"[, "media"]}``; anything else as it is.

    Descriptor paths start with the name of the value's place in the message it came in
    (``v``, ``response``): the rest of the path is inside the value."""
    if not isinstance(encoded, dict) or "v" not in encoded:
        return encoded
    root: dict[str, Any] = {"v": wire.copy_json(encoded.get("v"))}
    media: dict[str, Any] = encoded["media"] if isinstance(encoded.get("media"), dict) else {}
    objects = encoded.get("objects")
    for descriptor in objects if isinstance(objects, list) else []:
        if not isinstance(descriptor, dict):
            continue
        path = descriptor.get("path")
        if not isinstance(path, list) or not path:
            continue
        place = _walk(root, ["v", *path[1:]])
        if place is None:
            continue
        container, key = place
        container[key] = _plain(descriptor, container[key], media, media_url)
    return root["v"]


def _plain(
    descriptor: dict[str, Any], inline: Any, media: dict[str, Any], media_url: Callable[[str], str] | None
) -> Any:
    kinds = descriptor.get("type")
    kind = kinds[0] if isinstance(kinds, list) and kinds else kinds
    value = descriptor.get("value")
    if kind == "DateTime":
        return iso_datetime(str(value)) if value else None
    if kind in ("Date", "Long", "Float"):
        return str(value) if value is not None else None
    if kind == "Primitive":
        return value
    if kind == "DataMedia":
        media_id = str(descriptor.get("id"))
        link: MediaLink = {
            "__type__": "Media",
            "content_type": _text(descriptor.get("mime-type")),
            "name": _text(descriptor.get("name")),
            "size": _decoded_size(media.get(media_id)),
            "url": media_url(media_id) if media_url is not None and media_id in media else None,
        }
        return link
    type_name = descriptor.get("typeName")
    if kind == "ValueType":
        if isinstance(inline, dict):
            return {TYPE_KEY: type_name, **inline}
        return {TYPE_KEY: type_name, "data": inline}
    if kind == "ClassType":
        cls: ClassLink = {"__type__": "class", "name": _text(type_name)}
        return cls
    return inline


def _text(value: Any) -> str | None:
    """A descriptor's string, or None: what a kernel sent is shown only as the type says."""
    return value if isinstance(value, str) else None


def iso_datetime(text: str) -> str:
    """Anvil's DateTime string (``2024-02-28 09:30:00.000000+0000``, or any form
    :func:`wire.parse_datetime` reads) in ISO 8601; anything else is shown as it is."""
    try:
        return wire.parse_datetime(text).isoformat()
    except ValueError:
        return text


def _decoded_size(data: Any) -> int | None:
    if not isinstance(data, str):
        return None
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


def _walk(root: Any, path: list[Any]) -> tuple[Any, Any] | None:
    try:
        return wire.locate(root, path)
    except SerializationError:
        return None
