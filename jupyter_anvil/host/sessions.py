"""Server-side sessions: one per browser window (or HTTP client, task, email), kept in
the store, restored before each call and saved after it.

This module is the sessions' persistence: new, resume, expiry, and :meth:`commit` (what a
call changed, in one store write). Whose session a call runs in, and when it is resumed
and saved, is the call service's (:mod:`.calls`).

A session has two identifiers. The *token* is the caller's secret (at least 256 random
bits); only its SHA-256 is stored, so the database alone cannot be used to take over a
session. The *id* is public: it is what server code sees as ``session.session_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from .background import spawn
from .messages import CallReply, CallRequest
from .store import SessionRecord, Store

log = logging.getLogger(__name__)
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: last_used is written at most this often for a session that is only read
TOUCH_EVERY = 60.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def redact(token: str | None) -> str:
    """A token as it may appear in a log line: never whole."""
    return f"{token[:4]}…" if token else "-"


class SessionExpired(Exception):
    """The token names no live session (it expired, or it never existed)."""


@dataclass
class Session:
    """A live session as the host hands it to a call."""

    token: str
    record: SessionRecord
    persisted: bool = True
    #: when last_used was last written to the store (reads touch it at most once a minute)
    stored_last_used: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def data(self) -> dict[str, Any]:
        return self.record.data


class SessionService:
    def __init__(self, store: Store, idle_timeout: float, cache_size: int = 10000) -> None:
        self.store = store
        self.idle_timeout = idle_timeout
        # live sessions of this process, shared by all its connections, so a read needs
        # no database round trip; every change is written through to the store
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._cache_size = cache_size
        self._purger: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._purger = spawn(self._purge_periodically())

    def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()

    def new(self, app: str, client_type: str) -> Session:
        """A fresh session, not yet stored (see :meth:`persist`). Its token is handed to
        the caller only once it is stored: a token always names a stored session, so it
        survives a restart, and a caller that never stores anything costs no row."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        record = SessionRecord(hash_token(token), secrets.token_hex(12), app, client_type, {}, now, now)
        return Session(token, record, persisted=False)

    async def persist(self, session: Session) -> None:
        if not session.persisted:
            await self.store.insert_session(session.record)
            session.persisted = True
            session.stored_last_used = session.record.last_used  # the insert wrote it
            self._remember(session)

    def _remember(self, session: Session) -> None:
        self._live[session.record.token_hash] = session
        self._live.move_to_end(session.record.token_hash)
        while len(self._live) > self._cache_size:
            self._live.popitem(last=False)

    async def resume(self, token: str, app: str) -> Session:
        """The live session of ``app`` with this token; :class:`SessionExpired` if none."""
        if not isinstance(token, str) or not TOKEN_SHAPE.match(token):
            raise SessionExpired
        token_hash = hash_token(token)
        idle_after = time.time() - self.idle_timeout
        live = self._live.get(token_hash)
        if live is not None and live.record.app == app and live.record.last_used >= idle_after:
            self._live.move_to_end(token_hash)
            live.record.last_used = time.time()
            return live
        self._live.pop(token_hash, None)
        record = await self.store.load_session(token_hash, idle_after)
        if record is None or not hmac.compare_digest(record.token_hash, token_hash) or record.app != app:
            log.info("[jupyter-anvil] expired or unknown session token %s for app %s", redact(token), app)
            raise SessionExpired
        session = Session(token, record, stored_last_used=record.last_used)
        self._remember(session)
        return session

    async def use(self, session: Session) -> None:
        """Mark a session used by a call now, with its data as the store has it;
        :class:`SessionExpired` if it sat idle too long (a connection held open does not
        keep an idle session alive) or is no longer stored.

        Other servers over the same store may have written it since this process last
        did, so the live copy is brought up to date with one primary-key read per call:
        what is cached is the session's identity and lock, never data trusted unread."""
        now = time.time()
        if session.persisted:
            try:
                stored = await self.store.load_session_data(session.record.token_hash)
            except Exception:
                log.exception("[jupyter-anvil] could not read session %s", session.id)
                raise errors.InternalError("The server could not read the session") from None
            if stored is not None:
                session.record.data, stored_last_used = stored
                session.record.last_used = max(session.record.last_used, stored_last_used)
            if stored is None or session.record.last_used < now - self.idle_timeout:
                self._live.pop(session.record.token_hash, None)
                log.info("[jupyter-anvil] session %s expired while its connection stayed open", redact(session.token))
                raise SessionExpired
        session.record.last_used = now

    async def save(self, session: Session, changed: dict[str, Any], deleted: list[str]) -> None:
        """Write a call's changes; persist a new session the first time it holds data.
        :class:`SessionExpired` if the session is no longer in the store."""
        if not changed and not deleted:
            if session.persisted and time.time() - session.stored_last_used > min(TOUCH_EVERY, self.idle_timeout / 4):
                session.stored_last_used = time.time()
                if not await self.store.save_session_changes(session.record.token_hash, {}, [], touch=True):
                    self._expired(session)
            return
        async with session._lock:
            if not session.persisted:
                session.data.update(changed)
                await self.persist(session)
            elif not await self.store.save_session_changes(session.record.token_hash, changed, deleted, touch=True):
                self._expired(session)
            # the live copy changes only once the store has the change
            session.data.update(changed)
            for key in deleted:
                session.data.pop(key, None)
            session.record.last_used = session.stored_last_used = time.time()

    async def commit(self, session: Session, changes: dict[str, Any] | None) -> None:
        """Store what a call changed in its session (``{"changed", "deleted", "persist"}``,
        as the kernel reports it) in one store write at most: a new session is inserted,
        with its data, once it holds something or server code asks to keep it; a stored
        one has its changes merged, or its last use touched now and then.
        :class:`SessionExpired` if the session is no longer in the store."""
        changes = changes or {}
        changed, deleted = changes.get("changed") or {}, changes.get("deleted") or []
        if changes.get("persist") and not changed and not session.persisted:
            async with session._lock:  # two calls of a new session must not insert it twice
                await self.persist(session)
            return
        await self.save(session, changed, deleted)

    async def keep_state(self, app_name: str, request: CallRequest, reply: CallReply) -> CallReply:
        """Store what a call (or a background task) changed in its session, before the
        caller hears back, so nothing acknowledged can be lost. Never raises: a session
        that cannot be saved turns the reply into a failure."""
        caller = request.caller
        if caller is None:
            return reply
        try:
            await self.commit(caller.session, reply.session_changes)
        except SessionExpired:
            return CallReply.failure(errors.SessionExpiredError("Session expired"))
        except Exception:
            log.exception("[jupyter-anvil] could not save session %s of app %s", caller.session.id, app_name)
            return CallReply.failure(errors.InternalError("The call ran, but its session could not be saved"))
        return reply

    def _expired(self, session: Session) -> None:
        self._live.pop(session.record.token_hash, None)
        session.record.last_used = 0.0  # every later use of it on an open connection is refused too
        raise SessionExpired

    async def _purge_periodically(self, every: float = 300.0) -> None:
        while True:
            try:
                removed = await self.store.delete_idle_sessions(time.time() - self.idle_timeout)
                if removed:
                    log.info("[jupyter-anvil] removed %d expired sessions", removed)
            except Exception:  # a failed purge is retried next time
                log.exception("[jupyter-anvil] could not remove expired sessions")
            await asyncio.sleep(min(every, max(self.idle_timeout, 1.0)))
