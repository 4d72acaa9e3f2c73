"""The inbound SMTP server's side (host/mail/inbound.py): a real aiosmtpd server on
loopback, real SMTP clients (smtplib, raw sockets), the real MailStore on a temporary
SQLite file. Only the handler runner is a stand-in (it answers a fixed code per app): what
it does is host/mail/handling.py's, tested with real kernels in tests/test_mail_inbound.py."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from jupyter_anvil.host.mail import inbound
from jupyter_anvil.host.mail.dkim_check import records_resolver
from jupyter_anvil.host.mail.inbound import STOPPED_OUTCOME, MailServer, is_mail
from jupyter_anvil.host.mail.records import MailRecord
from jupyter_anvil.host.mail.routing import MailRouter
from jupyter_anvil.host.mail.store import MailStore, new_mail_id
from jupyter_anvil.host.store import Store
from jupyter_anvil.protocol import DkimResult, MailEnvelope

from .test_unit_mail_dkim import MESSAGE, resolver, signed

APPS = ["support", "sales"]


@dataclass
class Run:
    app: str
    record: MailRecord
    dkim: DkimResult
    envelope: MailEnvelope
    peer: str | None
    stored_status: str | None  # the record's status in the store when the handler ran


@dataclass
class FixedHandling:
    """Answers each app's messages with a fixed SMTP code, and remembers what it was given."""

    mail: MailStore
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    delay: float = 0.0

    async def handle(
        self, app: str, record: MailRecord, dkim: DkimResult, envelope: MailEnvelope, *, peer: str | None = None
    ) -> tuple[int, str]:
        stored = await self.mail.get(record.id)
        self.runs.append(Run(app, record, dkim, envelope, peer, stored.status if stored else None))
        await asyncio.sleep(self.delay)
        code, text = self.answers.get(app, (250, "2.0.0 OK: handled"))
        await self.mail.update(record.id, {"status": "handled" if code == 250 else "failed", "smtp_code": code})
        return code, text


@dataclass
class Harness:
    server: MailServer
    handling: FixedHandling
    mail: MailStore

    @property
    def port(self) -> int:
        return self.server.port

    async def send(self, to: list[str], message: bytes = MESSAGE, sender: str = "alice@example.com") -> Any:
        """smtplib's sendmail, on a thread (the server runs on this loop)."""

        def work() -> Any:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                return client.sendmail(sender, to, message)

        return await asyncio.to_thread(work)

    async def session(self, lines: list[bytes], read_greeting: bool = True) -> list[str]:
        """Send raw lines, one at a time, reading a reply after each: the replies."""

        def work() -> list[str]:
            replies = []
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                reader = sock.makefile("rb")
                if read_greeting:
                    replies.append(read_reply(reader))
                for line in lines:
                    sock.sendall(line)
                    if line.endswith(b"\r\n"):
                        replies.append(read_reply(reader))
            return replies

        return await asyncio.to_thread(work)

    async def inbox(self) -> list[MailRecord]:
        return [r for s in await self.mail.list(box="inbox") if (r := await self.mail.get(s.id)) is not None]


def read_reply(reader: Any) -> str:
    """One SMTP reply (its last line if multi-line), "" if the server closed the connection."""
    while True:
        line = reader.readline().decode("ascii", "replace")
        if len(line) < 4 or line[3] != "-":
            return line.strip()


@pytest.fixture
async def harness(store: Store) -> AsyncIterator[Callable[..., Any]]:
    servers: list[MailServer] = []

    async def make(**options: Any) -> Harness:
        mail = MailStore(store)
        handling = FixedHandling(mail)
        router = MailRouter("mail.test", options.pop("routes", {}), lambda: APPS)
        server = MailServer(mail, router, handling, port=0, hostname="mx.test", **options)
        await server.start()
        servers.append(server)
        return Harness(server, handling, mail)

    yield make
    for server in servers:
        await server.stop()


async def test_routed_mail_is_stored_then_handled(harness: Callable[..., Any]) -> None:
    h = await harness()
    assert await h.send(["support@anywhere.org"]) == {}  # nothing refused
    (run,) = h.handling.runs
    assert run.app == "support" and run.stored_status == "received"  # stored before the handler ran
    assert run.envelope == {"from_address": "alice@example.com", "recipient": "support@anywhere.org"}
    assert run.peer == "127.0.0.1"
    assert run.dkim == {"valid_from_sender": False, "domains": []}
    (record,) = await h.inbox()
    assert record.raw == MESSAGE and record.size == len(MESSAGE)
    assert (record.app, record.box, record.status, record.envelope_from) == (
        "support",
        "inbox",
        "handled",
        "alice@example.com",
    )
    assert (record.subject, record.message_id, record.recipients) == (
        "Hello",
        "<1@example.com>",
        ["support@anywhere.org"],
    )
    assert record.from_header == "Alice <alice@example.com>" and record.to_header == "support@apps.test"


async def test_an_unrouted_recipient_is_refused_at_rcpt(harness: Callable[..., Any]) -> None:
    h = await harness()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await h.send(["nobody@example.com"])
    code, text = refused.value.recipients["nobody@example.com"]
    assert code == 550 and b"No app here takes mail for <nobody@example.com>" in text
    assert h.handling.runs == [] and await h.inbox() == []
    # beside a routed one: the routed one is delivered, the other refused
    assert await h.send(["nobody@example.com", "sales+x@y.z"]) == {"nobody@example.com": (550, text)}
    assert [r.app for r in h.handling.runs] == ["sales"]


async def test_one_run_per_app(harness: Callable[..., Any]) -> None:
    h = await harness()
    await h.send(["support@a.org", "SUPPORT+tag@b.org", "x@sales.mail.test", "support@a.org"])
    assert sorted(r.app for r in h.handling.runs) == ["sales", "support"]
    records = {r.app: r for r in await h.inbox()}
    assert records["support"].recipients == ["support@a.org", "SUPPORT+tag@b.org"]  # the repeat taken once
    assert records["sales"].recipients == ["x@sales.mail.test"]
    assert {r.envelope["recipient"] for r in h.handling.runs} == {"support@a.org", "x@sales.mail.test"}


@pytest.mark.parametrize(
    ("answers", "reply"),
    [
        ({"support": (554, "Not today")}, (554, b"Not today")),
        ({"support": (551, "5.7.1 This application cannot handle incoming email")}, (551, b"5.7.1 This")),
        ({"support": (451, "4.3.0 later")}, (451, b"4.3.0 later")),
        ({"sales": (554, "no")}, (554, b"no")),  # one app refused it: the message is refused
        ({"sales": (554, "no"), "support": (451, "later")}, (451, b"later")),  # a retry beats a refusal
    ],
)
async def test_the_handler_outcome_is_the_reply(
    harness: Callable[..., Any], answers: dict[str, tuple[int, str]], reply: tuple[int, bytes]
) -> None:
    h = await harness()
    h.handling.answers = answers
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await h.send(["support@a.org", "sales@a.org"])
    assert refused.value.smtp_code == reply[0] and refused.value.smtp_error.startswith(reply[1])


async def test_dkim_is_checked_before_the_handler(harness: Callable[..., Any]) -> None:
    h = await harness(dnsfunc=records_resolver(resolver("example.com")))
    await h.send(["support@a.org"], signed(MESSAGE, "example.com"))
    assert h.handling.runs[0].dkim == {"valid_from_sender": True, "domains": ["example.com"]}


async def test_recipients_per_message_are_capped(harness: Callable[..., Any]) -> None:
    """The issue's 200 recipients: the first 100 taken, the rest told 452 (send them later)."""
    h = await harness()
    to = [f"support+{i}@a.org" for i in range(200)]
    refused = await h.send(to)
    assert len(refused) == 100 and {code for code, _ in refused.values()} == {452}
    assert set(refused) == set(to[100:])
    (record,) = await h.inbox()
    assert record.recipients == to[:100] and len(h.handling.runs) == 1
    assert await h.send(["sales@a.org"]) == {}  # still serving


async def test_a_declared_size_over_the_limit_is_refused_before_data(harness: Callable[..., Any]) -> None:
    h = await harness(max_bytes=10_000)
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # smtplib declares SIZE: refused at MAIL
        await h.send(["support@a.org"], MESSAGE + b"x" * 20_000 + b"\r\n")
    assert refused.value.smtp_code == 552
    replies = await h.session([b"EHLO c\r\n"])
    assert replies[1] == "250 HELP"  # the last line of the EHLO reply; SIZE is among them
    assert await h.inbox() == [] and h.handling.runs == []


async def test_undeclared_data_over_the_limit_is_refused_and_dropped(harness: Callable[..., Any]) -> None:
    h = await harness(max_bytes=10_000)
    body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 100
    replies = await h.session(
        [b"HELO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<support@a.org>\r\n", b"DATA\r\n", body + b".\r\n"]
    )
    assert replies[1:5] == ["250 mx.test", "250 OK", "250 2.1.5 OK", "354 End data with <CR><LF>.<CR><LF>"]
    assert replies[5].startswith("552")
    assert await h.inbox() == [] and h.handling.runs == []
    assert await h.send(["support@a.org"]) == {}  # still serving


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02\xff\xfe binary \x80\x81\r\n",  # binary garbage
        b"",  # no message at all
        b"\r\nno headers, only a body\r\n",
        b"Just text: but the first line is not a header\r\n",
    ],
)
async def test_what_is_not_mail_is_refused(harness: Callable[..., Any], data: bytes) -> None:
    h = await harness()
    replies = await h.session(
        [b"HELO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<support@a.org>\r\n", b"DATA\r\n", data + b".\r\n"]
    )
    assert replies[5] == "554 5.6.0 The message is not mail: it does not begin with a header"
    assert await h.inbox() == [] and h.handling.runs == []
    assert await h.send(["support@a.org"]) == {}  # still serving


async def test_a_message_of_headers_only_is_mail(harness: Callable[..., Any]) -> None:
    h = await harness()
    assert await h.send(["support@a.org"], b"Subject: nothing more\r\n") == {}
    assert len(h.handling.runs) == 1


async def test_binary_garbage_and_commands_out_of_order(harness: Callable[..., Any]) -> None:
    h = await harness()
    replies = await h.session(
        [
            b"DATA\r\n",  # before HELO
            b"HELO c\r\n",
            b"RCPT TO:<support@a.org>\r\n",  # before MAIL
            b"DATA\r\n",  # before RCPT
            b"\xff\xfe\x00garbage\r\n",
            b"MAIL FROM:<a@b.c>\r\n",
            b"MAIL FROM:<a@b.c>\r\n",  # twice
            b"DATA\r\n",  # still no recipient
        ]
    )
    codes = [r[:3] for r in replies]
    assert codes == ["220", "503", "250", "503", "503", "500", "250", "503", "503"]
    assert await h.send(["support@a.org"]) == {}  # still serving


async def test_a_connection_dropped_during_data_stores_nothing(harness: Callable[..., Any]) -> None:
    h = await harness()

    def work() -> None:
        with socket.create_connection(("127.0.0.1", h.port), timeout=10) as sock:
            sock.sendall(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<support@a.org>\r\nDATA\r\nSubject: cut\r\n\r\nhal")

    await asyncio.to_thread(work)
    await asyncio.sleep(0.2)
    assert await h.inbox() == [] and h.handling.runs == []
    assert await h.send(["support@a.org"]) == {}


async def test_connections_are_bounded(harness: Callable[..., Any]) -> None:
    h = await harness(max_connections=2)
    held = [socket.create_connection(("127.0.0.1", h.port), timeout=10) for _ in range(2)]
    try:
        for sock in held:
            assert (await asyncio.to_thread(sock.recv, 1024)).startswith(b"220")
        third = await h.session([], read_greeting=True)
        assert third == ["421 4.7.0 Too many connections; try again later"]
    finally:
        for sock in held:
            sock.close()
    await asyncio.sleep(0.2)
    assert await h.send(["support@a.org"]) == {}  # the slots are free again


async def test_an_idle_connection_is_closed(harness: Callable[..., Any]) -> None:
    h = await harness(idle_timeout=0.3)

    def work() -> bytes:
        with socket.create_connection(("127.0.0.1", h.port), timeout=10) as sock:
            greeting = sock.recv(1024)
            assert greeting.startswith(b"220")
            return sock.recv(1024)  # b"": closed by the server

    assert await asyncio.to_thread(work) == b""


async def test_noops_cannot_hold_a_connection_forever(harness: Callable[..., Any]) -> None:
    h = await harness()
    replies = await h.session([b"NOOP\r\n"] * 51)
    assert replies[-1].startswith("421")


async def test_start_marks_what_a_previous_run_left_unanswered(store: Store, harness: Callable[..., Any]) -> None:
    mail = MailStore(store)
    left = MailRecord(
        id=new_mail_id(), app="support", box="inbox", status="received", created=1.0, updated=1.0, message_id=None,
        envelope_from="a@b.c", recipients=["support@a.org"], from_header="", to_header="", subject="", size=3,
        owner="a-previous-run", raw=b"x: y",
    )  # fmt: skip
    handled = MailRecord(**{**vars(left), "id": new_mail_id(), "status": "handled"})
    await mail.insert(left)
    await mail.insert(handled)
    await harness(server_id="this-run")
    swept = await mail.get(left.id)
    assert swept is not None and (swept.status, swept.outcome) == ("failed", STOPPED_OUTCOME)
    kept = await mail.get(handled.id)
    assert kept is not None and kept.status == "handled"


async def test_ensure_started_is_idempotent_and_stop_closes(store: Store) -> None:
    mail = MailStore(store)
    server = MailServer(mail, MailRouter(None, {}, lambda: APPS), FixedHandling(mail), port=0)
    assert not server.running and server.port == 0
    await asyncio.gather(server.ensure_started(), server.ensure_started())
    port = server.port
    assert server.running and port != 0
    await server.ensure_started()
    assert server.port == port
    await server.stop()
    await server.stop()  # twice: no matter
    with pytest.raises(OSError):
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 2)


async def test_stop_leaves_a_message_in_handling_received(harness: Callable[..., Any]) -> None:
    """Stopped under a handler: never answered 250, so the sender retries; the record stays
    ``received`` until the next start marks it."""
    h = await harness()
    h.handling.delay = 30
    sending = asyncio.ensure_future(h.send(["support@a.org"]))
    while not h.handling.runs:
        await asyncio.sleep(0.01)
    await h.server.stop()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        await sending
    (record,) = await h.inbox()
    assert record.status == "received"


def test_is_mail() -> None:
    assert is_mail(b"Subject: x\r\n\r\nbody") and is_mail(b"X-Odd-Name!  : v\r\n")
    assert not is_mail(b"") and not is_mail(b" Subject: x") and not is_mail(b": x") and not is_mail(b"\x80: x")


async def test_a_sender_that_hangs_up_does_not_cut_the_handler_short(harness: Callable[..., Any]) -> None:
    """Stored, the message's handler runs to its end and its outcome is kept; the sender,
    never told 250, sends it again."""
    h = await harness()
    h.handling.delay = 1.0
    handler_runs = threading.Event()

    def work() -> None:
        with socket.create_connection(("127.0.0.1", h.port), timeout=10) as sock:
            sock.sendall(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<support@a.org>\r\nDATA\r\n")
            sock.sendall(b"Subject: gone\r\n\r\nbye\r\n.\r\n")
            assert handler_runs.wait(10)  # hung up while the handler runs

    hanging_up = asyncio.ensure_future(asyncio.to_thread(work))
    while not h.handling.runs:
        await asyncio.sleep(0.01)
    handler_runs.set()
    await hanging_up
    await asyncio.sleep(0.2)
    (record,) = await h.inbox()
    assert record.status == "received"  # the handler still runs
    await asyncio.sleep(1.2)
    (record,) = await h.inbox()
    assert (record.subject, record.status) == ("gone", "handled")


async def test_messages_in_memory_at_once_are_bounded(
    harness: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbound, "DATA_WAIT", 0.3)
    h = await harness(max_transactions=1)
    h.handling.delay = 1.0
    first = asyncio.ensure_future(h.send(["support@a.org"]))
    while not h.handling.runs:
        await asyncio.sleep(0.01)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await h.send(["sales@a.org"])
    assert refused.value.smtp_code == 451 and b"Too many messages in progress" in refused.value.smtp_error
    assert await first == {}
    h.handling.delay = 0
    assert await h.send(["sales@a.org"]) == {}  # its turn came


async def test_a_port_in_use_is_logged_not_raised(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        mail = MailStore(store)
        server = MailServer(mail, MailRouter(None, {}, lambda: APPS), FixedHandling(mail), port=port)
        assert await server.ensure_started() is False
        assert not server.running and f"cannot receive mail on 127.0.0.1:{port}" in caplog.text


async def test_a_slow_dkim_check_does_not_eat_the_handlers_time(
    harness: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbound, "DKIM_TIMEOUT", 0.2)

    def slow_dns(name: bytes, timeout: float = 5) -> bytes | None:
        time.sleep(1.0)
        return None

    h = await harness(dnsfunc=slow_dns)
    started = time.monotonic()
    assert await h.send(["support@a.org"], signed(MESSAGE, "example.com")) == {}
    assert time.monotonic() - started < 0.9
    assert h.handling.runs[0].dkim == {"valid_from_sender": False, "domains": []}


class FailingSecondInsert(MailStore):
    inserts = 0

    async def insert(self, record: MailRecord) -> None:
        self.inserts += 1
        if self.inserts == 2:
            raise OSError("disk full")
        await super().insert(record)


async def test_a_message_not_stored_for_every_app_is_451_and_runs_no_handler(store: Store) -> None:
    mail = FailingSecondInsert(store)
    handling = FixedHandling(mail)
    server = MailServer(mail, MailRouter(None, {}, lambda: APPS), handling, port=0)
    await server.start()
    try:
        h = Harness(server, handling, mail)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await h.send(["support@a.org", "sales@a.org"])
        assert refused.value.smtp_code == 451 and handling.runs == []
        (record,) = await h.inbox()  # the one stored says why no handler ran
        assert (record.status, record.outcome) == ("failed", inbound.NOT_STORED_OUTCOME)
    finally:
        await server.stop()
