"""Email attacked from outside, as a tester who sees only the issue and the reference would.

A real server of this module's own (outbox transport) serves two apps: ``sender`` (server
functions that call ``email.send`` with whatever keywords a test gives, and say what came
of it) and ``inbox`` (an ``@email.handle_message`` handler that writes down every attribute
of the Message it gets, and replies when the subject asks). Mail goes in with real
smtplib and raw sockets; what goes out is read back through the admin API.

Every attack checks the server still serves a normal message afterwards. The relay side
is attacked with misbehaving relays on loopback (raw asyncio servers) driving a real
MailSender over a real MailStore, and a second real server relaying with a password.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from test_mail_inbound import read_reply, session, wait_for_smtp
from test_mail_relay import certificate  # noqa: F401 - a fixture: the relay's self-signed certificate
from unit.test_unit_mail_dkim import resolver, signed

SENDER = """
import asyncio
import json
from jupyter_anvil import email, server
from jupyter_anvil.media import BlobMedia

def media(spec):
    name, content_type, size = spec
    return BlobMedia(content_type, b"m" * size, name=name)

@server.callable
def send(kw):
    kw = dict(kw)
    if "attach" in kw:
        kw["attachments"] = [media(spec) for spec in kw.pop("attach")]
    if "attach_one" in kw:
        kw["attachments"] = media(kw.pop("attach_one"))
    if "attach_dict" in kw:
        kw["attachments"] = {key: media(spec) for key, spec in kw.pop("attach_dict").items()}
    if "inline" in kw:
        kw["inline_attachments"] = {key: media(spec) for key, spec in kw.pop("inline").items()}
    if kw.pop("surrogate", None):
        kw["subject"] = "bad \\udc80 bytes"
    try:
        return {"message_id": email.send(**kw).message_id}
    except (email.SendFailure, TypeError) as e:
        return {"error": type(e).__name__, "message": str(e)}
"""

INBOX = """
import json, time
from jupyter_anvil import email

def address(a):
    return None if a is None else [a.address, a.name, a.raw_value]

@email.handle_message
def handle(msg):
    seen = {
        "subject": msg.subject, "text": msg.text, "html": msg.html,
        "attachments": [[m.name, m.content_type, len(m.get_bytes())] for m in msg.attachments],
        "inline": sorted(msg.inline_attachments),
        "from": address(msg.addressees.from_address),
        "to": [address(a) for a in msg.addressees.to_addresses],
        "cc": [address(a) for a in msg.addressees.cc_addresses],
        "envelope": [msg.envelope.from_address, msg.envelope.recipient],
        "headers": len(msg.headers), "x_a": msg.list_header("X-A"), "first_x_a": msg.get_header("x-a"),
        "dkim": [msg.dkim.valid_from_sender, msg.dkim.domains],
    }
    subject = msg.subject or ""
    if subject.startswith("slow"):
        time.sleep(4)
    if subject.startswith("refuse"):
        raise email.DeliveryFailure("No thanks: " + subject, int(msg.get_header("X-Code", "550")))
    if "reply" in subject or msg.get_header("X-Reply"):
        try:
            seen["reply"] = msg.reply(text="Got it.")
        except email.SendFailure as e:
            seen["reply_error"] = str(e)
    with open("seen.jsonl", "a") as f:
        f.write(json.dumps(seen) + "\\n")
"""

STRICT = """
from jupyter_anvil import email

@email.handle_message(require_dkim=True)
def handle(msg):
    pass
"""

AUTH = {"Authorization": "token test-token-not-for-apps"}


class Attacked:
    def __init__(self, server: AnvilServer, root: Path) -> None:
        self.server, self.root, self.port = server, root, server.smtp_port

    def send(self, **kw: Any) -> dict[str, Any]:
        return self.server.call("sender", "send", kw)  # type: ignore[no-any-return]

    def outbox(self, message_id: str) -> bytes:
        (found,) = [m for m in self.mail(box="outbox") if m["message_id"] == message_id]
        return self.raw(found["id"])

    def mail(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.server.admin("anvil/api/mail", **{"limit": 500, **params})["messages"])

    def raw(self, mail_id: str) -> bytes:
        response = httpx.get(f"{self.server.url}anvil/api/mail/{mail_id}/raw", headers=AUTH, timeout=30)
        response.raise_for_status()
        return response.content

    def seen(self, subject: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            path = self.root / "seen.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            found = [json.loads(line) for line in lines if json.loads(line)["subject"] == subject]
            if found or time.monotonic() > deadline:
                assert found, f"the handler never saw {subject!r}"
                return found[-1]  # type: ignore[no-any-return]
            time.sleep(0.1)

    def deliver(self, raw: bytes, to: str = "inbox@example.org", sender: str = "alice@example.com") -> Any:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            return client.sendmail(sender, [to], raw)

    def still_serves(self, label: str) -> None:
        """A normal message after an attack: taken, and handled."""
        message = f"From: a@example.com\r\nTo: inbox@example.org\r\nSubject: after {label}\r\n\r\nok\r\n"
        assert self.deliver(message.encode()) == {}
        assert self.seen(f"after {label}")["text"] == "ok\n"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacked]:
    roots: list[Path] = []

    def write(root: Path) -> None:
        roots.append(root)
        write_notebook(root / "sender.ipynb", [SENDER], {"kernels": {"min": 1, "max": 1}})
        write_notebook(root / "inbox.ipynb", [INBOX], {"kernels": {"min": 1, "max": 2}})
        write_notebook(root / "strict.ipynb", [STRICT], {"kernels": {"min": 1, "max": 1}})

    records = tmp_path_factory.mktemp("dkim-attack") / "records.json"
    records.write_text(json.dumps(resolver("example.com", "relay.net")))
    options = (
        "--AnvilApp.mail_domain=apps.test",
        "--AnvilApp.mail_from_domain=apps.test",
        "--AnvilApp.mail_handler_timeout=10",
        f"--AnvilApp.mail_dkim_test_records={records}",
    )
    with private_server(tmp_path_factory, "mail-attack", write, *options) as server:
        server.wait_until_loaded(("sender", "inbox", "strict"))
        wait_for_smtp(server.smtp_port)
        yield Attacked(server, roots[0])


def header_lines(raw: bytes) -> list[str]:
    """The header's fields, unfolded: one string per field."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    fields: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


# -- send: every keyword, wrong types and edges -------------------------------------------------------
INJECTION = "x\r\nBcc: evil@attacker.test\r\nX-Injected: yes"

REFUSED = [
    ({"to": ""}, "SendFailure", "No recipients"),
    ({"to": None}, "SendFailure", "No recipients"),
    ({"to": []}, "SendFailure", "No recipients"),
    ({"to": 5}, "SendFailure", "'to' must be a string"),
    ({"to": [5]}, "SendFailure", "'to' must be a string"),
    ({"to": {"a": "b"}}, "SendFailure", "'to' must be a string"),
    ({"to": "not an address"}, "SendFailure", "Invalid email address: not an address"),
    ({"to": "a@b.com", "cc": "a@@b.com"}, "SendFailure", "Invalid email address: a@@b.com"),
    ({"to": "a@b.com", "bcc": "x@"}, "SendFailure", "Invalid email address: x@"),
    ({"to": f"Eve{INJECTION} <a@b.com>"}, "SendFailure", "Invalid email address"),
    ({"to": f"a@b.com{INJECTION}"}, "SendFailure", "Invalid email address"),
    ({"to": "a@b.com", "from_address": f"me@apps.test{INJECTION}"}, "SendFailure", "Invalid email address"),
    ({"to": "a@b.com", "reply_to": f"r@b.com{INJECTION}"}, "SendFailure", "Invalid email address"),
    ({"to": [f"a{i}@b.com" for i in range(101)]}, "SendFailure", "Too many recipients"),
    ({"to": ["a@b.com"] * 20000}, "SendFailure", "Too many recipients"),
    ({"to": "a@b.com", "subject": "s" * 10_001}, "SendFailure", "'subject' is too long"),
    ({"to": "a@b.com", "subject": 5}, "SendFailure", "'subject' must be a string"),
    ({"to": "a@b.com", "text": ["x"]}, "SendFailure", "'text' must be a string"),
    ({"to": "a@b.com", "html": 1.5}, "SendFailure", "'html' must be a string"),
    ({"to": "a@b.com", "references": 7}, "SendFailure", "'references' must be a string"),
    ({"to": "a@b.com", "in_reply_to": ["<a@b>"]}, "SendFailure", "'in_reply_to' must be a string"),
    ({"to": "a@b.com", "attachments": "file.txt"}, "SendFailure", "'attachments' must be a Media"),
    ({"to": "a@b.com", "attachments": [1, 2]}, "SendFailure", "'attachments' must be a Media"),
    ({"to": "a@b.com", "attach_dict": {"a": ["a.txt", "text/plain", 3]}}, "SendFailure", "'attachments' must be"),
    ({"to": "a@b.com", "inline_attachments": ["x"]}, "SendFailure", "'inline_attachments' must be a dict"),
    ({"to": "a@b.com", "inline": {"a\r\nBcc: e@x.test": ["i.png", "image/png", 3]}}, "SendFailure", "Invalid inline"),
    ({"to": "a@b.com", "inline": {"": ["i.png", "image/png", 3]}}, "SendFailure", "Invalid inline"),
    (
        {"to": "a@b.com", "attach": [["big.bin", "application/octet-stream", 30 * 1024 * 1024]]},
        "SendFailure",
        "too big",
    ),
    ({"to": "a@b.com", "surrogate": True}, "SendFailure", "not valid Unicode"),
    ({"to": "a@b.com", "unknown_keyword": 1}, "TypeError", "unexpected keyword argument 'unknown_keyword'"),
    ({"to": "a@b.com", "from_address": "a@b@c"}, "SendFailure", "Invalid email address"),
    ({"to": "a@xn--.com"}, "SendFailure", "Invalid email address"),
    ({"to": "x" * 300 + "@b.com"}, "SendFailure", "Invalid email address"),
]


@pytest.mark.parametrize(("kw", "error", "text"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_bad_send_keywords_are_a_clear_failure_in_the_kernel(
    target: Attacked, kw: dict[str, Any], error: str, text: str
) -> None:
    started = time.monotonic()
    answer = target.send(**kw)
    assert answer.get("error") == error, answer
    assert text in answer["message"], answer
    assert len(answer["message"]) < 2000  # a 20000-address list is not echoed back
    assert time.monotonic() - started < 30


def test_header_injection_through_every_text_keyword_stays_in_its_header(target: Attacked) -> None:
    answer = target.send(
        to="victim@example.org",
        subject=INJECTION,
        from_name=INJECTION,
        in_reply_to=f"<a@b>{INJECTION}",
        references=[f"<r1@b>{INJECTION}", "<r2@b>"],
        text=INJECTION,
        attach=[[f"file{INJECTION}.txt", f"text/plain{INJECTION}", 5]],
    )
    raw = target.outbox(answer["message_id"])
    fields = header_lines(raw)
    names = [field.split(":", 1)[0].lower() for field in fields]
    assert "bcc" not in names and "x-injected" not in names, fields
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head and b"\r\nX-Injected:" not in head
    parsed = message_from_bytes(raw, policy=default_policy)
    assert "Bcc: evil" in str(parsed["Subject"]) and "\n" not in str(parsed["Subject"])
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_content_type() == "application/octet-stream"  # a type with a line break is no type
    assert "\n" not in (attachment.get_filename() or "")
    assert sorted(attachment.keys()) == ["Content-Disposition", "Content-Transfer-Encoding", "Content-Type"]


ACCEPTED: list[tuple[dict[str, Any], Any]] = [
    ({"to": "a@b.com", "subject": "s" * 10_000}, lambda p: len(str(p["Subject"])) == 10_000),
    ({"to": "Jörg Müller <joerg@bücher.de>", "subject": "Grüße ✓", "from_name": "Zoë"},
     lambda p: str(p["To"]) == "Jörg Müller <joerg@xn--bcher-kva.de>" and str(p["Subject"]) == "Grüße ✓"),
    ({"to": '"Doe, John" <j@b.com>, k@b.com', "cc": ["c@b.com", "d@b.com"], "bcc": "hidden@b.com"},
     lambda p: p["Bcc"] is None and len(p["To"].addresses) == 2 and len(p["Cc"].addresses) == 2),
    ({"to": "john@example.com (John Doe)"}, lambda p: p["To"].addresses[0].addr_spec == "john@example.com"),
    ({"to": "a@b.com", "reply_to": ["r1@b.com", "R Two <r2@b.com>"]}, lambda p: len(p["Reply-To"].addresses) == 2),
    ({"to": "a@b.com", "attach_one": ["", "", 10]},
     lambda p: [a.get_filename() for a in p.iter_attachments()] == ["Attachment 1"]),
    ({"to": "a@b.com", "attach": [[None, "multipart/mixed", 10], ["w.x", "no slash", 2]]},
     lambda p: [a.get_content_type() for a in p.iter_attachments()] == ["application/octet-stream"] * 2),
    ({"to": "a@b.com", "attach": [[f"f{i}", "text/plain", 10] for i in range(1000)]},
     lambda p: len(list(p.iter_attachments())) == 1000),
    ({"to": "a@b.com", "html": '<img src="cid:logo">', "inline": {"<logo>": ["l.png", "image/png", 20]}},
     lambda p: p.get_body(("related",)) is not None),
    ({"to": "a@[127.0.0.1]", "text": "", "html": ""}, lambda p: str(p["To"]) == "a@[127.0.0.1]"),
    ({"to": "a@b.com", "in_reply_to": "   ", "references": []}, lambda p: p["In-Reply-To"] is None),
    ({"to": "a@b.com", "from_address": "support"}, lambda p: str(p["From"]) == "support@apps.test"),
]  # fmt: skip


@pytest.mark.parametrize(("kw", "check"), ACCEPTED, ids=[str(i) for i in range(len(ACCEPTED))])
def test_edge_values_that_are_fine_build_a_correct_message(target: Attacked, kw: dict[str, Any], check: Any) -> None:
    answer = target.send(**kw)
    assert "message_id" in answer, answer
    raw = target.outbox(answer["message_id"])
    assert raw.isascii() and b"\r\nBcc:" not in raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = message_from_bytes(raw, policy=default_policy)
    assert parsed.get_content_type() == "multipart/mixed"
    assert check(parsed), raw[:3000]


# -- Message: odd mail reaches the handler, and reply() answers it ----------------------------------------
def mime(subject: str, body: bytes, headers: bytes = b"From: Ann <ann@example.com>\r\n") -> bytes:
    return headers + f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '-')}@example.com>\r\n".encode() + body


ODD = {
    "nested reply": (
        b"Content-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\nContent-Type: multipart/alternative; boundary=B\r\n"
        b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nplain\r\n--B\r\nContent-Type: text/html\r\n\r\n<b>h</b>\r\n--B--"
        b"\r\n--A\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.com\r\nSubject: inner\r\n\r\ninner body\r\n"
        b"--A--\r\n",
        lambda s: s["text"] == "plain" and s["html"] == "<b>h</b>" and s["attachments"][0][1] == "message/rfc822",
    ),
    "qp reply": (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"h=C3=A9llo=\r\n world\r\n",
        lambda s: s["text"] == "héllo world\n",
    ),
    "base64 reply": (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naMOpbGxv\r\n",
        lambda s: s["text"] == "héllo",
    ),
    "broken charset reply": (
        b'Content-Type: text/plain; charset="x-klingon"\r\n\r\n\xff\xfe hi\r\n',
        lambda s: s["text"].endswith(" hi\n"),
    ),
    "folded addresses reply": (
        b'To: a@example.org,\r\n "B, Bee" <b@example.org>\r\nCc: "A Long\r\n Name" <c@example.org>\r\n\r\nbody\r\n',
        lambda s: (
            [a[0] for a in s["to"]] == ["a@example.org", "b@example.org"]
            and s["to"][1][1] == "B, Bee"
            and s["cc"] == [["c@example.org", "A Long Name", "A Long Name <c@example.org>"]]
        ),
    ),
    "duplicate headers reply": (
        b"X-A: 1\r\nX-A: 2\r\n\r\nbody\r\n",
        lambda s: s["x_a"] == ["1", "2"] and s["first_x_a"] == "1",
    ),
    "reply-to list reply": (
        b'Reply-To: r@example.net, "Zed, Z" <z@example.net>\r\nReferences: <r1@x>\r\n <r2@x>\r\n\r\nbody\r\n',
        lambda s: s["reply"] is None,
    ),
    "huge header reply": (
        b"X-Big: " + b"\r\n ".join([b"y" * 70] * 3000) + b"\r\n\r\nbody\r\n",
        lambda s: s["reply"] is None,
    ),
    "long thread reply": (
        b"References: " + b"\r\n ".join(b"<%d@thread.example>" % i for i in range(2000)) + b"\r\n\r\nbody\r\n",
        lambda s: s["reply"] is None,
    ),
}


@pytest.mark.parametrize("subject", list(ODD))
def test_odd_mail_reaches_the_handler_whole_and_reply_answers_it(target: Attacked, subject: str) -> None:
    body, check = ODD[subject]
    assert target.deliver(mime(subject, body)) == {}
    seen = target.seen(subject)
    assert check(seen), seen
    assert "reply_error" not in seen, seen
    message_id = f"<{subject.replace(' ', '-')}@example.com>"
    replies = [m for m in target.mail(box="outbox", app="inbox") if m["subject"] == subject]
    assert len(replies) == 1, replies
    raw = target.raw(replies[0]["id"])
    parsed = message_from_bytes(raw, policy=default_policy)
    assert str(parsed["In-Reply-To"]) == message_id
    assert str(parsed["References"]).split()[-1] == message_id
    assert str(parsed["From"]) == "inbox@example.org"


def nested(depth: int) -> bytes:
    """A body of multiparts nested ``depth`` deep (the stdlib parses them recursively)."""
    head = b"Content-Type: multipart/mixed; boundary=B0\r\n\r\n"
    levels = b"".join(
        b"--B%d\r\nContent-Type: multipart/mixed; boundary=B%d\r\n\r\n" % (i, i + 1) for i in range(depth)
    )
    return head + levels + b"--B%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % depth


@pytest.mark.parametrize(
    ("subject", "body", "text"),
    [
        ("nested 3000 deep", nested(3000), None),
        ("rfc822 3000 deep", b"Content-Type: message/rfc822\r\n\r\n" * 3000 + b"x\r\n", None),
        ("charset with a nul", b'Content-Type: text/plain; charset="utf\x008"\r\n\r\nhi\r\n', "hi\n"),
        ("duplicate fields", b"X-A: first\r\nX-A: second\r\n\r\nbody\r\n", "body\n"),
    ],
)
def test_mail_the_parser_chokes_on_is_handled_listed_and_read(
    target: Attacked, subject: str, body: bytes, text: str | None
) -> None:
    assert target.deliver(mime(subject, body)) == {}
    seen = target.seen(subject)  # the handler has the headers, at least
    assert seen["from"][0] == "ann@example.com" and seen["text"] == text
    (record,) = [m for m in target.mail(box="inbox") if m["subject"] == subject]  # listed by its subject
    detail = httpx.get(f"{target.server.url}anvil/api/mail/{record['id']}", headers=AUTH, timeout=30)
    assert detail.status_code == 200, detail.text[:500]
    headers = detail.json()["headers"]
    assert ["Subject", subject] in headers and ["From", "Ann <ann@example.com>"] in headers
    if subject == "duplicate fields":
        assert [value for name, value in headers if name == "X-A"] == ["first", "second"]
        assert seen["x_a"] == ["first", "second"]
    if text is not None:
        assert detail.json()["text"].replace("\r\n", "\n") == text
    for part in detail.json()["parts"]:
        assert httpx.get(part["url"], headers=AUTH, timeout=30).status_code == 200
    target.still_serves(subject)


def test_a_million_empty_parts_take_neither_minutes_nor_gigabytes(target: Attacked) -> None:
    body = b"Content-Type: multipart/mixed; boundary=A\r\n\r\n" + b"--A\r\n\r\n" * 1_000_000 + b"--A--\r\n"
    started = time.monotonic()
    assert target.deliver(mime("a million parts", body)) == {}  # handled within the handler's 10 s
    seen = target.seen("a million parts")
    assert seen["from"][0] == "ann@example.com" and len(seen["attachments"]) <= 1
    (record,) = [m for m in target.mail(box="inbox") if m["subject"] == "a million parts"]
    detail = httpx.get(f"{target.server.url}anvil/api/mail/{record['id']}", headers=AUTH, timeout=30)
    assert detail.status_code == 200 and ["Subject", "a million parts"] in detail.json()["headers"]
    assert time.monotonic() - started < 20
    target.still_serves("a million parts")


def test_two_million_header_fields_are_handled_in_time(target: Attacked) -> None:
    body = b"X-A: y\r\n" * 2_000_000 + b"\r\nbody\r\n"
    assert target.deliver(mime("two million fields", body)) == {}  # handled within the handler's 10 s
    seen = target.seen("two million fields")
    assert seen["headers"] == 10_000 and seen["text"] == "body\n" and seen["from"][0] == "ann@example.com"
    target.still_serves("two million fields")


def test_a_to_header_of_300_000_addresses_is_handled_listed_and_read_in_time(target: Attacked) -> None:
    to = b"To: " + b",\r\n ".join(b"u%d@example.com" % i for i in range(300_000)) + b"\r\n"
    started = time.monotonic()
    assert target.deliver(mime("a crowd in To", b"\r\nbody\r\n", b"From: Ann <ann@example.com>\r\n" + to)) == {}
    seen = target.seen("a crowd in To")
    assert seen["to"][0][0] == "u0@example.com" and 1000 < len(seen["to"]) < 300_000  # the first ones
    (record,) = [m for m in target.mail(box="inbox") if m["subject"] == "a crowd in To"]
    assert record["to_header"].startswith("u0@example.com, u1@example.com")
    detail = httpx.get(f"{target.server.url}anvil/api/mail/{record['id']}", headers=AUTH, timeout=30)
    assert detail.status_code == 200
    assert time.monotonic() - started < 30
    target.still_serves("a crowd in To")


def test_a_huge_subject_is_kept_cut_in_the_reply(target: Attacked) -> None:
    words = ["reply", *(["s" * 70] * 300)]  # 21 000 characters, folded as mail folds it
    subject = " ".join(words)
    raw = "From: a@example.com\r\nMessage-ID: <huge@example.com>\r\nSubject: " + "\r\n ".join(words) + "\r\n\r\nx\r\n"
    assert target.deliver(raw.encode()) == {}
    seen = target.seen(subject)
    assert "reply_error" not in seen, seen["reply_error"]
    (reply,) = [m for m in target.mail(box="outbox", app="inbox") if m["subject"].startswith("reply ssss")]
    parsed = message_from_bytes(target.raw(reply["id"]), policy=default_policy)
    assert str(parsed["Subject"]) == subject[:10_000]


def test_a_long_thread_keeps_its_first_and_latest_references(target: Attacked) -> None:
    (reply,) = [m for m in target.mail(box="outbox", app="inbox") if m["subject"] == "long thread reply"]
    references = str(message_from_bytes(target.raw(reply["id"]), policy=default_policy)["References"]).split()
    assert references[0] == "<0@thread.example>" and references[-2] == "<1999@thread.example>"
    assert len(" ".join(references)) <= 10_000


@pytest.mark.parametrize(
    ("headers", "to"),
    [(b"From: <>\r\n", "bob@example.net"), (b"From: ceo@bank.example@evil.example\r\n", "bob@example.net"),
     (b"From: ann@example.com\r\nReply-To: not an address\r\n", "ann@example.com")],
    ids=["empty-from", "two-ats", "bad-reply-to"],
)  # fmt: skip
def test_a_reply_skips_an_address_it_cannot_write(target: Attacked, headers: bytes, to: str) -> None:
    subject = f"reply past {len(headers)}"
    assert target.deliver(mime(subject, b"\r\nx\r\n", headers), sender="bob@example.net") == {}
    seen = target.seen(subject)
    assert "reply_error" not in seen, seen["reply_error"]
    (reply,) = [m for m in target.mail(box="outbox", app="inbox") if m["subject"] == subject]
    assert reply["recipients"] == [to]


def test_mail_with_no_from_and_a_null_sender_is_handled_and_cannot_be_replied_to(target: Attacked) -> None:
    raw = b"To: inbox@example.org\r\nSubject: bounce reply\r\n\r\nundeliverable\r\n"
    assert target.deliver(raw, sender="") == {}
    seen = target.seen("bounce reply")
    assert seen["from"] is None and seen["envelope"] == ["", "inbox@example.org"]
    assert "Cannot reply" in seen["reply_error"]
    target.still_serves("bounce")


# -- SMTP: the protocol, abused --------------------------------------------------------------------
def converse(port: int, script: bytes, replies: int, timeout: float = 30) -> list[str]:
    """Write the whole script at once (pipelined), then read ``replies`` replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        greeting = read_reply(reader)
        sock.sendall(script)
        return [greeting, *(read_reply(reader) for _ in range(replies))]


def test_pipelined_lowercase_commands_two_messages_and_rset_on_one_connection(target: Attacked) -> None:
    script = (
        b"ehlo attacker\r\nmail from:<a@example.com>\r\nrcpt to:<inbox@example.org>\r\ndata\r\n"
        b"From: a@example.com\r\nSubject: pipelined one\r\n\r\none\r\n.\r\n"
        b"rset\r\nmail from:<b@example.com>\r\nrcpt to:<nobody-here@example.org>\r\nrset\r\n"
        b"MAIL FROM:<c@example.com>\r\nRCPT TO:<INBOX@example.org>\r\nDATA\r\n"
        b"From: c@example.com\r\nSubject: pipelined two\r\n\r\ntwo\r\n.\r\nQUIT\r\n"
    )
    replies = converse(target.port, script, 14)
    codes = [reply[:3] for reply in replies]
    assert codes == [
        "220",
        "250",
        "250",
        "250",
        "354",
        "250",
        "250",
        "250",
        "550",
        "250",
        "250",
        "250",
        "354",
        "250",
        "221",
    ]
    assert target.seen("pipelined one")["envelope"] == ["a@example.com", "inbox@example.org"]
    assert target.seen("pipelined two")["envelope"] == ["c@example.com", "INBOX@example.org"]


@pytest.mark.parametrize(
    "end", [b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\n"], ids=["LF.CRLF", "CRLF.LF", "CR.CRLF", "LF.LF"]
)
def test_smtp_smuggling_gives_one_message_not_two(target: Attacked, end: bytes) -> None:
    """A lone LF or CR before or after the dot is no end of data (CVE-2023-51764 and kin):
    what follows is the same message's text, never a second message from someone else."""
    label = end.hex()
    smuggled = (
        f"From: a@example.com\r\nSubject: outer {label}\r\n\r\nbody".encode() + end
        + f"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<inbox@x.y>\r\nDATA\r\nFrom: ceo@bank.example\r\n"
          f"Subject: smuggled {label}\r\n\r\nPay now.\r\n.\r\n".encode()
    )  # fmt: skip
    replies = session(
        target.port,
        [b"EHLO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<inbox@x.y>\r\n", b"DATA\r\n", smuggled, b"NOOP\r\n"],
    )
    assert replies[-2].startswith("250") and replies[-1].startswith("250"), replies
    assert "Pay now." in target.seen(f"outer {label}")["text"]
    assert not [m for m in target.mail(box="inbox") if m["subject"] == f"smuggled {label}"]


def test_commands_out_of_order_are_refused_and_the_connection_serves_on(target: Attacked) -> None:
    replies = session(
        target.port,
        [b"DATA\r\n", b"RCPT TO:<inbox@x.y>\r\n", b"HELO c\r\n", b"RCPT TO:<inbox@x.y>\r\n", b"DATA\r\n",
         b"MAIL FROM:<a@b.c>\r\n", b"MAIL FROM:<a@b.c>\r\n", b"DATA\r\n", b"NOOP\r\n", b"VRFY inbox\r\n"],
    )  # fmt: skip
    assert [r[:1] for r in replies[1:]] == ["5", "5", "2", "5", "5", "2", "5", "5", "2", "2"], replies
    target.still_serves("out of order")


@pytest.mark.parametrize(
    "address",
    ['"inbox"@example.org', "inbox+tag@sub.inbox.apps.test", "INBOX@Example.ORG",
     "Inbox+a+b@x.test", "<inbox@[127.0.0.1]>"],
)  # fmt: skip
def test_recipients_that_route_to_the_app(target: Attacked, address: str) -> None:
    to = address.strip("<>")
    subject = f"route {address}"
    replies = session(
        target.port,
        [b"EHLO c\r\n", b"MAIL FROM:<a@example.com>\r\n", f"RCPT TO:<{to}>\r\n".encode(), b"DATA\r\n",
         f"From: a@example.com\r\nSubject: {subject}\r\n\r\nx\r\n.\r\n".encode()],
    )  # fmt: skip
    assert replies[-1].startswith("250"), replies
    assert target.seen(subject)["envelope"][1] == to.replace('"', "")  # "inbox" needs no quotes: given without


@pytest.mark.parametrize(
    "address",
    ["nobody@example.org", "in box@example.org", "@inbox.apps.test", "inbox", "x@inbox.apps.test.evil"],
)  # fmt: skip
def test_recipients_no_app_takes_are_refused_at_rcpt(target: Attacked, address: str) -> None:
    replies = session(target.port, [b"HELO c\r\n", b"MAIL FROM:<a@b.c>\r\n", f"RCPT TO:<{address}>\r\n".encode()])
    assert replies[-1][:1] == "5", replies  # sender has no handler: refused before the data too


@pytest.mark.parametrize(
    ("recipient", "sender"),
    [("inbox+jörg@example.org", "inbox@example.org"), ("inbox@bücher.example", "inbox@xn--bcher-kva.example"),
     ("jörg@inbox.apps.test", "no-reply@apps.test")],
)  # fmt: skip
def test_a_reply_to_mail_sent_to_an_international_address(target: Attacked, recipient: str, sender: str) -> None:
    subject = f"reply to {recipient}"
    raw = f"From: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <i-{len(recipient)}@x>\r\n\r\nhi\r\n".encode()
    with smtplib.SMTP("127.0.0.1", target.port, timeout=60) as client:
        assert client.sendmail("a@example.com", [recipient], raw, ["SMTPUTF8"]) == {}
    seen = target.seen(subject)
    assert "reply_error" not in seen, seen["reply_error"]
    (reply,) = [m for m in target.mail(box="outbox", app="inbox") if m["subject"] == subject]
    assert reply["envelope_from"] == sender


def test_smtputf8_and_8bitmime(target: Attacked) -> None:
    raw = "From: Jörg <jörg@bücher.example>\r\nSubject: utf8 Grüße\r\n\r\nHallo Jörg\r\n".encode()
    with smtplib.SMTP("127.0.0.1", target.port, timeout=60) as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        assert (
            client.sendmail("jörg@bücher.example", ["inbox@bücher.example"], raw, ["SMTPUTF8", "BODY=8BITMIME"]) == {}
        )
    seen = target.seen("utf8 Grüße")
    assert seen["envelope"] == ["jörg@bücher.example", "inbox@bücher.example"]
    assert seen["from"][0] == "jörg@bücher.example" and seen["text"] == "Hallo Jörg\n"


def test_addresses_with_control_characters_are_refused(target: Attacked) -> None:
    replies = session(
        target.port,
        [b"EHLO c\r\n", b"MAIL FROM:<a\x00@b.c>\r\n", b"MAIL FROM:<a\x01b@b.c>\r\n", b"MAIL FROM:<a@b.c>\r\n",
         b"RCPT TO:<inbox+\x00@x.y>\r\n", b"RCPT TO:<inbox+\x7f@x.y>\r\n", b"RCPT TO:<inbox@x.y>\r\n"],
    )  # fmt: skip
    assert [r[:3] for r in replies[2:]] == ["553", "553", "250", "553", "553", "250"], replies
    target.still_serves("control characters")


def test_a_sender_with_quotes_and_comments(target: Attacked) -> None:
    replies = session(
        target.port,
        [b"EHLO c\r\n", b'MAIL FROM:<"odd sender"@example.com>\r\n', b"RCPT TO:<inbox@example.org>\r\n", b"DATA\r\n",
         b"From: \"Odd, Sender\" (comment) <x@example.com>\r\nSubject: quoted sender\r\n\r\nx\r\n.\r\n"],
    )  # fmt: skip
    assert replies[-1].startswith("250"), replies
    assert target.seen("quoted sender")["from"][:2] == ["x@example.com", "Odd, Sender"]


def test_half_a_message_then_silence_does_not_block_others(target: Attacked) -> None:
    hung = socket.create_connection(("127.0.0.1", target.port), timeout=30)
    try:
        reader = hung.makefile("rb")
        read_reply(reader)
        hung.sendall(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<inbox@x.y>\r\nDATA\r\n")
        for _ in range(4):
            read_reply(reader)
        hung.sendall(b"From: a@b.c\r\nSubject: half\r\n\r\nhalf a mess")
        started = time.monotonic()
        target.still_serves("half a message")
        assert time.monotonic() - started < 20
    finally:
        hung.close()
    target.still_serves("the half message hung up")
    assert not [m for m in target.mail(box="inbox") if m["subject"] == "half"]


def test_a_flood_of_connections_is_refused_politely_and_service_resumes(target: Attacked) -> None:
    opened: list[socket.socket] = []
    greetings: list[bytes] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=10)
            opened.append(sock)
        for sock in opened:
            greetings.append(sock.recv(100)[:3])
    finally:
        for sock in opened:
            sock.close()
    assert set(greetings) <= {b"220", b"421", b""}, set(greetings)
    assert b"421" in greetings  # bounded: past the limit each is told to come back later
    deadline = time.monotonic() + 20
    while True:  # the closed ones are noticed
        try:
            target.still_serves("a flood")
            break
        except (smtplib.SMTPException, OSError):
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_a_30_mb_message_without_size_and_200_recipients(target: Attacked) -> None:
    big = b"From: a@example.com\r\nSubject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 31_000
    with socket.create_connection(("127.0.0.1", target.port), timeout=60) as sock:
        reader = sock.makefile("rb")
        read_reply(reader)
        sock.sendall(
            b"HELO c\r\nMAIL FROM:<a@b.c>\r\n" + b"".join(b"RCPT TO:<inbox+%d@x.y>\r\n" % i for i in range(200))
        )
        replies = [read_reply(reader) for _ in range(202)]
        assert [r[:3] for r in replies[2:]] == ["250"] * 100 + ["452"] * 100
        sock.sendall(b"DATA\r\n")
        assert read_reply(reader).startswith("354")
        sock.sendall(big + b".\r\n")
        assert read_reply(reader).startswith("552")
        sock.sendall(b"RSET\r\n")
        assert read_reply(reader).startswith("250")  # the same connection serves on
    target.still_serves("30 MB")


@pytest.mark.parametrize(("code", "expected"), [("550", 550), ("421", 421), ("250", 554), ("999", 554), ("-1", 554)])
def test_a_delivery_failure_answers_one_clean_line_with_a_refusal_code(
    target: Attacked, code: str, expected: int
) -> None:
    subject = f"refuse {code} =?utf-8?q?a=0D=0A250_2=2E0=2E0_OK=0D=0AX?="  # a CRLF once decoded
    raw = f"From: a@example.com\r\nSubject: {subject}\r\nX-Code: {code}\r\n\r\nx\r\n".encode()
    replies = session(
        target.port,
        [b"EHLO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<inbox@x.y>\r\n", b"DATA\r\n", raw + b".\r\n", b"NOOP\r\n"],
    )
    assert replies[-2].startswith(f"{expected} ") and "No thanks: refuse" in replies[-2], replies
    assert replies[-1].startswith("250")  # the next reply is NOOP's: no line was smuggled in between
    target.still_serves(f"refusal {code}")


def test_deleting_an_inbound_message_while_its_handler_runs(target: Attacked) -> None:
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(target.deliver(mime("slow deleted", b"\r\nx\r\n"))))
    thread.start()
    deadline = time.monotonic() + 20
    while not (found := [m for m in target.mail(box="inbox") if m["subject"] == "slow deleted"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    response = httpx.delete(f"{target.server.url}anvil/api/mail/{found[0]['id']}", headers=AUTH, timeout=30)
    assert response.status_code == 204
    thread.join(30)
    assert outcome == [{}]  # the handler ran to its end; its outcome has no record to go to
    assert not [m for m in target.mail(box="inbox") if m["subject"] == "slow deleted"]
    target.still_serves("a deleted inbound message")


async def test_the_live_feed_needs_jupyter_auth(target: Attacked) -> None:
    import websockets
    from websockets.exceptions import InvalidStatus

    url = f"ws://127.0.0.1:{target.server.port}/anvil/api/tasks/feed"
    for headers in ({}, {"Authorization": "token wrong"}):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers, open_timeout=10):
                pass
        assert refused.value.response.status_code in (401, 403)


# -- an app reload while its handler runs ------------------------------------------------------------
def test_an_app_reload_mid_handler_answers_and_serves_on(target: Attacked) -> None:
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(target.deliver(mime("slow reload", b"\r\nx\r\n")))
        except smtplib.SMTPException as e:
            outcome.append(e)

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(1.5)
    write_notebook(target.root / "inbox.ipynb", [INBOX + "\n# reloaded\n"], {"kernels": {"min": 1, "max": 2}})
    thread.join(60)
    assert not thread.is_alive(), "the sender was never answered"
    assert outcome == [{}] or (isinstance(outcome[0], smtplib.SMTPDataError) and outcome[0].smtp_code == 451), outcome
    target.server.wait_until_loaded(("inbox",))
    target.still_serves("a reload")


# -- the admin API -------------------------------------------------------------------------------------
def test_every_mail_route_needs_jupyter_auth(target: Attacked) -> None:
    (one,) = target.mail(box="outbox", limit=1)
    base = f"{target.server.url}anvil/api/mail"
    for method, url in [
        ("GET", base), ("GET", f"{base}/{one['id']}"), ("GET", f"{base}/{one['id']}/raw"),
        ("GET", f"{base}/{one['id']}/parts/1"), ("DELETE", f"{base}/{one['id']}"),
    ]:  # fmt: skip
        for headers in ({}, {"Authorization": "token wrong"}):
            response = httpx.request(method, url, headers=headers, timeout=30, follow_redirects=False)
            assert response.status_code in (302, 401, 403), (method, url, response.status_code)
            assert b"Subject" not in response.content and b"message_id" not in response.content
    assert [m["id"] for m in target.mail(box="outbox") if m["id"] == one["id"]]  # not deleted


@pytest.mark.parametrize(
    "path",
    ["mail/" + "a" * 25, "mail/" + "a" * 27, "mail/AAAAAAAAAAAAAAAAAAAAAAAAAA", "mail/%00",
     "mail/" + "a" * 26, "mail/" + "a" * 26 + "/raw", "mail/" + "a" * 26 + "/parts/1",
     "mail/" + "a" * 26 + "/parts/99999", "mail/" + "a" * 26 + "/parts/-1", "mail/" + "a" * 10_000],
)  # fmt: skip
def test_ids_that_are_not_ids_are_404(target: Attacked, path: str) -> None:
    for method in ("GET", "DELETE"):
        response = httpx.request(method, f"{target.server.url}anvil/api/{path}", headers=AUTH, timeout=30)
        assert response.status_code in (404, 405), (method, path, response.status_code)
        assert b"Traceback" not in response.content


@pytest.mark.parametrize(
    "query",
    ["before=junk", "before=nan", "before=inf", "before=1e400", "limit=-1", "limit=0", "limit=1" + "0" * 30,
     "limit=1.5", "limit=", "box=spam", "status=nope", "box=" + "x" * 5000],
)  # fmt: skip
def test_list_queries_that_make_no_sense_are_400(target: Attacked, query: str) -> None:
    response = httpx.get(f"{target.server.url}anvil/api/mail?{query}", headers=AUTH, timeout=30)
    assert response.status_code == 400, (query, response.status_code, response.text[:300])
    assert b"Traceback" not in response.content and len(response.content) < 5000


def test_a_missing_part_of_a_real_message_is_404(target: Attacked) -> None:
    (one,) = target.mail(box="outbox", limit=1)
    response = httpx.get(f"{target.server.url}anvil/api/mail/{one['id']}/parts/9999", headers=AUTH, timeout=30)
    assert response.status_code == 404


# -- require_dkim --------------------------------------------------------------------------------------
DKIM_MESSAGE = (
    b"From: alice@example.com\r\nTo: strict@apps.test\r\nSubject: dkim\r\nMessage-ID: <k@example.com>\r\n"
    b"\r\nSigned.\r\n"
)


BROKEN_SIGNATURE = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA\r\n"


@pytest.mark.parametrize(
    ("name", "make", "taken"),
    [
        ("body changed", lambda m: signed(m, "example.com").replace(b"Signed.", b"Pay me."), False),
        ("body appended under l=", lambda m: signed(m, "example.com", length=True) + b"Pay me too.\r\n", False),
        ("l= untouched", lambda m: signed(m, "example.com", length=True), False),
        ("two signatures, sender's second", lambda m: signed(signed(m, "relay.net"), "example.com"), True),
        ("two signatures, sender's first", lambda m: signed(signed(m, "example.com"), "relay.net"), True),
        ("a broken one, then a good one", lambda m: BROKEN_SIGNATURE + signed(m, "example.com"), True),
        ("only the relay's", lambda m: signed(m, "relay.net"), False),
        ("a second From prepended", lambda m: b"From: CEO <ceo@example.com>\r\n" + signed(m, "example.com"), False),
    ],
)  # fmt: skip
def test_require_dkim(target: Attacked, name: str, make: Any, taken: bool) -> None:
    raw = make(DKIM_MESSAGE.replace(b"<k@", f"<{name.replace(' ', '-')}@".encode()))
    if taken:
        assert target.deliver(raw, to="strict@apps.test") == {}
    else:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            target.deliver(raw, to="strict@apps.test")
        assert refused.value.smtp_code == 554 and b"No valid DKIM signature" in refused.value.smtp_error


# -- relays that misbehave (a real MailSender over a real MailStore) ------------------------------------
class ScriptedRelay:
    """An SMTP relay on loopback whose connections misbehave as scripted, in turn: each
    connection takes the next behaviour of ``script`` (then ``"ok"``). It counts the
    messages it received whole (``complete``) and those it answered 250 (``accepted``)."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.connections = 0
        self.complete = 0
        self.accepted = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        behaviour = self.script.pop(0) if self.script else "ok"
        try:
            if behaviour == "421 greeting":
                writer.write(b"421 4.3.2 shutting down\r\n")
                return
            writer.write(b"220 relay ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-relay\r\n250 SIZE 100000000\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    if behaviour == "close mid-data":
                        await reader.read(50)
                        return
                    data = await reader.readuntil(b"\r\n.\r\n")
                    if data:
                        self.complete += 1
                    if behaviour == "silent after data":
                        await asyncio.sleep(30)
                        return
                    writer.write(b"250 2.0.0 queued\r\n")
                    self.accepted += 1
                    await writer.drain()
                    if behaviour == "250 then drop":
                        return
                    if behaviour == "250 then silent":
                        await asyncio.sleep(30)  # QUIT is never answered
                        return
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                else:
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def mail_store(database_url: str) -> AsyncIterator[Any]:
    from jupyter_anvil.host.mail.store import MailStore
    from jupyter_anvil.host.store import Store

    store = Store(database_url)
    store.create_schema()
    yield MailStore(store)
    store.close()


RELAY_RAW = b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: relayed\r\n\r\nHello.\r\n"


@pytest.mark.parametrize(
    ("script", "attempts", "complete"),
    [
        (["close mid-data"], 2, 1),
        (["421 greeting", "421 greeting"], 3, 1),
        (["250 then drop"], 1, 1),
        (["silent after data"], 2, 2),  # the relay got it whole and never said so: SMTP cannot tell
    ],
    ids=["close-mid-data", "421-at-greeting", "250-then-drop", "silent-after-data"],
)
async def test_a_misbehaving_relay_is_retried_and_the_message_accepted_once(
    mail_store: Any, script: list[str], attempts: int, complete: int
) -> None:
    from jupyter_anvil.host.mail.outbound import MailSender
    from jupyter_anvil.host.mail.relay import RelayConfig
    from jupyter_anvil.host.mail.transport import SmtpRelay

    relay = ScriptedRelay(script)
    port = await relay.start()
    config = RelayConfig.from_url(f"smtp+plain://127.0.0.1:{port}", environ={}, timeout=1.0)
    service = MailSender(mail_store, SmtpRelay(config), retry_seconds=20, retry_first=0.1, retry_most=0.3)
    started = time.monotonic()
    summary = await service.send("shop", RELAY_RAW, "shop@example.com", ["ann@example.org"])
    assert time.monotonic() - started < 15
    assert (summary.status, summary.box, summary.attempts) == ("sent", "sent", attempts)
    await asyncio.sleep(1.0)  # nothing is sent again afterwards
    assert (relay.accepted, relay.complete, relay.connections) == (1, complete, attempts)
    assert relay.server is not None
    relay.server.close()


async def test_a_relay_that_never_answers_quit_does_not_hold_up_the_sent_message(mail_store: Any) -> None:
    """The relay took it (250): a QUIT left unanswered must not keep the record 'queued' for
    the relay's whole timeout (a stop in that window would send it again at the next start)."""
    from jupyter_anvil.host.mail.outbound import MailSender
    from jupyter_anvil.host.mail.relay import RelayConfig
    from jupyter_anvil.host.mail.transport import SmtpRelay

    relay = ScriptedRelay(["250 then silent"])
    port = await relay.start()
    config = RelayConfig.from_url(f"smtp+plain://127.0.0.1:{port}", environ={}, timeout=20.0)
    service = MailSender(mail_store, SmtpRelay(config), retry_seconds=30)
    started = time.monotonic()
    summary = await service.send("shop", RELAY_RAW, "shop@example.com", ["ann@example.org"])
    assert summary.status == "sent" and relay.accepted == 1
    assert time.monotonic() - started < 5
    assert relay.server is not None
    relay.server.close()


async def test_a_message_deleted_while_it_waits_to_be_retried_is_never_sent(mail_store: Any) -> None:
    from jupyter_anvil.host.mail.outbound import MailSender
    from jupyter_anvil.host.mail.relay import RelayConfig
    from jupyter_anvil.host.mail.transport import SmtpRelay

    relay = ScriptedRelay(["421 greeting"] * 1000)  # deferring every time
    port = await relay.start()
    config = RelayConfig.from_url(f"smtp+plain://127.0.0.1:{port}", environ={}, timeout=1.0)
    service = MailSender(mail_store, SmtpRelay(config), retry_seconds=30, retry_first=0.5, retry_most=0.5)
    sending = asyncio.ensure_future(service.send("shop", RELAY_RAW, "shop@example.com", ["ann@example.org"]))
    while relay.connections < 2:
        await asyncio.sleep(0.05)
    (queued,) = await mail_store.list()
    assert queued.status == "queued"
    assert await mail_store.delete(queued.id)
    relay.script = []  # the relay would take it now
    with pytest.raises(Exception, match="deleted before the mail relay accepted it"):
        await asyncio.wait_for(sending, 10)
    await asyncio.sleep(1.5)
    assert relay.accepted == 0 and await mail_store.list() == []
    assert relay.server is not None
    relay.server.close()


# -- a real server relaying with a password full of URL syntax ------------------------------------------
RELAY_USER = "mailer@example.com"
RELAY_PASSWORD = "p@ss:w%rd/Zq-8h3Kx"  # a test's own: it must show up nowhere


class RelayWithAuth:
    """A STARTTLS relay (aiosmtpd, the test's own certificate) that wants RELAY_PASSWORD."""

    def __init__(self, password: str = RELAY_PASSWORD) -> None:
        self.password = password
        self.received: list[Any] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope)
        return "250 2.0.0 queued"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == (RELAY_USER, self.password), handled=False)


def secrets_in(text: str) -> list[str]:
    """The forms of the password that must never be shown."""
    import base64
    from urllib.parse import quote

    forms = [
        RELAY_PASSWORD,
        quote(RELAY_PASSWORD, safe=""),
        base64.b64encode(f"\0{RELAY_USER}\0{RELAY_PASSWORD}".encode()).decode(),
        base64.b64encode(RELAY_PASSWORD.encode()).decode(),
    ]
    return [form for form in forms if form in text]


@pytest.fixture(scope="module")
def relayed(
    tmp_path_factory: pytest.TempPathFactory,
    certificate: tuple[Path, Path],  # noqa: F811 - the fixture imported above
) -> Iterator[tuple[AnvilServer, int, Any]]:
    from urllib.parse import quote

    from test_mail_relay import free_port, server_tls

    cert = certificate
    port = free_port()
    url = f"smtp://{quote(RELAY_USER, safe='')}:{quote(RELAY_PASSWORD, safe='')}@127.0.0.1:{port}"
    options = (f"--AnvilApp.smtp_relay_url={url}", f"--AnvilApp.smtp_relay_ca_file={cert[0]}",
               "--AnvilApp.mail_retry_seconds=60", "--AnvilApp.mail_from_domain=apps.test")  # fmt: skip

    def write(root: Path) -> None:
        write_notebook(root / "sender.ipynb", [SENDER], {"kernels": {"min": 1, "max": 2}})

    with private_server(tmp_path_factory, "mail-relayed", write, *options) as server:
        server.wait_until_loaded(("sender",))
        yield server, port, (cert, server_tls)


def start_auth_relay(port: int, tls: Any, password: str = RELAY_PASSWORD) -> tuple[Any, RelayWithAuth]:
    from aiosmtpd.controller import Controller

    cert, server_tls = tls
    handler = RelayWithAuth(password)
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=server_tls(cert), require_starttls=True,
        auth_required=True, auth_require_tls=True, authenticator=handler.authenticate,
    )  # fmt: skip
    controller.start()
    return controller, handler


def test_a_queued_message_deleted_through_the_api_while_retried_is_never_sent(
    relayed: tuple[AnvilServer, int, Any],
) -> None:
    server, port, tls = relayed
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(server.call("sender", "send", {"to": "ann@example.org", "subject": "doomed"}))
    )
    thread.start()  # the relay is down: the call waits while the server retries
    deadline = time.monotonic() + 30
    while True:
        found = [m for m in server.admin("anvil/api/mail", box="outbox")["messages"] if m["subject"] == "doomed"]
        if found and found[0]["attempts"] >= 1:
            break
        assert time.monotonic() < deadline, "never queued"
        time.sleep(0.2)
    (doomed,) = found
    assert doomed["status"] == "queued" and not secrets_in(json.dumps(doomed))
    response = httpx.delete(f"{server.url}anvil/api/mail/{doomed['id']}", headers=AUTH, timeout=30)
    assert response.status_code == 204
    controller, relay = start_auth_relay(port, tls)
    try:
        thread.join(45)
        assert not thread.is_alive()
        assert outcome[0]["error"] == "SendFailure" and "deleted" in outcome[0]["message"], outcome
        time.sleep(2)
        assert relay.received == []
        # and the relay, up now, takes the next one over STARTTLS with the password
        answer = server.call("sender", "send", {"to": "ann@example.org", "subject": "after the delete"})
        assert "message_id" in answer, answer
        assert len(relay.received) == 1 and relay.logins == [(RELAY_USER, RELAY_PASSWORD)]
    finally:
        controller.stop()


def test_the_relay_password_is_in_no_log_record_or_error(relayed: tuple[AnvilServer, int, Any]) -> None:
    server, port, tls = relayed
    controller, relay = start_auth_relay(port, tls, password="another one")  # refuses ours: 535
    try:
        answer = server.call("sender", "send", {"to": "ann@example.org", "subject": "refused login"})
    finally:
        controller.stop()
    assert answer.get("error") == "SendFailure" and "refused the credentials" in answer["message"], answer
    assert set(relay.logins) == {(RELAY_USER, RELAY_PASSWORD)}  # decoded right (smtplib tries PLAIN, LOGIN)
    shown: list[str] = [json.dumps(answer)]
    for message in server.admin("anvil/api/mail", limit=500)["messages"]:
        shown.append(json.dumps(message))
        shown.append(json.dumps(server.admin(f"anvil/api/mail/{message['id']}")))
    shown.append(server.log_tail(100_000))
    shown.append(json.dumps(server.admin("anvil/api/logs", app="sender")))
    leaks = [secrets_in(text) for text in shown]
    assert not any(leaks), leaks


@pytest.mark.parametrize(
    "url",
    [f"mailer:{RELAY_PASSWORD}@127.0.0.1:25", "smtp://:p%40ss%3Aw%25rd%2FZq-8h3Kx@127.0.0.1:25",
     f"smtp://mailer:{RELAY_PASSWORD}@127.0.0.1:99999"],
    ids=["no-scheme", "no-user", "bad-port"],
)  # fmt: skip
def test_a_relay_url_that_cannot_be_used_stops_the_server_without_showing_the_password(
    tmp_path_factory: pytest.TempPathFactory, url: str
) -> None:
    root = tmp_path_factory.mktemp("bad-relay-root")
    server = AnvilServer(root, tmp_path_factory.mktemp("bad-relay"), f"--AnvilApp.smtp_relay_url={url}")
    with pytest.raises(AssertionError):
        server.start()
    assert server.process is not None and server.process.wait(30) != 0
    log = server.log_tail(100_000)
    assert "--AnvilApp.smtp_relay_url" in log and ":***@" in log, log[-2000:]
    assert not secrets_in(log) and "w%rd" not in log, log[-2000:]
