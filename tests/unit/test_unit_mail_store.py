"""The mail records on a real SQLite store: insert, read, page, change, delete, prune,
and the events each change sends to the live feed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jupyter_anvil.host.mail.records import MailRecord
from jupyter_anvil.host.mail.store import MailStore, new_mail_id
from jupyter_anvil.host.store import Store


def message(app: str = "mailer", box: Any = "outbox", status: Any = "kept", created: float | None = None) -> MailRecord:
    now = time.time() if created is None else created
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    return MailRecord(
        id=new_mail_id(),
        app=app,
        box=box,
        status=status,
        created=now,
        updated=now,
        message_id="<1@example.com>",
        envelope_from="a@example.com",
        recipients=["b@example.com", "hidden@example.com"],
        from_header="a@example.com",
        to_header="b@example.com",
        subject="hi",
        size=len(raw),
        raw=raw,
    )


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def mail(store: Store, events: list[dict[str, Any]]) -> MailStore:
    return MailStore(store, events.append)


def test_mail_ids_are_url_safe_and_distinct() -> None:
    ids = {new_mail_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 26 and i.isalnum() and i == i.lower() for i in ids)


async def test_a_record_reads_back_whole_with_its_bytes(mail: MailStore, events: list[dict[str, Any]]) -> None:
    record = message()
    await mail.insert(record)
    assert await mail.get(record.id) == record
    assert await mail.get("nope") is None
    assert events == [{"type": "mail", "mail": record.summary()}]


async def test_lists_are_newest_first_filtered_and_paged(mail: MailStore) -> None:
    now = time.time()
    records = [message(created=now - i) for i in range(5)] + [message(app="other", created=now)]
    records.append(message(box="inbox", status="received", created=now - 10))
    for record in records:
        await mail.insert(record)
    outbox = await mail.list(app="mailer", box="outbox", limit=3)
    assert [r.id for r in outbox] == [r.id for r in records[:3]]
    rest = await mail.list(app="mailer", box="outbox", before=outbox[-1].created)
    assert [r.id for r in rest] == [r.id for r in records[3:5]]
    assert [r.id for r in await mail.list(box="inbox")] == [records[-1].id]
    assert [r.id for r in await mail.list(status="received")] == [records[-1].id]
    assert not hasattr(outbox[0], "raw")


async def test_an_update_is_stored_and_published_and_a_missing_record_is_no_error(
    mail: MailStore, events: list[dict[str, Any]]
) -> None:
    record = message(status="queued")
    await mail.insert(record)
    summary = await mail.update(record.id, {"box": "sent", "status": "sent", "attempts": 2, "smtp_code": 250})
    assert summary is not None and (summary.box, summary.status, summary.attempts) == ("sent", "sent", 2)
    assert summary.updated >= record.updated
    assert events[-1] == {"type": "mail", "mail": summary}
    assert await mail.update("missing", {"status": "failed"}) is None
    assert len(events) == 2


async def test_find_returns_the_box_and_status_asked_oldest_first(mail: MailStore) -> None:
    now = time.time()
    newer, older = message(status="queued", created=now), message(status="queued", created=now - 5)
    for record in (newer, older, message(status="kept")):
        await mail.insert(record)
    assert [r.id for r in await mail.find(box="outbox", status="queued")] == [older.id, newer.id]


async def test_delete_removes_the_record_once(mail: MailStore, events: list[dict[str, Any]]) -> None:
    record = message()
    await mail.insert(record)
    assert await mail.delete(record.id) is True
    assert await mail.get(record.id) is None
    assert await mail.delete(record.id) is False
    assert events[-1] == {"type": "mail_deleted", "id": record.id, "app": "mailer"}


async def test_prune_keeps_the_newest_per_app_and_box_and_never_mail_still_to_send(mail: MailStore) -> None:
    now = time.time()
    kept = [message(created=now - i) for i in range(4)]
    queued = message(status="queued", created=now - 100 * 86400)
    inbox = [message(box="inbox", status="handled", created=now - i) for i in range(3)]
    for record in [*kept, queued, *inbox, message(app="other", created=now - 40 * 86400)]:
        await mail.insert(record)
    assert await mail.prune(kept=2, days=30) == 1 + 2 + 1
    left = {r.id for r in await mail.list(limit=100)}
    assert left == {kept[0].id, kept[1].id, queued.id, inbox[0].id, inbox[1].id}


async def test_a_failing_feed_does_not_fail_the_write(store: Store) -> None:
    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("subscriber down")

    mail = MailStore(store, broken)
    record = message()
    await mail.insert(record)
    assert await mail.get(record.id) == record


async def test_storing_mail_prunes_what_is_past_the_limits(store: Store) -> None:
    from jupyter_anvil.host.mail.store import PRUNE_EVERY

    mail = MailStore(store, kept=3, days=30)
    now = time.time()
    records = [message(box="inbox", status="handled", created=now - i) for i in range(PRUNE_EVERY)]
    for record in records:
        await mail.insert(record)
    assert {r.id for r in await mail.list(limit=500)} == {r.id for r in records[:3]}
