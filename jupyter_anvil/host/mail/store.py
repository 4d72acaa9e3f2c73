"""The mail records in the store: one row per message sent or received (records.py says
what its box and status mean), and the events a change sends to the live feed."""

from __future__ import annotations

import base64
import builtins
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, cast

import sqlalchemy as sa

from ..store import Store
from ..store.tables import mail
from .records import MailBox, MailChanges, MailRecord, MailStatus, MailSummary

log = logging.getLogger(__name__)

#: a change to a record, for the live feed: ``{"type": "mail", "mail": MailSummary}`` or
#: ``{"type": "mail_deleted", "id": ..., "app": ...}``
MailEvent = dict[str, Any]

_SUMMARY_COLUMNS = [mail.c[f.name] for f in fields(MailSummary)]


def new_mail_id() -> str:
    """A record's id: 26 characters of base32 (130 random bits), fit for a URL."""
    return base64.b32encode(secrets.token_bytes(17)).decode("ascii").lower().rstrip("=")[:26]


def _row(values: dict[str, Any]) -> dict[str, Any]:
    if "recipients" in values:
        values = {**values, "recipients": json.dumps(values["recipients"])}
    return values


def _summary(row: Any) -> MailSummary:
    values = dict(row)
    values["recipients"] = json.loads(values["recipients"])
    values.pop("raw", None)
    return MailSummary(**values)


def _record(row: Any) -> MailRecord:
    values = dict(row)
    values["recipients"] = json.loads(values["recipients"])
    values["raw"] = bytes(values["raw"])
    return MailRecord(**values)


#: records stored between two prunes (mail is pruned at start-up and then every so many)
PRUNE_EVERY = 50


class MailStore:
    """Mail records, each change told to ``on_event`` (the live feed) once it is stored.

    What the world sends is bounded here: at start-up and after every :data:`PRUNE_EVERY`
    records, all but each app's newest ``kept`` per box, and any older than ``days``, go."""

    def __init__(
        self,
        store: Store,
        on_event: Callable[[MailEvent], None] | None = None,
        *,
        kept: int = 1000,
        days: float = 30.0,
    ) -> None:
        self.store = store
        self.on_event = on_event
        self.kept = max(kept, 1)
        self.days = days
        self._since_prune = 0

    async def start(self) -> None:
        await self._prune()

    async def _prune(self) -> None:
        self._since_prune = 0
        try:
            removed = await self.prune(self.kept, self.days)
        except Exception:  # a failed prune is retried at the next one; the write it follows stands
            log.exception("[jupyter-anvil] could not prune the mail records")
            return
        if removed:
            log.info("[jupyter-anvil] dropped %d old mail records", removed)

    def _publish(self, event: MailEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a feed that fails must not fail the store's caller
            log.exception("[jupyter-anvil] the mail feed failed")

    async def insert(self, record: MailRecord) -> None:
        values = _row(asdict(record))

        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(mail.insert().values(values))

        await self.store.run(work)
        self._publish({"type": "mail", "mail": record.summary()})
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            await self._prune()

    async def update(self, mail_id: str, changes: MailChanges) -> MailSummary | None:
        """Change a record; its summary as stored, or None if there is no such record
        (deleted meanwhile: the change is dropped, not an error)."""
        values = {**cast("dict[str, Any]", changes), "updated": time.time()}

        def work() -> MailSummary | None:
            with self.store.engine.begin() as db:
                if db.execute(mail.update().where(mail.c.id == mail_id).values(values)).rowcount == 0:
                    return None
                row = db.execute(sa.select(*_SUMMARY_COLUMNS).where(mail.c.id == mail_id)).mappings().first()
                return _summary(row) if row is not None else None

        summary = await self.store.run(work)
        if summary is not None:
            self._publish({"type": "mail", "mail": summary})
        return summary

    async def take_over(self, mail_id: str, owner: str | None, new_owner: str) -> bool:
        """Make ``new_owner`` the owner of a queued message if ``owner`` still is (a
        conditional update): of several live servers taking over a gone one's outbox, one
        wins each message, and only it sends it."""
        same_owner = mail.c.owner.is_(None) if owner is None else mail.c.owner == owner
        values = {"owner": new_owner, "updated": time.time()}

        def work() -> bool:
            with self.store.engine.begin() as db:
                query = mail.update().where(mail.c.id == mail_id, mail.c.status == "queued", same_owner)
                return bool(db.execute(query.values(values)).rowcount)

        return await self.store.run(work)

    async def get(self, mail_id: str) -> MailRecord | None:
        def work() -> MailRecord | None:
            with self.store.engine.begin() as db:
                row = db.execute(sa.select(mail).where(mail.c.id == mail_id)).mappings().first()
                return _record(row) if row is not None else None

        return await self.store.run(work)

    async def list(
        self,
        *,
        app: str | None = None,
        box: MailBox | None = None,
        status: MailStatus | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> builtins.list[MailSummary]:
        """Newest first, without the bytes; ``before`` (a ``created`` time) pages back."""

        def work() -> builtins.list[MailSummary]:
            query = sa.select(*_SUMMARY_COLUMNS).order_by(mail.c.created.desc(), mail.c.id).limit(max(limit, 1))
            for column, value in ((mail.c.app, app), (mail.c.box, box), (mail.c.status, status)):
                if value is not None:
                    query = query.where(column == value)
            if before is not None:
                query = query.where(mail.c.created < before)
            with self.store.engine.begin() as db:
                return [_summary(row) for row in db.execute(query).mappings()]

        return await self.store.run(work)

    async def find(self, *, box: MailBox, status: MailStatus) -> builtins.list[MailRecord]:
        """Every record in ``box`` with ``status``, oldest first, bytes included (the
        sweeps at start-up: mail to send again, mail whose handler never answered)."""

        def work() -> builtins.list[MailRecord]:
            query = sa.select(mail).where(mail.c.box == box, mail.c.status == status).order_by(mail.c.created)
            with self.store.engine.begin() as db:
                return [_record(row) for row in db.execute(query).mappings()]

        return await self.store.run(work)

    async def delete(self, mail_id: str) -> bool:
        def work() -> str | None:
            with self.store.engine.begin() as db:
                app = db.execute(sa.select(mail.c.app).where(mail.c.id == mail_id)).scalar()
                if app is None:
                    return None
                db.execute(mail.delete().where(mail.c.id == mail_id))
                return str(app)

        app = await self.store.run(work)
        if app is None:
            return False
        self._publish({"type": "mail_deleted", "id": mail_id, "app": app})
        return True

    async def prune(self, kept: int, days: float) -> int:
        """Drop records older than ``days``, and in each app's box all but the newest
        ``kept``; mail still waiting for the relay (``queued``) is never dropped. Bounds
        what the world can make the store keep by sending mail."""

        def work() -> int:
            removed = 0
            settled = mail.c.status != "queued"
            with self.store.engine.begin() as db:
                if days > 0:
                    too_old = mail.c.created < time.time() - days * 86400
                    removed += db.execute(mail.delete().where(settled, too_old)).rowcount
                groups = db.execute(sa.select(mail.c.app, mail.c.box).distinct()).all()
                for app, box in groups:
                    where = (mail.c.app == app, mail.c.box == box, settled)
                    newest = sa.select(mail.c.created).where(*where).order_by(mail.c.created.desc())
                    cutoff = db.execute(newest.offset(kept).limit(1)).scalar()
                    if cutoff is not None:
                        removed += db.execute(mail.delete().where(*where, mail.c.created <= cutoff)).rowcount
            return int(removed)

        return await self.store.run(work)
