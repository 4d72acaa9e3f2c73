"""The sending service with a real MailStore (SQLite) and a scripted transport standing in
for the relay: checks on what is sent, the backoff, retries and their records, the
window closing, the caller going away, the bound on connections, stop and restart.
Against real SMTP relays: tests/test_mail_relay.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from jupyter_anvil.errors import SendFailure
from jupyter_anvil.host.mail.outbound import KEPT_OUTCOME, STOPPED, MailSender, retry_delay
from jupyter_anvil.host.mail.outgoing import check_address, prepare
from jupyter_anvil.host.mail.store import MailStore
from jupyter_anvil.host.mail.transport import (
    Attempt,
    Delivered,
    Outbox,
    PermanentFailure,
    TemporaryFailure,
    Transport,
)
from jupyter_anvil.host.store import Store

RAW = (
    b"From: Shop <shop@example.com>\r\n"
    b"To: Ann <ann@example.org>\r\n"
    b"Bcc: secret@example.net\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?=\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"\r\n"
    b"Hello\r\n"
)
SENT_RAW = RAW.replace(b"Bcc: secret@example.net\r\n", b"")
RECIPIENTS = ["ann@example.org", "secret@example.net"]


class ScriptedRelay(Transport):
    """Answers each attempt with the next outcome of ``script`` (the last one repeats);
    ``gate``, when set, holds every attempt until it opens."""

    shown = "smtp+plain://scripted:25"

    def __init__(self, *script: Attempt, gate: asyncio.Event | None = None) -> None:
        self.script = list(script) or [Delivered(250, "250 OK")]
        self.gate = gate
        self.attempts: list[tuple[bytes, str, list[str]]] = []
        self.running = 0
        self.most_running = 0

    async def deliver(
        self, raw: bytes, envelope_from: str, recipients: list[str], timeout: float | None = None
    ) -> Attempt:
        self.attempts.append((raw, envelope_from, recipients))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]
        finally:
            self.running -= 1


@pytest.fixture
def mail(store: Store) -> MailStore:
    return MailStore(store)


def sender(mail: MailStore, transport: Transport, **options: Any) -> MailSender:
    options = {"retry_first": 0.01, "retry_most": 0.05, "retry_seconds": 5.0, **options}
    return MailSender(mail, transport, **options)


# -- backoff ---------------------------------------------------------------------------------
def test_retry_delay_doubles_with_jitter_and_a_cap() -> None:
    assert [retry_delay(n, jitter=0.5) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert retry_delay(1, jitter=0.0) == 0.75 and retry_delay(1, jitter=1.0) == 1.25
    assert retry_delay(5, jitter=1.0) == 20.0 and retry_delay(6, jitter=0.0) == 24.0
    assert retry_delay(1000) == 30.0  # no overflow
    for _ in range(100):
        assert 0.75 <= retry_delay(1) <= 1.25


# -- checks before storing ---------------------------------------------------------------------
def test_prepare_drops_bcc_and_keeps_every_other_byte() -> None:
    out = prepare(RAW, "shop@example.com", RECIPIENTS, mail_id="x" * 26)
    assert out.raw == SENT_RAW
    assert out.message_id == "<m1@example.com>"
    assert (out.from_header, out.to_header, out.subject) == ("Shop <shop@example.com>", "Ann <ann@example.org>", "Café")


def test_prepare_drops_folded_and_resent_bcc_and_fixes_line_ends() -> None:
    raw = b"From: a@b.c\nBcc: x@y.z,\n  w@y.z\nResent-Bcc: v@y.z\nBCC : u@y.z\nSubject: s\n\nbody\nline\n"
    out = prepare(raw, "a@b.c", ["x@y.z"], mail_id="m" * 26)
    assert out.raw == b"Message-ID: <" + b"m" * 26 + b"@b.c>\r\nFrom: a@b.c\r\nSubject: s\r\n\r\nbody\r\nline\r\n"


def test_prepare_keeps_a_message_with_headers_only() -> None:
    out = prepare(b"From: a@b.c\r\nMessage-ID: <1@b.c>\r\n", "a@b.c", ["x@y.z"], mail_id="m" * 26)
    assert out.raw == b"From: a@b.c\r\nMessage-ID: <1@b.c>\r\n"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "empty"),
        (b"\r\n\r\nbody only", "no header"),
        (b"just some text\r\n\r\nbody", "Line 1 of the message's header is not a header field"),
        (b"From: a@b.c\r\nno colon here\r\n\r\nbody", "Line 2"),
        (b"To: x@y.z\r\n\r\nbody", "no From header"),
        ("From: a@b.c\r\n\r\ntext", "must be bytes"),
        (None, "must be bytes"),
    ],
)
def test_prepare_refuses_what_is_not_a_message(raw: Any, says: str) -> None:
    with pytest.raises(SendFailure, match=says):
        prepare(raw, "a@b.c", ["x@y.z"], mail_id="m" * 26)


def test_prepare_bounds_size_and_recipients() -> None:
    with pytest.raises(SendFailure, match=r"The message is 0\.0 MB; the most that may be sent is 0\.0 MB"):
        prepare(RAW, "a@b.c", ["x@y.z"], mail_id="m" * 26, max_bytes=len(RAW) - 1)
    with pytest.raises(SendFailure, match="no recipients"):
        prepare(RAW, "a@b.c", [], mail_id="m" * 26)
    with pytest.raises(SendFailure, match="has 3 recipients; at most 2"):
        prepare(RAW, "a@b.c", ["a@x.y", "b@x.y", "c@x.y"], mail_id="m" * 26, max_recipients=2)
    # repeats are one recipient
    assert prepare(RAW, "a@b.c", ["a@x.y", "A@X.Y", "a@x.y"], mail_id="m" * 26).recipients == ["a@x.y"]
    with pytest.raises(SendFailure, match="must be a list"):
        prepare(RAW, "a@b.c", "a@x.y", mail_id="m" * 26)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "plain",
        "@example.com",
        "a@",
        "a b@example.com",
        "a@exa mple.com",
        "a@example.com>\r\nRCPT TO:<victim@x.y",
        "a@example.com\n",
        "<a@example.com>",
        "Ann <a@example.com>",
        "a@-example.com",
        "a@example..com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
        "a\x00@example.com",
    ],
)
def test_addresses_refused(address: str) -> None:
    with pytest.raises(SendFailure, match="Invalid email address"):
        check_address(address)


@pytest.mark.parametrize(
    "address",
    ["a@example.com", "first.last+tag@sub.example.co.uk", "jörg@bücher.example", "a@[127.0.0.1]", "a@localhost"],
)
def test_addresses_taken(address: str) -> None:
    assert check_address(address) == address


def test_a_non_string_address_is_refused() -> None:
    with pytest.raises(SendFailure, match="must be a string, not int"):
        check_address(5)


# -- the service -------------------------------------------------------------------------------
async def test_outbox_keeps_the_message_and_sends_nothing(mail: MailStore) -> None:
    service = sender(mail, Outbox())
    summary = await service.send("shop", RAW, "shop@example.com", RECIPIENTS, call_id="c1")
    assert (summary.box, summary.status, summary.outcome) == ("outbox", "kept", KEPT_OUTCOME)
    record = await mail.get(summary.id)
    assert record is not None and record.raw == SENT_RAW and b"secret@" not in record.raw
    assert record.recipients == RECIPIENTS and record.call_id == "c1" and record.message_id == "<m1@example.com>"
    assert record.deadline is None and record.next_attempt is None


async def test_a_malformed_message_is_refused_and_nothing_stored(mail: MailStore) -> None:
    service = sender(mail, ScriptedRelay())
    with pytest.raises(SendFailure, match="Invalid email address"):
        await service.send("shop", RAW, "shop@example.com", ["bad address"])
    assert await mail.list() == []


async def test_temporary_failures_are_retried_and_recorded(mail: MailStore) -> None:
    relay = ScriptedRelay(TemporaryFailure(None, "connection refused"), TemporaryFailure(451, "451 later"))
    relay.script.append(Delivered(250, "250 queued as X"))
    service = sender(mail, relay, server_id="me")
    summary = await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert (summary.box, summary.status, summary.attempts, summary.smtp_code) == ("sent", "sent", 3, 250)
    assert summary.outcome == "accepted by the relay: 250 queued as X" and summary.next_attempt is None
    assert summary.owner == "me"
    assert [a[0] for a in relay.attempts] == [SENT_RAW] * 3


async def test_a_permanent_refusal_fails_at_once(mail: MailStore) -> None:
    relay = ScriptedRelay(PermanentFailure(550, "550 5.1.1 <ann@example.org>: no such user"))
    service = sender(mail, relay)
    with pytest.raises(SendFailure) as caught:
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert str(caught.value) == "The mail relay refused the message: 550 5.1.1 <ann@example.org>: no such user"
    (summary,) = await mail.list()
    assert (summary.box, summary.status, summary.attempts, summary.smtp_code) == ("outbox", "failed", 1, 550)
    assert summary.outcome == str(caught.value)
    assert len(relay.attempts) == 1


async def test_the_window_closes(mail: MailStore) -> None:
    relay = ScriptedRelay(TemporaryFailure(None, "could not connect: Connection refused"))
    service = sender(mail, relay, retry_seconds=0.3)
    with pytest.raises(SendFailure) as caught:
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert str(caught.value) == (
        "Could not reach the mail relay smtp+plain://scripted:25 for 0 s: could not connect: Connection refused"
    )
    (summary,) = await mail.list()
    assert summary.status == "failed" and summary.attempts == len(relay.attempts) >= 3


async def test_a_caller_that_goes_away_does_not_stop_the_delivery(mail: MailStore, settle: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    relay = ScriptedRelay(gate=gate)
    service = sender(mail, relay)
    caller = asyncio.ensure_future(service.send("shop", RAW, "shop@example.com", RECIPIENTS))
    await settle(lambda: len(relay.attempts) == 1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.set()
    await settle(lambda: not service._deliveries)
    (summary,) = await mail.list()
    assert summary.status == "sent"


async def test_concurrent_sends_are_bounded(mail: MailStore, settle: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    relay = ScriptedRelay(gate=gate)
    service = sender(mail, relay, connections=2)
    sends = [asyncio.ensure_future(service.send("shop", RAW, "shop@example.com", RECIPIENTS)) for _ in range(6)]
    await settle(lambda: len(relay.attempts) == 2)
    await asyncio.sleep(0.05)
    assert relay.running == 2
    gate.set()
    results = await asyncio.gather(*sends)
    assert relay.most_running == 2 and {r.status for r in results} == {"sent"}


async def test_stop_leaves_waiting_mail_queued_and_start_sends_it(mail: MailStore) -> None:
    relay = ScriptedRelay(TemporaryFailure(None, "down"), Delivered(250, "250 OK"))
    first = sender(mail, relay, retry_first=30.0, retry_most=30.0)
    caller = asyncio.ensure_future(first.send("shop", RAW, "shop@example.com", RECIPIENTS))
    for _ in range(200):
        if (await mail.list()) and (await mail.list())[0].attempts == 1:
            break
        await asyncio.sleep(0.01)
    await first.stop(timeout=1.0)
    with pytest.raises(SendFailure, match="stays queued"):
        await caller
    (summary,) = await mail.list()
    assert (summary.status, summary.attempts) == ("queued", 1)
    with pytest.raises(SendFailure, match="stopping"):
        await first.send("shop", RAW, "shop@example.com", RECIPIENTS)

    second = sender(mail, relay, server_id="second")
    await second.start()
    for _ in range(200):
        if (await mail.list())[0].status == "sent":
            break
        await asyncio.sleep(0.01)
    (summary,) = await mail.list()
    assert (summary.status, summary.attempts, summary.owner) == ("sent", 2, "second")
    assert len(relay.attempts) == 2
    await second.stop()
    assert STOPPED.startswith("The server stopped")


async def test_stop_waits_for_an_attempt_under_way(mail: MailStore, settle: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    relay = ScriptedRelay(gate=gate)
    service = sender(mail, relay)
    caller = asyncio.ensure_future(service.send("shop", RAW, "shop@example.com", RECIPIENTS))
    await settle(lambda: len(relay.attempts) == 1)
    stopping = asyncio.ensure_future(service.stop(timeout=2.0))
    await asyncio.sleep(0.05)
    gate.set()
    await stopping
    assert (await caller).status == "sent"


async def test_mail_deleted_while_it_waits_is_not_sent(mail: MailStore) -> None:
    relay = ScriptedRelay(TemporaryFailure(None, "down"), Delivered(250, "250 OK"))
    service = sender(mail, relay, retry_first=0.3, retry_most=0.3)
    caller = asyncio.ensure_future(service.send("shop", RAW, "shop@example.com", RECIPIENTS))
    for _ in range(200):
        listed = await mail.list()
        if listed and listed[0].attempts == 1:
            break
        await asyncio.sleep(0.01)
    assert await mail.delete(listed[0].id)
    with pytest.raises(SendFailure, match="deleted"):
        await caller
    assert len(relay.attempts) == 1


async def test_start_with_the_outbox_leaves_queued_mail_alone(mail: MailStore) -> None:
    relay = ScriptedRelay(TemporaryFailure(None, "down"))
    first = sender(mail, relay, retry_first=30.0, retry_most=30.0)
    caller = asyncio.ensure_future(first.send("shop", RAW, "shop@example.com", RECIPIENTS))
    for _ in range(200):
        if (await mail.list()) and (await mail.list())[0].attempts == 1:
            break
        await asyncio.sleep(0.01)
    await first.stop()
    with pytest.raises(SendFailure):
        await caller
    await sender(mail, Outbox()).start()
    (summary,) = await mail.list()
    assert summary.status == "queued"


async def test_the_messages_waiting_for_the_relay_are_bounded(mail: MailStore, settle: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    relay = ScriptedRelay(gate=gate)
    service = sender(mail, relay, max_waiting=2)
    waiting = [asyncio.ensure_future(service.send("shop", RAW, "shop@example.com", RECIPIENTS)) for _ in range(2)]
    await settle(lambda: len(relay.attempts) == 2)
    with pytest.raises(SendFailure, match="2 messages are waiting for the mail relay already"):
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    gate.set()
    await asyncio.gather(*waiting)
    assert (await service.send("shop", RAW, "shop@example.com", RECIPIENTS)).status == "sent"
    assert len(await mail.list()) == 3  # the refused one was never stored


async def test_start_leaves_the_mail_of_a_live_server_alone(mail: MailStore) -> None:
    relay = ScriptedRelay(TemporaryFailure(None, "down"))
    for owner in ("live", "gone"):
        first = sender(mail, relay, retry_first=30.0, retry_most=30.0, server_id=owner)
        caller = asyncio.ensure_future(first.send("shop", RAW, "shop@example.com", RECIPIENTS))
        for _ in range(200):
            if any(s.owner == owner and s.attempts == 1 for s in await mail.list()):
                break
            await asyncio.sleep(0.01)
        await first.stop()
        with pytest.raises(SendFailure):
            await caller

    async def gone(owner: str) -> bool:
        return owner == "gone"

    relay.script = [Delivered(250, "250 OK")]
    await sender(mail, relay, server_id="third", owner_is_gone=gone).start()
    for _ in range(200):
        if any(s.status == "sent" for s in await mail.list()):
            break
        await asyncio.sleep(0.01)
    by_status = {s.status: s.owner for s in await mail.list()}
    assert by_status == {"sent": "third", "queued": "live"}


def test_the_size_bound_holds_after_line_ends_are_fixed() -> None:
    raw = b"From: a@b.c\nMessage-ID: <1@b.c>\n\n" + b"x\n" * 100
    fixed = prepare(raw, "a@b.c", ["x@y.z"], mail_id="m" * 26).raw
    assert len(fixed) > len(raw)
    assert prepare(raw, "a@b.c", ["x@y.z"], mail_id="m" * 26, max_bytes=len(fixed)).raw == fixed
    with pytest.raises(SendFailure, match="the most that may be sent"):
        prepare(raw, "a@b.c", ["x@y.z"], mail_id="m" * 26, max_bytes=len(fixed) - 1)
