"""Inbound mail end to end: a real jupyter-anvil server with its SMTP server on a free
loopback port, real senders (smtplib, swaks, raw sockets), real ``@email.handle_message``
handlers on real kernels.

The handler of the app ``inbox`` records what it was given in ``seen.jsonl`` beside its
notebook and answers by the message's subject; ``strict`` has
``handle_message(require_dkim=True)``; ``quiet`` has no handler. DKIM keys are looked up in
a file of TXT records (``--AnvilApp.mail_dkim_test_records``), never in real DNS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from unit.test_unit_mail_dkim import resolver, signed

HANDLER = """
import json, time
from jupyter_anvil import email, server

def note(app, msg):
    seen = {
        "app": app, "subject": msg.subject, "text": msg.text,
        "envelope": {"from_address": msg.envelope.from_address, "recipient": msg.envelope.recipient},
        "dkim": {"valid_from_sender": msg.dkim.valid_from_sender, "domains": msg.dkim.domains},
        "client": server.context.client.type, "caller": server.context.remote_caller.type,
        "trusted": server.context.remote_caller.is_trusted, "stack": [f.type for f in server.context.call_stack],
    }
    with open("seen.jsonl", "a") as f:
        f.write(json.dumps(seen) + "\\n")

@email.handle_message
def handle(msg):
    note("inbox", msg)
    subject = msg.subject or ""
    print("handling", subject)
    if subject == "reject":
        raise email.DeliveryFailure("Not wanted here")
    if subject == "reject550":
        raise email.DeliveryFailure("No such person", 550)
    if subject.startswith("crash"):
        raise ValueError("boom in the handler")
    if subject.startswith("slow"):
        time.sleep(20)
    if subject == "please reply":
        msg.reply(text="Thanks, got it.")
"""

STRICT = """
import json
from jupyter_anvil import email

@email.handle_message(require_dkim=True)
def handle(msg):
    with open("seen.jsonl", "a") as f:
        f.write(json.dumps({"app": "strict", "subject": msg.subject, "dkim": msg.dkim.domains}) + "\\n")
"""

NO_HANDLER = """
from jupyter_anvil import server

@server.callable
def hello():
    return "hi"
"""


class Mail:
    def __init__(self, server: AnvilServer, port: int, root: Path) -> None:
        self.server, self.port, self.root = server, port, root

    def send(self, to: list[str], subject: str = "ok", body: str = "Hello.", **headers: str) -> Any:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "Alice <alice@example.com>", ", ".join(to), subject
        for name, value in headers.items():
            message[name] = value
        message.set_content(body)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            return client.send_message(message, "alice@example.com", to)

    def send_raw(self, to: list[str], raw: bytes, sender: str = "alice@example.com") -> Any:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            return client.sendmail(sender, to, raw)

    def seen(self) -> list[dict[str, Any]]:
        path = self.root / "seen.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def inbox(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.server.admin("anvil/api/mail", box="inbox", limit=500, **params)["messages"])

    def logs(self, call_id: str | None, stream: str | None = None) -> list[dict[str, Any]]:
        """The app log's records of a handler run, once there are some (it is written in batches)."""
        deadline = time.monotonic() + 10
        while True:
            records = self.server.admin("anvil/api/logs", app="inbox")["records"]
            found = [r for r in records if r["call_id"] == call_id and stream in (None, r["stream"])]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def record(self, subject: str) -> dict[str, Any]:
        (record,) = [m for m in self.inbox() if m["subject"] == subject]
        return record


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mail]:
    roots: list[Path] = []

    def write(root: Path) -> None:
        roots.append(root)
        write_notebook(root / "inbox.ipynb", [HANDLER], {"kernels": {"min": 1, "max": 2}})
        write_notebook(root / "quiet.ipynb", [NO_HANDLER], {"kernels": {"min": 1, "max": 1}})
        write_notebook(root / "strict.ipynb", [STRICT], {"kernels": {"min": 1, "max": 1}})

    records = tmp_path_factory.mktemp("dkim") / "records.json"
    records.write_text(json.dumps(resolver("example.com")))
    options = (  # the SMTP port: each test server has its own (conftest.AnvilServer.smtp_port)
        "--AnvilApp.smtp_server_ip=127.0.0.1",
        f"--AnvilApp.mail_dkim_test_records={records}",
        "--AnvilApp.mail_handler_timeout=4",
        "--AnvilApp.mail_domain=apps.test",
    )
    with private_server(tmp_path_factory, "mail-in", write, *options) as server:
        server.wait_until_loaded(("inbox", "quiet", "strict"))
        wait_for_smtp(server.smtp_port)
        yield Mail(server, server.smtp_port, roots[0])


def wait_for_smtp(port: int, timeout: float = 30) -> None:
    """The SMTP server starts once an app with a handler is loaded: wait for it to listen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if sock.recv(1024).startswith(b"220"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no SMTP server on port {port} after {timeout} s")
        time.sleep(0.2)


def test_mail_reaches_the_handler(mail: Mail) -> None:
    assert mail.send(["inbox@example.org"], subject="first") == {}
    (seen,) = [s for s in mail.seen() if s["subject"] == "first"]
    assert seen["envelope"] == {"from_address": "alice@example.com", "recipient": "inbox@example.org"}
    assert seen["text"] == "Hello.\n" and seen["dkim"] == {"valid_from_sender": False, "domains": []}
    assert (seen["client"], seen["caller"], seen["trusted"]) == ("email", "email_server", True)
    assert seen["stack"] == ["email_server"]
    record = mail.record("first")
    assert record["app"] == "inbox" and record["box"] == "inbox"
    assert (record["status"], record["smtp_code"], record["recipients"]) == ("handled", 250, ["inbox@example.org"])
    # what it printed, in the app log under the handler's name
    printed = mail.logs(record["call_id"])
    assert [(r["function"], r["text"]) for r in printed] == [("email:handle_message", "handling first\n")]


def test_plus_addressing_and_two_recipients_of_one_app_run_once(mail: Mail) -> None:
    assert mail.send(["inbox+a@example.org", "INBOX+b@other.test"], subject="twice") == {}
    assert len([s for s in mail.seen() if s["subject"] == "twice"]) == 1
    assert mail.record("twice")["recipients"] == ["inbox+a@example.org", "INBOX+b@other.test"]


def test_the_app_subdomain_of_the_mail_domain_routes(mail: Mail) -> None:
    assert mail.send(["Anyone@INBOX.apps.test"], subject="by subdomain") == {}
    (seen,) = [s for s in mail.seen() if s["subject"] == "by subdomain"]
    assert seen["envelope"]["recipient"] == "Anyone@INBOX.apps.test"


def test_swaks_delivers(mail: Mail) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is installed by scripts/test (Debian package)"
    result = subprocess.run(
        [swaks, "--to", "inbox@example.net", "--from", "bob@example.com", "--server", "127.0.0.1",
         "--port", str(mail.port), "--header", "Subject: from swaks", "--body", "Sent by swaks."],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250" in result.stdout
    (seen,) = [s for s in mail.seen() if s["subject"] == "from swaks"]
    assert seen["envelope"]["from_address"] == "bob@example.com"


def test_an_unknown_recipient_is_refused_at_rcpt(mail: Mail) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        mail.send(["nobody@example.org"], subject="nobody")
    assert refused.value.recipients["nobody@example.org"][0] == 550
    assert not [s for s in mail.seen() if s["subject"] == "nobody"]


def test_an_app_without_a_handler_is_551(mail: Mail) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        mail.send(["quiet@example.org"], subject="to quiet")
    assert refused.value.smtp_code == 551
    assert refused.value.smtp_error.endswith(b"This application cannot handle incoming email")
    assert mail.record("to quiet")["status"] == "rejected"


@pytest.mark.parametrize(
    ("subject", "code", "text", "status"),
    [
        ("reject", 554, b"Not wanted here", "rejected"),
        ("reject550", 550, b"No such person", "rejected"),
        ("crash", 451, b"4.3.0", "failed"),
    ],
)
def test_handler_outcomes(mail: Mail, subject: str, code: int, text: bytes, status: str) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        mail.send(["inbox@example.org"], subject=subject)
    assert refused.value.smtp_code == code and text in refused.value.smtp_error
    assert b"boom" not in refused.value.smtp_error and b"Traceback" not in refused.value.smtp_error
    record = mail.record(subject)
    assert (record["status"], record["smtp_code"]) == (status, code)


def test_a_crash_is_the_authors_to_read(mail: Mail) -> None:
    with pytest.raises(smtplib.SMTPDataError):
        mail.send(["inbox@example.org"], subject="crash, read the log")
    record = mail.record("crash, read the log")
    assert "boom in the handler" in record["outcome"]
    traceback = mail.logs(record["call_id"], "traceback")
    assert traceback and traceback[0]["function"] == "email:handle_message"
    assert "ValueError: boom in the handler" in traceback[0]["text"]


def test_no_answer_in_time_is_451(mail: Mail) -> None:
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        mail.send(["inbox@example.org"], subject="slow")
    assert refused.value.smtp_code == 451 and time.monotonic() - started < 15
    assert mail.record("slow")["status"] == "failed"
    assert mail.send(["inbox@example.org"], subject="after slow") == {}  # another kernel serves on


def test_dkim_and_require_dkim(mail: Mail) -> None:
    message = (
        b"From: alice@example.com\r\nTo: strict@example.org\r\nSubject: dkim\r\nMessage-ID: <d1@example.com>\r\n"
        b"\r\nSigned.\r\n"
    )
    assert mail.send_raw(["inbox@example.org"], signed(message, "example.com")) == {}
    (seen,) = [s for s in mail.seen() if s["subject"] == "dkim" and s["app"] == "inbox"]
    assert seen["dkim"] == {"valid_from_sender": True, "domains": ["example.com"]}
    # handle_message(require_dkim=True): signed by the sender's domain, taken
    assert mail.send_raw(["strict@example.org"], signed(message.replace(b"<d1@", b"<d2@"), "example.com")) == {}
    assert [s for s in mail.seen() if s["app"] == "strict"] == [
        {"app": "strict", "subject": "dkim", "dkim": ["example.com"]}
    ]
    # unsigned: refused
    with pytest.raises(smtplib.SMTPDataError) as refused:
        mail.send_raw(["strict@example.org"], message.replace(b"<d1@", b"<d3@"))
    assert refused.value.smtp_code == 554 and b"No valid DKIM signature" in refused.value.smtp_error
    # signed by another domain than the sender's: refused too
    other = signed(
        message.replace(b"<d1@", b"<d4@").replace(b"From: alice@example.com", b"From: x@elsewhere.test"), "example.com"
    )
    with pytest.raises(smtplib.SMTPDataError) as refused:
        mail.send_raw(["strict@example.org"], other)
    assert refused.value.smtp_code == 554
    # a signed message changed on its way: refused
    tampered = signed(message.replace(b"<d1@", b"<d5@"), "example.com").replace(b"Signed.", b"Forged.")
    with pytest.raises(smtplib.SMTPDataError):
        mail.send_raw(["strict@example.org"], tampered)
    assert len([s for s in mail.seen() if s["app"] == "strict"]) == 1
    statuses = sorted(m["status"] for m in mail.inbox(app="strict"))
    assert statuses == ["handled", "rejected", "rejected", "rejected"]


def test_a_reply_lands_in_the_outbox(mail: Mail) -> None:
    assert mail.send(["inbox@example.org"], subject="please reply", **{"Message-ID": "<ask-1@example.com>"}) == {}
    deadline = time.monotonic() + 10
    while True:
        replies = [m for m in mail.server.admin("anvil/api/mail", box="outbox", app="inbox")["messages"]]
        if replies or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (reply,) = replies
    assert reply["subject"] == "please reply" and reply["recipients"] == ["alice@example.com"]
    assert reply["envelope_from"] == "inbox@example.org" and "inbox@example.org" in reply["from_header"]
    raw = httpx_get_raw(mail.server, reply["id"])
    assert b"In-Reply-To: <ask-1@example.com>" in raw and b"References: <ask-1@example.com>" in raw


def httpx_get_raw(server: AnvilServer, mail_id: str) -> bytes:
    response = httpx.get(
        f"{server.url}anvil/api/mail/{mail_id}/raw", headers={"Authorization": f"token {server.token}"}, timeout=30
    )
    response.raise_for_status()
    return response.content


def test_a_30_mb_message_is_refused_before_its_data(mail: Mail) -> None:
    big = b"From: a@example.com\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 31_000
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # SIZE declared: refused at MAIL FROM
        mail.send_raw(["inbox@example.org"], big)
    assert refused.value.smtp_code == 552 and time.monotonic() - started < 5
    # a sender that declares nothing: its data dropped as it comes, then 552
    replies = session(
        mail.port, [b"HELO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<inbox@x.y>\r\n", b"DATA\r\n", big + b".\r\n"]
    )
    assert replies[-1].startswith("552")
    assert not [m for m in mail.inbox() if m["subject"] == "big"]
    assert mail.send(["inbox@example.org"], subject="after big") == {}


def test_200_recipients(mail: Mail) -> None:
    to = [f"inbox+{i}@example.org" for i in range(200)]
    refused = mail.send(to, subject="crowd")
    assert len(refused) == 100 and {code for code, _ in refused.values()} == {452}
    assert len(mail.record("crowd")["recipients"]) == 100


@pytest.mark.parametrize(
    "data",
    [b"\x00\xff\xfe\x80 garbage \x01\x02\r\n", b"", b"\r\nbody without headers\r\n"],
    ids=["binary", "empty", "no-headers"],
)
def test_what_is_not_mail_is_refused_and_the_server_serves_on(mail: Mail, data: bytes) -> None:
    replies = session(
        mail.port, [b"HELO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<inbox@x.y>\r\n", b"DATA\r\n", data + b".\r\n"]
    )
    assert replies[-1].startswith("554 5.6.0")
    garbage = session(mail.port, [b"\xff\xfe\xfd\r\n", b"DATA\r\n", b"RCPT TO:<inbox@x.y>\r\n"])
    assert [r[:1] for r in garbage[1:]] == ["5", "5", "5"]
    assert mail.send(["inbox@example.org"], subject=f"after {len(data)}") == {}


def session(port: int, lines: list[bytes]) -> list[str]:
    """Send raw lines on one connection, reading a reply after each: the greeting and the replies."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        reader = sock.makefile("rb")
        replies.append(read_reply(reader))
        for line in lines:
            sock.sendall(line)
            replies.append(read_reply(reader))
    return replies


def read_reply(reader: Any) -> str:
    while True:
        line = reader.readline().decode("ascii", "replace")
        if len(line) < 4 or line[3] != "-":
            return line.strip()


def test_a_crash_under_a_handler_marks_its_message_failed_at_the_next_start(mail: Mail) -> None:
    """Last (it kills the server): a message whose handler had not answered when the server
    died was never answered 250 (its sender sends it again); its record, stored before the
    handler ran, is kept, and the next start says what became of it."""
    outcome: list[Any] = []

    def send() -> None:
        try:
            mail.send(["inbox@example.org"], subject="slow, then a restart")
        except Exception as e:  # what the sender saw
            outcome.append(e)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while not [s for s in mail.seen() if s["subject"] == "slow, then a restart"]:
        assert time.monotonic() < deadline, "the handler never ran"
        time.sleep(0.1)
    server = mail.server
    assert server.process is not None
    kernels = server.kernel_processes()
    server.process.kill()  # no stop: a crash
    server.process.wait(20)
    for pid in kernels:  # the kernels would outlive a crashed server: not this test's
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sender.join(30)
    assert outcome and isinstance(outcome[0], (smtplib.SMTPServerDisconnected, ConnectionError))
    mail.server.start(wait_for=("inbox",))
    wait_for_smtp(mail.port)
    record = mail.record("slow, then a restart")
    assert record["status"] == "failed" and record["outcome"] == "the server stopped before the handler answered"
