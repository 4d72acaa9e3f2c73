"""The shape of an idempotency key, checked where a transport reads one (the HTTP
``Idempotency-Key`` header, a WebSocket CALL's ``idempotencyKey``)."""

from __future__ import annotations

import re
from typing import Any

from ... import errors

KEY_SHAPE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
HEADER = "Idempotency-Key"
#: on a reply that is a stored outcome, not a new run
REPLAYED_HEADER = "Idempotency-Replayed"
SHAPE_TEXT = "8 to 128 characters among A-Z a-z 0-9 . _ : - (a UUID fits)"


def check_key(value: Any, where: str) -> str:
    """``value`` as a key; a SerializationError naming ``where`` it came from and the
    allowed shape (never echoing the value: it may be 100 KB of anything)."""
    if not isinstance(value, str) or not KEY_SHAPE.fullmatch(value):
        shown = "not a string" if not isinstance(value, str) else f"{len(value)} characters"
        raise errors.SerializationError(f"{where} must be {SHAPE_TEXT} (got {shown})")
    return value
