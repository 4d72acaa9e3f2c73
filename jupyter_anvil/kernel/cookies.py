"""``server.cookies.local`` and ``server.cookies.shared`` for one call.

The host decrypts the browser's cookie and hands the kernel its values; the kernel
never sees the key. Changed cookies go back to the host, which seals them again.
"""

from __future__ import annotations

import time
from typing import Any

from .. import wire
from ..errors import CookieError, SerializationError

NOT_A_BROWSER = "This connection is not from a web browser - cannot access cookies."
DAY = 86400.0


class CookieJar:
    """One cookie (``local`` or ``shared``): a dict whose keys each expire."""

    def __init__(self, kind: str, app: str, values: dict[str, Any] | None) -> None:
        self.kind = kind
        self.app = app
        self.available = values is not None
        self._values: dict[str, list[Any]] = {
            k: v for k, v in (values or {}).items() if isinstance(v, list) and len(v) == 2 and v[1] > time.time()
        }
        self.changed = False

    def _check(self) -> None:
        if not self.available:
            raise CookieError(NOT_A_BROWSER)

    def __getitem__(self, key: str) -> Any:
        self._check()
        entry = self._values.get(key)
        if entry is None or entry[1] <= time.time():
            raise KeyError(key)
        return wire.decode_value(entry[0])

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(30, **{key: value})

    def __delitem__(self, key: str) -> None:
        self._check()
        if self._values.pop(key, None) is not None:
            self.changed = True

    def __contains__(self, key: object) -> bool:
        self._check()
        entry = self._values.get(key) if isinstance(key, str) else None
        return entry is not None and entry[1] > time.time()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired."""
        try:
            return self[key]
        except KeyError:
            return default

    def set(self, timeout_days: float = 30, **values: Any) -> None:
        """Set several keys at once, each expiring ``timeout_days`` from now."""
        self._check()
        expires = time.time() + float(timeout_days) * DAY
        updated = dict(self._values)
        for key, value in values.items():
            try:
                updated[key] = [wire.encode_value(value, "cookies"), expires]
            except SerializationError as e:
                raise SerializationError(f"Cannot store this value in a cookie: {e}") from None
        if wire.sealed_cookie_length(len(wire.cookie_payload(self.kind, self.app, updated))) > wire.COOKIE_LIMIT:
            raise CookieError("Cookie too big")
        self._values = updated
        self.changed = True

    def clear(self) -> None:
        """Remove every key."""
        self._check()
        self._values.clear()
        self.changed = True

    def values_for_host(self) -> dict[str, Any]:
        now = time.time()
        return {k: v for k, v in self._values.items() if v[1] > now}

    def __repr__(self) -> str:
        return f"<anvil.server.cookies.{self.kind}>"
