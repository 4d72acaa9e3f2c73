"""The rows of ``anvil_idempotency``: claims and the outcomes of keyed calls, and how an
outcome is encoded to bytes.

A row is ``running`` from the moment one server claims its key (an INSERT that does nothing on a conflict on the
primary key (app, session, key): the database lets one through, whichever server
tries, so two can never both run it) until the call's reply is final, then ``done`` with
that reply encoded. Never read-then-write: every change is one conditional statement.

Encoding of an outcome (``reply`` column): a 4-byte big-endian length, then a JSON header
``{"response", "objects", "error", "cookies", "media": [[id, length], ...]}``, then each
Media's bytes back to back in the header's order. JSON for what is JSON already, raw bytes
for Media (no base64 growth).
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ... import errors
from ..messages import CallReply
from ..store import Store
from ..store.tables import idempotency

RUNNING, DONE = "running", "done"
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Scope:
    """What a key is unique within: one app, one session, the key. The session is named by
    its token's hash, which its holder still has once the session expired: a reply lost
    while a client was offline longer than a session lives is still found for its replay."""

    app: str
    session_token_hash: str
    key: str


@dataclass(frozen=True)
class Row:
    state: str
    owner: str
    finished: float | None
    reply: bytes | None


# -- the encoded outcome ------------------------------------------------------------------
def outcome_size(reply: CallReply) -> int:
    """The bytes :func:`encode_outcome` would take, up to a few bytes, without building it
    (a reply can carry hundreds of MiB of Media that must not be copied to be measured)."""
    return len(_header(reply)) + _LENGTH.size + sum(len(content) for content in reply.media.values())


def _header(reply: CallReply) -> bytes:
    body: dict[str, Any] = {
        "response": reply.response,
        "objects": reply.objects,
        "error": dict(reply.error) if reply.error is not None else None,
        "cookies": reply.cookie_changes,
        "media": [[media_id, len(content)] for media_id, content in reply.media.items()],
    }
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def encode_outcome(reply: CallReply) -> bytes:
    header = _header(reply)
    return b"".join([_LENGTH.pack(len(header)), header, *reply.media.values()])


def decode_outcome(blob: bytes) -> CallReply:
    (length,) = _LENGTH.unpack_from(blob)
    start = _LENGTH.size + length
    body = json.loads(blob[_LENGTH.size : start])
    media: dict[str, bytes] = {}
    for media_id, size in body["media"]:
        media[media_id] = blob[start : start + size]
        start += size
    error: errors.WireError | None = body["error"]
    return CallReply(
        response=body["response"],
        objects=body["objects"],
        media=media,
        error=error,
        cookie_changes=body["cookies"],
    )


# -- the rows -----------------------------------------------------------------------------
_by_scope = sa.and_(
    idempotency.c.app == sa.bindparam("a"),
    idempotency.c.session_token_hash == sa.bindparam("s"),
    idempotency.c.key == sa.bindparam("k"),
)
_SELECT = sa.select(idempotency.c.state, idempotency.c.owner, idempotency.c.finished, idempotency.c.reply).where(
    _by_scope
)

_CLAIM_VALUES: dict[str, Any] = {
    "app": sa.bindparam("a"),
    "session_token_hash": sa.bindparam("s"),
    "key": sa.bindparam("k"),
    "state": RUNNING,
    "owner": sa.bindparam("o"),
    "created": sa.bindparam("t"),
    "finished": None,
    "reply": None,
    "size": 0,
}
_KEY_COLUMNS = [idempotency.c.app, idempotency.c.session_token_hash, idempotency.c.key]
#: a claim that finds the key taken inserts nothing: no error (PostgreSQL would log one per
#: replay of a held key) and no rolled-back transaction; both engines the store runs on
#: (RETURNING tells whether it inserted: psycopg's rowcount is -1 for it)
_CLAIMS = {
    name: insert(idempotency)
    .values(_CLAIM_VALUES)
    .on_conflict_do_nothing(index_elements=_KEY_COLUMNS)
    .returning(idempotency.c.key)
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}


def _params(scope: Scope) -> dict[str, str]:
    return {"a": scope.app, "s": scope.session_token_hash, "k": scope.key}


class IdempotencyStore:
    """The table's statements, each run on the store's worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def claim(self, scope: Scope, owner: str) -> bool:
        """Claim ``scope`` for ``owner`` (``running``): True if this call inserted the row,
        False if a row was there (whoever wrote it, on whichever server)."""

        def work() -> bool:
            with self.store.engine.begin() as db:
                inserted = db.execute(_CLAIMS[db.dialect.name], {**_params(scope), "o": owner, "t": time.time()})
                return inserted.first() is not None

        return await self.store.run(work)

    async def get(self, scope: Scope) -> Row | None:
        def work() -> Row | None:
            with self.store.engine.begin() as db:
                row = db.execute(_SELECT, _params(scope)).first()
            return None if row is None else Row(row[0], row[1], row[2], row[3])

        return await self.store.run(work)

    async def finish(self, scope: Scope, owner: str, blob: bytes) -> bool:
        """Store the outcome of ``owner``'s run (only while it still holds the claim)."""

        def work() -> bool:
            with self.store.engine.begin() as db:
                updated = db.execute(
                    idempotency.update()
                    .where(_by_scope, idempotency.c.state == RUNNING, idempotency.c.owner == owner)
                    .values(state=DONE, finished=time.time(), reply=blob, size=len(blob)),
                    _params(scope),
                )
                return bool(updated.rowcount)

        return await self.store.run(work)

    async def release(self, scope: Scope, owner: str) -> None:
        """Drop ``owner``'s claim: nothing ran, the key may be sent again."""

        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(
                    idempotency.delete().where(_by_scope, idempotency.c.state == RUNNING, idempotency.c.owner == owner),
                    _params(scope),
                )

        await self.store.run(work)

    async def drop_expired(self, scope: Scope, finished_before: float) -> None:
        """Delete this key's outcome if it finished before ``finished_before``."""

        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(
                    idempotency.delete().where(
                        _by_scope, idempotency.c.state == DONE, idempotency.c.finished < finished_before
                    ),
                    _params(scope),
                )

        await self.store.run(work)

    async def running_owners(self) -> list[str]:
        """The servers that hold claims still ``running``."""

        def work() -> list[str]:
            with self.store.engine.begin() as db:
                query = sa.select(idempotency.c.owner).where(idempotency.c.state == RUNNING).distinct()
                return [str(owner) for owner in db.execute(query).scalars()]

        return await self.store.run(work)

    async def settle_abandoned(self, owner: str, blob: bytes, scope: Scope | None = None) -> int:
        """Give every claim ``owner`` left ``running`` (or just ``scope``'s) the outcome
        ``blob``: that server is gone, so its runs will never finish here."""

        def work() -> int:
            where = [idempotency.c.state == RUNNING, idempotency.c.owner == owner]
            if scope is not None:
                where += [
                    idempotency.c.app == scope.app,
                    idempotency.c.session_token_hash == scope.session_token_hash,
                    idempotency.c.key == scope.key,
                ]
            with self.store.engine.begin() as db:
                statement = idempotency.update().where(*where)
                values = {"state": DONE, "finished": time.time(), "reply": blob, "size": len(blob)}
                return int(db.execute(statement.values(**values)).rowcount)

        return await self.store.run(work)

    async def prune(self, finished_before: float, kept_per_app: int) -> int:
        """Delete outcomes that finished before ``finished_before``, and each app's oldest
        outcomes beyond ``kept_per_app``. Claims still running are never pruned."""

        def work() -> int:
            removed = 0
            with self.store.engine.begin() as db:
                expired = idempotency.delete().where(
                    idempotency.c.state == DONE, idempotency.c.finished < finished_before
                )
                removed += int(db.execute(expired).rowcount)
                counts = sa.select(idempotency.c.app, sa.func.count()).group_by(idempotency.c.app)
                over = [(str(app), int(n)) for app, n in db.execute(counts) if n > kept_per_app]
            for app, count in over:
                removed += self._trim(app, count - kept_per_app)
            return removed

        return await self.store.run(work)

    async def usage(self, app: str) -> tuple[int, int]:
        """``app``'s rows and the bytes of their outcomes."""

        def work() -> tuple[int, int]:
            with self.store.engine.begin() as db:
                query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(idempotency.c.size), 0)).where(
                    idempotency.c.app == app
                )
                rows, size = db.execute(query).one()
                return int(rows), int(size)

        return await self.store.run(work)

    async def trim_bytes(self, app: str, kept_bytes: int) -> int:
        """Keep at most ``kept_bytes`` of ``app``'s outcomes: its oldest finished go first."""

        def work() -> int:
            with self.store.engine.begin() as db:
                total = db.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(idempotency.c.size), 0)).where(idempotency.c.app == app)
                ).scalar_one()
                excess = int(total) - kept_bytes
                if excess <= 0:
                    return 0
                oldest = (
                    sa.select(idempotency.c.finished, idempotency.c.size)
                    .where(idempotency.c.app == app, idempotency.c.state == DONE)
                    .order_by(idempotency.c.finished)
                )
                freed, cutoff = 0, None
                for finished, size in db.execute(oldest):
                    freed, cutoff = freed + int(size), finished
                    if freed >= excess:
                        break
                if cutoff is None:
                    return 0
                statement = idempotency.delete().where(
                    idempotency.c.app == app, idempotency.c.state == DONE, idempotency.c.finished <= cutoff
                )
                return int(db.execute(statement).rowcount)

        return await self.store.run(work)

    async def trim(self, app: str, kept: int) -> int:
        """Keep at most ``kept`` rows of ``app``: its oldest finished outcomes go first."""

        def work() -> int:
            with self.store.engine.begin() as db:
                query = sa.select(sa.func.count()).select_from(idempotency).where(idempotency.c.app == app)
                excess = int(db.execute(query).scalar_one()) - kept
            return self._trim(app, excess) if excess > 0 else 0

        return await self.store.run(work)

    def _trim(self, app: str, excess: int) -> int:
        """On the worker thread: delete ``app``'s ``excess`` oldest finished outcomes (and
        any that finished at the same instant as the last of them), in one statement."""
        with self.store.engine.begin() as db:
            cutoff = (
                sa.select(idempotency.c.finished)
                .where(idempotency.c.app == app, idempotency.c.state == DONE)
                .order_by(idempotency.c.finished)
                .offset(excess - 1)
                .limit(1)
                .scalar_subquery()
            )
            statement = idempotency.delete().where(
                idempotency.c.app == app, idempotency.c.state == DONE, idempotency.c.finished <= cutoff
            )
            return int(db.execute(statement).rowcount)
