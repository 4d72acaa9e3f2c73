"""Sending mail through real SMTP relays: aiosmtpd servers this test starts on loopback
(in threads, ``aiosmtpd.controller.Controller``), driven by a real MailSender over a real
MailStore on a temporary SQLite file. No Jupyter server is needed for this layer; the
send host service end to end is in the kernel helper's tests.

Covered: the bytes the relay gets are the bytes given (Bcc gone, 8-bit text and leading
dots intact); a 550 refusal; a recipient refused among others; a relay down, then up
within the window (delivered once); a window that closes; a 451 then a 250; STARTTLS
with a self-signed certificate the test makes, and AUTH over it (right and wrong
password, never logged); implicit TLS (smtps://); a certificate not trusted; credentials
refused over a relay without STARTTLS; a queued record left by a previous run delivered
by a new MailSender's start().
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jupyter_anvil.errors import SendFailure
from jupyter_anvil.host.mail.outbound import MailSender
from jupyter_anvil.host.mail.records import MailRecord
from jupyter_anvil.host.mail.relay import RelayConfig
from jupyter_anvil.host.mail.store import MailStore, new_mail_id
from jupyter_anvil.host.mail.transport import SmtpRelay
from jupyter_anvil.host.store import Store

HOST = "127.0.0.1"
USER = "mailer@example.com"
PASSWORD = "Correct-Horse-Battery-9"  # the test asserts it appears in no log, error or record

RAW = (
    "From: Shop =?utf-8?q?Caf=C3=A9?= <shop@example.com>\r\n"
    "To: Ann <ann@example.org>\r\n"
    "Cc: bob@example.org\r\n"
    "Bcc: hidden@example.net\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Message-ID: <1700000000000-abc@anvil>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße aus dem Café.\r\n"
    ".a line that starts with a dot\r\n"
    "..and two\r\n"
    ".\r\n"
    "end\r\n"
).encode()
SENT = RAW.replace(b"Bcc: hidden@example.net\r\n", b"")
RECIPIENTS = ["ann@example.org", "bob@example.org", "hidden@example.net"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Recorder:
    """A relay's handler: keeps every message it accepts; refuses recipients in
    ``refuse`` (address -> reply) and answers DATA with ``data_replies`` in turn."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []
        self.refuse: dict[str, str] = {}
        self.data_replies: list[str] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            reply = self.data_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        self.received.append(envelope)
        return "250 2.0.0 Ok: queued as TEST123"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)


RelayFactory = Callable[..., tuple[Controller, Recorder]]


@pytest.fixture
def start_relay() -> Iterator[RelayFactory]:
    """Starts real relays on loopback (``port``, else a free one); stops them all at the end."""
    running: list[Controller] = []

    def start(port: int | None = None, **smtp_options: Any) -> tuple[Controller, Recorder]:
        recorder = Recorder()
        if smtp_options.pop("with_auth", False):
            smtp_options.update(auth_required=True, authenticator=recorder.authenticate)
        controller = Controller(recorder, hostname=HOST, port=port or free_port(), **smtp_options)
        controller.start()
        running.append(controller)
        return controller, recorder

    yield start
    for controller in running:
        controller.stop()


@pytest.fixture
async def mail(database_url: str) -> AsyncIterator[MailStore]:
    store = Store(database_url)
    store.create_schema()
    yield MailStore(store)
    store.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def sender(mail: MailStore, url: str, password: str | None = None, **options: Any) -> MailSender:
    relay_options = {k: options.pop(k) for k in ("ca_file", "verify_tls", "timeout") if k in options}
    config = RelayConfig.from_url(url, password, environ={}, **relay_options)
    options = {"retry_first": 0.1, "retry_most": 0.3, "retry_seconds": 10.0, **options}
    return MailSender(mail, SmtpRelay(config), **options)


async def only_record(mail: MailStore) -> MailRecord:
    (summary,) = await mail.list()
    record = await mail.get(summary.id)
    assert record is not None
    return record


# -- plain relays ---------------------------------------------------------------------------------
async def test_the_relay_gets_the_bytes_given_without_bcc(mail: MailStore, start_relay: RelayFactory) -> None:
    controller, relay = start_relay()
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    summary = await service.send("shop", RAW, "shop@example.com", RECIPIENTS, call_id="call-1")
    (envelope,) = relay.received
    assert envelope.original_content == SENT
    assert b"hidden@example.net" not in envelope.original_content and b"Bcc" not in envelope.original_content
    assert envelope.mail_from == "shop@example.com"
    assert envelope.rcpt_tos == RECIPIENTS  # the blind copy is in the envelope only
    assert (summary.box, summary.status, summary.attempts, summary.smtp_code) == ("sent", "sent", 1, 250)
    assert summary.outcome == "accepted by the relay: 250 2.0.0 Ok: queued as TEST123"
    assert summary.message_id == "<1700000000000-abc@anvil>"
    record = await only_record(mail)
    assert record.raw == SENT and record.call_id == "call-1"
    assert (record.subject, record.from_header) == ("Grüße", "Shop Café <shop@example.com>")


async def test_a_refusal_is_a_send_failure_with_the_relays_reply(mail: MailStore, start_relay: RelayFactory) -> None:
    controller, relay = start_relay()
    relay.refuse = {"ann@example.org": "550 5.1.1 <ann@example.org>: no such user"}
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    with pytest.raises(SendFailure) as caught:
        await service.send("shop", RAW, "shop@example.com", ["ann@example.org"])
    assert str(caught.value) == "The mail relay refused the message: 550 5.1.1 <ann@example.org>: no such user"
    record = await only_record(mail)
    assert (record.box, record.status, record.attempts, record.smtp_code) == ("outbox", "failed", 1, 550)
    assert record.outcome == str(caught.value)
    assert relay.received == []


async def test_a_refusal_at_data_is_final_too(mail: MailStore, start_relay: RelayFactory) -> None:
    controller, relay = start_relay()
    relay.data_replies = ["554 5.7.1 Message rejected as spam"]
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    with pytest.raises(SendFailure, match=r"refused the message: 554 5\.7\.1 Message rejected as spam"):
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert relay.received == []


async def test_some_recipients_refused_is_delivered(mail: MailStore, start_relay: RelayFactory) -> None:
    controller, relay = start_relay()
    relay.refuse = {"bob@example.org": "550 5.1.1 no such user"}
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    summary = await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert summary.status == "sent"
    assert "refused 1 recipients: bob@example.org: 550 5.1.1 no such user" in summary.outcome
    (envelope,) = relay.received
    assert envelope.rcpt_tos == ["ann@example.org", "hidden@example.net"]


async def test_a_deferral_is_retried_and_delivered_once(mail: MailStore, start_relay: RelayFactory) -> None:
    controller, relay = start_relay()
    relay.data_replies = ["451 4.3.0 try again later"]
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    summary = await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert (summary.status, summary.attempts) == ("sent", 2)
    assert len(relay.received) == 1


async def test_relay_down_then_up_within_the_window_delivers_once(mail: MailStore, start_relay: RelayFactory) -> None:
    port = free_port()
    service = sender(mail, f"smtp+plain://{HOST}:{port}")
    sending = asyncio.ensure_future(service.send("shop", RAW, "shop@example.com", RECIPIENTS))
    for _ in range(500):  # until an attempt has failed and been recorded
        listed = await mail.list()
        if listed and listed[0].attempts >= 1:
            break
        await asyncio.sleep(0.01)
    (waiting,) = await mail.list()
    assert waiting.status == "queued" and waiting.smtp_code is None
    assert "Connection refused" in waiting.outcome and waiting.next_attempt is not None
    _, relay = await asyncio.to_thread(start_relay, port)
    summary = await asyncio.wait_for(sending, 10)
    assert summary.status == "sent" and summary.attempts >= 2
    await asyncio.sleep(0.5)  # no second copy comes later either
    assert len(relay.received) == 1
    assert relay.received[0].original_content == SENT


async def test_the_window_closes_on_a_relay_that_stays_down(mail: MailStore) -> None:
    port = free_port()
    service = sender(mail, f"smtp+plain://{HOST}:{port}", retry_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(SendFailure) as caught:
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert 0.9 < time.monotonic() - started < 5
    assert str(caught.value).startswith(f"Could not reach the mail relay smtp+plain://{HOST}:{port} for 1 s: ")
    assert "Connection refused" in str(caught.value)
    record = await only_record(mail)
    assert record.status == "failed" and record.attempts >= 3 and record.outcome == str(caught.value)


async def test_a_queued_record_left_by_a_previous_run_is_sent_at_start(
    mail: MailStore, start_relay: RelayFactory
) -> None:
    controller, relay = start_relay()
    now = time.time()
    record = MailRecord(
        id=new_mail_id(),
        app="shop",
        box="outbox",
        status="queued",
        created=now - 60,
        updated=now - 50,
        message_id="<1700000000000-abc@anvil>",
        envelope_from="shop@example.com",
        recipients=RECIPIENTS,
        from_header="Shop",
        to_header="Ann",
        subject="Grüße",
        size=len(SENT),
        attempts=1,
        outcome="could not connect: Connection refused",
        next_attempt=now - 40,
        deadline=now - 1,  # passed while no server ran: it still gets its attempt
        owner="gone-server",
        raw=SENT,
    )
    await mail.insert(record)
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}", server_id="new-server")
    await service.start()
    for _ in range(500):
        stored = await mail.get(record.id)
        if stored is not None and stored.status == "sent":
            break
        await asyncio.sleep(0.01)
    assert stored is not None
    assert (stored.box, stored.status, stored.attempts, stored.owner) == ("sent", "sent", 2, "new-server")
    (envelope,) = relay.received
    assert envelope.original_content == SENT and envelope.rcpt_tos == RECIPIENTS
    await service.stop()
    # a second start finds nothing queued: nothing is sent twice
    again = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    await again.start()
    await asyncio.sleep(0.2)
    assert len(relay.received) == 1


# -- TLS and AUTH ------------------------------------------------------------------------------
async def test_auth_over_starttls_with_a_self_signed_certificate(
    mail: MailStore, start_relay: RelayFactory, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    controller, relay = start_relay(tls_context=server_tls(certificate), require_starttls=True, with_auth=True)
    url = f"smtp://{USER.replace('@', '%40')}@{HOST}:{controller.port}"
    service = sender(mail, url, PASSWORD, ca_file=str(certificate[0]))
    summary = await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert summary.status == "sent"
    assert relay.logins == [(USER, PASSWORD)]
    (envelope,) = relay.received
    assert envelope.original_content == SENT
    assert PASSWORD not in caplog.text and PASSWORD not in repr(service.transport)


async def test_a_wrong_password_is_refused_and_never_shown(
    mail: MailStore, start_relay: RelayFactory, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    controller, relay = start_relay(tls_context=server_tls(certificate), require_starttls=True, with_auth=True)
    wrong = "Wrong-Password-Xyzzy"
    url = f"smtp://{USER.replace('@', '%40')}:{wrong}@{HOST}:{controller.port}"
    service = sender(mail, url, ca_file=str(certificate[0]))
    with pytest.raises(SendFailure) as caught:
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert str(caught.value).startswith(
        f"Could not send the message: the relay refused the credentials for {USER}: 535"
    )
    record = await only_record(mail)
    assert record.status == "failed" and record.smtp_code == 535 and record.attempts == 1
    # smtplib tries each mechanism the relay offers (PLAIN, then LOGIN), then gives up
    assert relay.logins and set(relay.logins) == {(USER, wrong)} and relay.received == []
    for text in (str(caught.value), record.outcome, caplog.text, repr(service.transport)):
        assert wrong not in text


async def test_an_untrusted_certificate_is_not_accepted(
    mail: MailStore, start_relay: RelayFactory, certificate: tuple[Path, Path]
) -> None:
    controller, relay = start_relay(tls_context=server_tls(certificate), require_starttls=True)
    service = sender(mail, f"smtp://{HOST}:{controller.port}", retry_seconds=0.5)  # the system's CAs only
    with pytest.raises(SendFailure, match="the relay's TLS certificate was not accepted"):
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert relay.received == []


async def test_implicit_tls(mail: MailStore, start_relay: RelayFactory, certificate: tuple[Path, Path]) -> None:
    controller, relay = start_relay(ssl_context=server_tls(certificate))
    service = sender(mail, f"smtps://{HOST}:{controller.port}", ca_file=str(certificate[0]))
    assert (await service.send("shop", RAW, "shop@example.com", RECIPIENTS)).status == "sent"
    assert relay.received[0].original_content == SENT


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # what this test is about
async def test_credentials_are_not_sent_where_starttls_is_not_offered(
    mail: MailStore, start_relay: RelayFactory
) -> None:
    controller, relay = start_relay(auth_require_tls=False, with_auth=True)
    service = sender(mail, f"smtp://{USER.replace('@', '%40')}@{HOST}:{controller.port}", PASSWORD)
    with pytest.raises(SendFailure, match="does not offer STARTTLS: refusing to send the credentials"):
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert relay.logins == []
    # smtp+plain is the one way to log in without TLS (a local test relay)
    service = sender(mail, f"smtp+plain://{USER.replace('@', '%40')}@{HOST}:{controller.port}", PASSWORD)
    assert (await service.send("shop", RAW, "shop@example.com", RECIPIENTS)).status == "sent"
    assert relay.logins == [(USER, PASSWORD)]


# -- relays that are slow, wide or international --------------------------------------------------
async def test_a_silent_relay_times_out_without_blocking_the_event_loop(mail: MailStore) -> None:
    with socket.socket() as silent:  # takes connections (the kernel's backlog) and never says a word
        silent.bind((HOST, 0))
        silent.listen(8)
        url = f"smtp+plain://{HOST}:{silent.getsockname()[1]}"
        service = sender(mail, url, timeout=0.4, retry_seconds=1.2)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        with pytest.raises(SendFailure) as caught:
            await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
        elapsed = time.monotonic() - started
        ticker.cancel()
    assert "the relay did not answer within" in str(caught.value)
    assert str(caught.value).startswith(f"Could not reach the mail relay {url} for 1 s")
    assert ticks > elapsed / 0.01 / 4  # the loop kept turning while smtplib waited on its thread


async def test_two_hundred_recipients(mail: MailStore, start_relay: RelayFactory) -> None:
    controller, relay = start_relay()
    recipients = [f"reader{i}@example.org" for i in range(200)]
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    assert (await service.send("shop", RAW, "shop@example.com", recipients)).status == "sent"
    (envelope,) = relay.received
    assert envelope.rcpt_tos == recipients


async def test_international_addresses_need_smtputf8(mail: MailStore, start_relay: RelayFactory) -> None:
    recipients = ["jörg@bücher.example"]
    controller, relay = start_relay(enable_SMTPUTF8=True)
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    assert (await service.send("shop", RAW, "shop@example.com", recipients)).status == "sent"
    assert relay.received[0].rcpt_tos == recipients and "SMTPUTF8" in relay.received[0].mail_options
    controller, relay = start_relay(enable_SMTPUTF8=False)
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    with pytest.raises(SendFailure, match="does not take non-ASCII addresses"):
        await service.send("shop", RAW, "shop@example.com", recipients)
    assert relay.received == []


@pytest.mark.parametrize(("greeting", "final"), [(b"554 5.7.1 no service for you", True), (b"421 busy", False)])
async def test_a_relay_that_refuses_at_its_greeting(mail: MailStore, greeting: bytes, final: bool) -> None:
    with socket.socket() as listener:  # a peer that answers each connection with one line, then hangs up
        listener.bind((HOST, 0))
        listener.listen(8)
        listener.settimeout(0.05)
        done = threading.Event()

        def serve() -> None:
            while not done.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.sendall(greeting + b"\r\n")

        server = asyncio.ensure_future(asyncio.to_thread(serve))
        service = sender(mail, f"smtp+plain://{HOST}:{listener.getsockname()[1]}", retry_seconds=0.5)
        with pytest.raises(SendFailure) as caught:
            await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
        done.set()
        await server
    record = await only_record(mail)
    if final:
        assert str(caught.value) == "The mail relay refused the message: 554 5.7.1 no service for you"
        assert record.attempts == 1
    else:
        assert "kept deferring the message for 0 s: 421 busy" in str(caught.value)
        assert record.attempts > 1


async def test_every_recipient_refused(mail: MailStore, start_relay: RelayFactory) -> None:
    controller, relay = start_relay()
    relay.refuse = {r: "550 5.1.1 no such user" for r in RECIPIENTS}
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}")
    with pytest.raises(SendFailure) as caught:
        await service.send("shop", RAW, "shop@example.com", RECIPIENTS)
    assert str(caught.value) == (
        "The mail relay refused the message: 550 5.1.1 no such user (all 3 recipients were refused: 550)"
    )
    # one of them only deferred: the whole message is tried again
    relay.refuse = {"ann@example.org": "550 5.1.1 no such user", "bob@example.org": "450 4.2.0 mailbox busy"}
    service = sender(mail, f"smtp+plain://{HOST}:{controller.port}", retry_seconds=0.3)
    with pytest.raises(SendFailure, match=r"kept deferring the message for 0 s: 450 4\.2\.0 mailbox busy"):
        await service.send("shop", RAW, "shop@example.com", ["ann@example.org", "bob@example.org"])
    assert relay.received == []
