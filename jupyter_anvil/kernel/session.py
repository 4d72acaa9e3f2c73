"""``server.session`` for one call: a dict of portable values, saved after the call.

Values arrive encoded per key and are decoded only when read. After the call, keys
that were read or written are encoded again and compared, so changes made in place
(``session["cart"].append(item)``) are saved too, and only changed keys travel.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from .. import wire
from ..errors import SerializationError

WHAT = "anvil.server.session"
_MISSING = object()


class SessionData(MutableMapping[str, Any]):
    def __init__(self, session_id: str | None, encoded: dict[str, Any]) -> None:
        self.session_id = session_id
        self._stored = encoded
        self._values: dict[str, Any] = {}
        self._deleted: set[str] = set()
        self.persist_requested = False

    def __getitem__(self, key: str) -> Any:
        if key in self._deleted:
            raise KeyError(key)
        if key not in self._values:
            if key not in self._stored:
                raise KeyError(key)
            self._values[key] = wire.decode_value(self._stored[key])
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"{WHAT} keys must be strings, not {type(key).__name__}")
        try:
            wire.encode_value(value, WHAT)
        except SerializationError as e:
            raise SerializationError(f"Tried to store illegal value in a {WHAT}. {e}") from None
        self._values[key] = value
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        if key in self._deleted or (key not in self._values and key not in self._stored):
            raise KeyError(key)
        self._values.pop(key, None)
        self._deleted.add(key)

    def __iter__(self) -> Iterator[str]:
        seen = [k for k in self._stored if k not in self._deleted]
        return iter(seen + [k for k in self._values if k not in self._stored])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<anvil.server.session {dict(self.items())!r}>"

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """(changed keys with their new encodings, deleted keys) since the call began."""
        changed: dict[str, Any] = {}
        for key, value in self._values.items():
            try:
                encoded = wire.encode_value(value, WHAT)
            except SerializationError as e:
                raise SerializationError(f"Tried to store illegal value in a {WHAT}. {e}") from None
            if self._stored.get(key, _MISSING) != encoded:
                changed[key] = encoded
        return changed, sorted(k for k in self._deleted if k in self._stored)
