"""Encrypted, authenticated browser cookies for ``server.cookies``.

Each cookie is a Fernet token (AES-128-CBC with HMAC-SHA256, from ``cryptography``) of
the payload the kernel built. Keys live in a file in the data folder, readable by the
owner only, generated on first start. Rotating adds a new key in front: cookies are
sealed with the first key and opened with any, so nobody is logged out.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .. import wire

log = logging.getLogger(__name__)
COOKIE_NAMES = {"local": "anvil-local", "shared": "anvil-shared"}
KEYS_KEPT = 3
MAX_AGE_CAP = 400 * 86400  # browsers cap cookie lifetimes at 400 days


def load_keys(path: Path) -> list[bytes]:
    """The keys in ``path``, newest first; a first key is generated if there is none."""
    if not path.exists():
        write_keys(path, [Fernet.generate_key()])
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # a key others can read is no key
    keys = [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]
    if not keys:
        raise ValueError(f"{path} holds no cookie keys")
    return keys


def write_keys(path: Path, keys: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(k.decode() + "\n" for k in keys))
    os.replace(tmp, path)


def rotate_keys(path: Path) -> None:
    """Put a new key in front; keep the last few so existing cookies still open."""
    keys = load_keys(path) if path.exists() else []
    write_keys(path, [Fernet.generate_key(), *keys][:KEYS_KEPT])


class CookieSealer:
    def __init__(self, keys_path: Path, shared_domain: str = "") -> None:
        self.fernet = MultiFernet([Fernet(k) for k in load_keys(keys_path)])
        self.shared_domain = shared_domain

    def read(self, raw_cookies: dict[str, str], app: str) -> dict[str, dict[str, Any]]:
        """The browser's cookie values per kind; a tampered, foreign or undecryptable
        cookie counts as empty, and is logged without anything that could help forge one."""
        jars: dict[str, dict[str, Any]] = {}
        for kind, name in COOKIE_NAMES.items():
            raw = raw_cookies.get(name)
            jars[kind] = self._open(raw, kind, app if kind == "local" else "*") if raw else {}
        return jars

    def _open(self, raw: str, kind: str, app: str) -> dict[str, Any]:
        try:
            payload = json.loads(self.fernet.decrypt(raw.encode("ascii")))
        except (InvalidToken, ValueError, UnicodeError):
            log.warning("[jupyter-anvil] ignored a %s cookie that could not be decrypted (tampered or stale key)", kind)
            return {}
        if not isinstance(payload, dict) or payload.get("kind") != kind or payload.get("app") != app:
            log.warning("[jupyter-anvil] ignored a %s cookie sealed for another app or kind", kind)
            return {}
        now = time.time()
        values = payload.get("values")
        if not isinstance(values, dict):
            return {}
        return {k: v for k, v in values.items() if isinstance(v, list) and len(v) == 2 and v[1] > now}

    def headers(self, kind: str, app: str, values: dict[str, Any], base_url: str, secure: bool) -> str:
        """The ``Set-Cookie`` header value for a jar (an expired one when it is empty)."""
        name = COOKIE_NAMES[kind]
        if kind == "local":
            attributes = [f"Path={base_url}anvil/apps/{app}/"]
        else:
            attributes = [f"Path={base_url}"]
            if self.shared_domain:
                attributes.append(f"Domain={self.shared_domain}")
        attributes += ["HttpOnly", "SameSite=Lax"] + (["Secure"] if secure else [])
        live = {k: v for k, v in values.items() if v[1] > time.time()}
        if not live:
            return "; ".join([f"{name}=", "Max-Age=0", *attributes])
        sealed = self.fernet.encrypt(wire.cookie_payload(kind, app if kind == "local" else "*", live)).decode()
        max_age = int(min(max(v[1] for v in live.values()) - time.time(), MAX_AGE_CAP))
        return "; ".join([f"{name}={sealed}", f"Max-Age={max(max_age, 1)}", *attributes])


@dataclass
class _Ticket:
    expires: float  # time.monotonic()
    app: str
    headers: list[str]


class CookieTickets:
    """One-use tickets that let a page turn cookie changes made over its WebSocket into
    real ``Set-Cookie`` headers (a socket cannot set cookies).

    A page redeems its ticket as soon as the call returns, so few are ever outstanding;
    the table is still bounded, since any caller can grow it by calling functions that
    change cookies over a socket: tickets expire after ``ttl`` seconds, and past ``limit``
    the oldest go first (their pages have long had their chance)."""

    def __init__(self, ttl: float = 60.0, limit: int = 1024) -> None:
        self.ttl = ttl
        self.limit = limit
        # in issue order, which is also expiry order (one ttl for all, a monotonic clock)
        self._tickets: OrderedDict[str, _Ticket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tickets)

    def issue(self, app: str, headers: list[str]) -> str:
        self._drop_expired()
        while len(self._tickets) >= self.limit:
            self._tickets.popitem(last=False)
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = _Ticket(time.monotonic() + self.ttl, app, headers)
        return ticket

    def redeem(self, ticket: str, app: str) -> list[str] | None:
        """The headers of a live ticket issued for ``app``, used up; None otherwise. A
        ticket presented on another app's route stays valid for its own app."""
        self._drop_expired()
        entry = self._tickets.get(ticket)
        if entry is None or entry.app != app:
            return None
        del self._tickets[ticket]
        return entry.headers

    def _drop_expired(self) -> None:
        now = time.monotonic()
        while self._tickets:
            oldest = next(iter(self._tickets.values()))
            if oldest.expires > now:
                break
            self._tickets.popitem(last=False)
