"""The mail a crashed server was sending, taken over by the live servers sharing the store:
each message by one of them (a conditional update of its owner), never by the sender of
its own mail a second time."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_anvil.host.mail.outbound import MailSender
from jupyter_anvil.host.mail.records import MailRecord
from jupyter_anvil.host.mail.store import MailStore, new_mail_id
from jupyter_anvil.host.mail.transport import Attempt, Delivered, Transport
from jupyter_anvil.host.store import Store

RAW = b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: s\r\nMessage-ID: <m@example.com>\r\n\r\nHello\r\n"


class Relay(Transport):
    shown = "smtp+plain://counting:25"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def deliver(
        self, raw: bytes, envelope_from: str, recipients: list[str], timeout: float | None = None
    ) -> Attempt:
        self.sent.append(raw)
        await asyncio.sleep(0)
        return Delivered(250, "250 OK")


def queued(owner: str | None, now: float = 1.0) -> MailRecord:
    return MailRecord(
        id=new_mail_id(), app="shop", box="outbox", status="queued", created=now, updated=now,
        message_id="<m@example.com>", envelope_from="shop@example.com", recipients=["ann@example.org"],
        from_header="shop@example.com", to_header="ann@example.org", subject="s", size=len(RAW),
        next_attempt=now, deadline=now + 3600, owner=owner, raw=RAW,
    )  # fmt: skip


def live_sender(store: MailStore, relay: Relay, server_id: str) -> MailSender:
    async def gone(owner: str) -> bool:
        return owner == "crashed"

    options: dict[str, Any] = {"retry_first": 0.01, "retry_most": 0.05, "server_id": server_id}
    return MailSender(store, relay, owner_is_gone=gone, **options)


async def settle(mail: MailStore) -> None:
    for _ in range(300):
        if all(s.status != "queued" for s in await mail.list()):
            return
        await asyncio.sleep(0.01)


async def test_two_live_servers_take_over_a_crashed_ones_mail_and_send_it_once(store: Store) -> None:
    mail, relay = MailStore(store), Relay()
    for _ in range(5):
        await mail.insert(queued("crashed"))
    await mail.insert(queued("live"))  # a live server's, being sent by it: left alone
    first, second = live_sender(mail, relay, "first"), live_sender(mail, relay, "second")
    await asyncio.gather(first.resume(), second.resume())
    await settle(mail)
    owners = sorted((s.status, s.owner) for s in await mail.list())
    assert [o for o in owners if o[0] == "sent"] and len(relay.sent) == 5
    assert ("queued", "live") in owners and len(owners) == 6
    assert {o for o in owners if o[0] == "sent"} <= {("sent", "first"), ("sent", "second")}


async def test_resume_leaves_a_servers_own_queued_mail_to_its_send(store: Store) -> None:
    mail, relay = MailStore(store), Relay()
    await mail.insert(queued("me"))  # stored by send(), whose delivery is about to start
    await live_sender(mail, relay, "me").resume()
    await asyncio.sleep(0.05)
    assert relay.sent == [] and [s.status for s in await mail.list()] == ["queued"]


async def test_a_mail_taken_over_is_not_taken_again(store: Store) -> None:
    mail = MailStore(store)
    record = queued("crashed")
    await mail.insert(record)
    assert await mail.take_over(record.id, "crashed", "first")
    assert not await mail.take_over(record.id, "crashed", "second")  # its owner is "first" now
    await mail.update(record.id, {"status": "sent"})
    assert not await mail.take_over(record.id, "first", "second")  # sent: nothing to take over
