"""email.Message from the host's InboundMail (kernel/mail_message.py): every attribute of
Anvil's table, mail that is barely mail, reply()'s threading (through mail_compose's seam),
and the handler's wrapper (require_dkim, the return value ignored, registration)."""

from __future__ import annotations

import os
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_anvil import email, wire
from jupyter_anvil.errors import DeliveryFailure, SendFailure
from jupyter_anvil.kernel import mail_compose, mail_message, registry
from jupyter_anvil.media import BlobMedia
from jupyter_anvil.protocol import EMAIL_HANDLER, EMAIL_HANDLER_NAME


def inbound(
    raw: bytes,
    sender: str = "bounce@sender.example",
    recipient: str = "shop@app.example",
    dkim: bool = False,
    domains: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "mail_id": "m" * 26,
        "raw": BlobMedia("message/rfc822", raw),
        "envelope": {"from_address": sender, "recipient": recipient},
        "dkim": {"valid_from_sender": dkim, "domains": domains or []},
    }


#: a multipart nested 1000 deep (neither the parser nor the reader may recurse without end)
NESTED_TOO_DEEP = (
    b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(1000))
    + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
)


def rich_mail() -> bytes:
    """A message as a mail client sends it: names, Unicode, text + html + inline image,
    attachments (one a forwarded message), threading headers."""
    msg = EmailMessage()
    msg["From"] = "Zoë Ünïcode <zoe@sender.example>"
    msg["To"] = "Shop <shop@app.example>, other@app.example"
    msg["Cc"] = '"Doe, Jane" <jane@example.com>'
    msg["Subject"] = "Order ✓ nº 5"
    msg["Message-ID"] = "<abc@sender.example>"
    msg["References"] = "<first@sender.example>"
    msg["X-Custom"] = "one"
    msg["X-Custom"] = "two"
    msg.set_content("Hello ✓\nsecond line\n")
    msg.add_alternative('<p>Hello <img src="cid:logo@x"></p>', subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG", "image", "png", cid="<logo@x>")
    msg.add_attachment(b"a,b\n", "text", "csv", filename="data é.csv")
    msg.add_attachment(b"%PDF", "application", "pdf", filename="doc.pdf")
    forwarded = EmailMessage()
    forwarded["Subject"] = "inner"
    forwarded.set_content("inner text")
    msg.add_attachment(forwarded)
    return msg.as_bytes(policy=policy.SMTP)


def test_every_attribute_of_a_rich_message() -> None:
    message = mail_message.from_inbound(inbound(rich_mail(), dkim=True, domains=["sender.example"]))
    assert isinstance(message, email.Message)
    assert (message.envelope.from_address, message.envelope.recipient) == ("bounce@sender.example", "shop@app.example")
    assert message.dkim.valid_from_sender is True and message.dkim.domains == ["sender.example"]
    sender = message.addressees.from_address
    assert sender is not None and isinstance(sender, email.Address)
    assert (sender.address, sender.name) == ("zoe@sender.example", "Zoë Ünïcode")
    assert sender.raw_value == "Zoë Ünïcode <zoe@sender.example>"
    assert [(a.address, a.name) for a in message.addressees.to_addresses] == [
        ("shop@app.example", "Shop"),
        ("other@app.example", None),
    ]
    assert [(a.address, a.name) for a in message.addressees.cc_addresses] == [("jane@example.com", "Doe, Jane")]
    assert message.subject == "Order ✓ nº 5"
    assert message.text == "Hello ✓\nsecond line\n"
    assert message.html is not None and message.html.strip() == '<p>Hello <img src="cid:logo@x"></p>'
    assert list(message.inline_attachments) == ["logo@x"]
    logo = message.inline_attachments["logo@x"]
    assert (logo.content_type, logo.get_bytes()) == ("image/png", b"\x89PNG")
    names = [(a.name, a.content_type) for a in message.attachments]
    assert names == [("data é.csv", "text/csv"), ("doc.pdf", "application/pdf"), (None, "message/rfc822")]
    assert message.attachments[0].get_bytes() == b"a,b\n"
    assert b"Subject: inner" in message.attachments[2].get_bytes()  # forwarded: kept whole, not mixed in
    assert ("X-Custom", "one") in message.headers and ("Subject", "Order ✓ nº 5") in message.headers
    assert message.get_header("x-CUSTOM") == "one" and message.list_header("X-Custom") == ["one", "two"]
    assert message.get_header("Missing") is None and message.get_header("Missing", "d") == "d"
    assert message.list_header("missing") == []
    assert message.get_header("message-id") == "<abc@sender.example>"
    assert not hasattr(message, "message_id")  # as Anvil: get_header("Message-ID")
    assert isinstance(message.envelope, email.Message.Envelope) and isinstance(message.dkim, email.DKIM)  # type: ignore[attr-defined]


def test_text_in_other_charsets_and_bad_charsets() -> None:
    latin = b"From: a@b.example\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nch\xe8re\r\n"
    assert mail_message.from_inbound(inbound(latin)).text == "chère\n"
    unknown = b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nok \xff\r\n"
    assert mail_message.from_inbound(inbound(unknown)).text == "ok \ufffd\n"
    not_text = b"Content-Type: text/plain; charset=base64\r\n\r\nok\r\n"
    assert mail_message.from_inbound(inbound(not_text)).text == "ok\n"
    lying = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nna\xc3\xafve\r\n"
    assert mail_message.from_inbound(inbound(lying)).text == "na\u00efve\n"
    encoded_words = b"Subject: =?iso-8859-1?q?caf=E9?= =?bogus?q?x?=\r\n\r\n"
    assert mail_message.from_inbound(inbound(encoded_words)).subject is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"just some words, no headers at all",
        os.urandom(4096),
        bytes(range(256)) * 4,
        b"From: \r\nTo: <<<>>>,,,@@@\r\nCc: (\r\nSubject: \r\n\r\n",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nunterminated',
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b'--b\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' * 200,
        b"Content-Disposition: attachment; filename*=utf-8''%ff%fe\r\nContent-Type: application/x\r\n\r\nx",
        b"From: =?utf-8?b?!!!?= <a@b>\r\nSubject: =?utf-8?q?=ZZ?=\r\n\r\nbody",
    ],
)
def test_mail_that_is_barely_mail_still_gives_a_message(raw: bytes) -> None:
    message = mail_message.from_inbound(inbound(raw))
    assert isinstance(message, email.Message)
    assert isinstance(message.headers, list) and isinstance(message.attachments, list)
    assert message.text is None or isinstance(message.text, str)
    assert message.addressees.from_address is None or isinstance(message.addressees.from_address.address, str)


@pytest.mark.parametrize("shape", [None, {}, [], "x", {"raw": "not media", "envelope": 3, "dkim": {"domains": 5}}])
def test_an_inbound_of_the_wrong_shape_gives_an_empty_message(shape: Any) -> None:
    message = mail_message.from_inbound(shape)
    assert (message.envelope.from_address, message.envelope.recipient) == ("", "")
    assert message.dkim.valid_from_sender is False and message.dkim.domains == []
    assert message.headers == [] and message.subject is None and message.text is None and message.html is None
    assert message.addressees.from_address is None and message.attachments == [] and message.inline_attachments == {}


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_message(raw: bytes) -> None:
    assert isinstance(mail_message.from_inbound(inbound(raw)), email.Message)


def test_a_message_is_portable() -> None:
    message = mail_message.from_inbound(inbound(rich_mail()))
    encoded = wire.encode({"m": message})
    copy = wire.decode(encoded.message, encoded.objects, encoded.media)["m"]
    assert isinstance(copy, email.Message) and copy.subject == message.subject
    assert copy.addressees.from_address.address == "zoe@sender.example"
    assert copy.inline_attachments["logo@x"].get_bytes() == b"\x89PNG"


# -- reply() ---------------------------------------------------------------------------------------------
class Host:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    def __call__(self, mail: Any) -> Any:
        self.mails.append(mail)
        return {"message_id": "<reply@app.example>"}

    def parsed(self, index: int = -1) -> EmailMessage:
        parsed = message_from_bytes(self.mails[index]["raw"].get_bytes(), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    fake = Host()
    monkeypatch.setattr(mail_compose, "hand_to_host", fake)
    return fake


def test_reply_threads_and_goes_back_to_the_sender(host: Host) -> None:
    message = mail_message.from_inbound(inbound(rich_mail()))
    assert message.reply(text="Thanks!") is None
    sent = host.parsed()
    assert [a.addr_spec for a in sent["To"].addresses] == ["zoe@sender.example"]
    assert sent["To"].addresses[0].display_name == "Zoë Ünïcode"
    assert sent["From"].addresses[0].addr_spec == "shop@app.example"  # the envelope recipient
    assert host.mails[-1]["envelope_from"] == "shop@app.example"
    assert sent["Subject"] == "Order ✓ nº 5"  # kept, as Anvil keeps it
    assert sent["In-Reply-To"] == "<abc@sender.example>"
    assert sent["References"] == "<first@sender.example> <abc@sender.example>"
    text = sent.get_body(("plain",))
    assert text is not None and text.get_content().strip() == "Thanks!"


def test_reply_prefers_reply_to_then_from_then_the_envelope(host: Host) -> None:
    base = b"Message-ID: <m1@x.example>\r\nSubject: Re: hello\r\n"
    mail_message.from_inbound(inbound(b"Reply-To: Desk <desk@x.example>\r\nFrom: a@x.example\r\n" + base)).reply()
    assert [a.addr_spec for a in host.parsed()["To"].addresses] == ["desk@x.example"]
    assert host.parsed()["Subject"] == "Re: hello"  # as it was
    assert host.parsed()["References"] == "<m1@x.example>"
    mail_message.from_inbound(inbound(b"From: a@x.example\r\n" + base)).reply()
    assert [a.addr_spec for a in host.parsed()["To"].addresses] == ["a@x.example"]
    mail_message.from_inbound(inbound(base, sender="env@x.example")).reply()
    assert [a.addr_spec for a in host.parsed()["To"].addresses] == ["env@x.example"]
    with pytest.raises(SendFailure, match="Cannot reply"):
        mail_message.from_inbound(inbound(base, sender="")).reply()


def test_reply_keywords_override_the_defaults(host: Host) -> None:
    message = mail_message.from_inbound(inbound(rich_mail()))
    message.reply(to="boss@x.example", subject="Custom", from_address="help", cc="c@x.example", html="<b>x</b>")
    sent = host.parsed()
    assert [a.addr_spec for a in sent["To"].addresses] == ["boss@x.example"]
    assert sent["Subject"] == "Custom" and sent["In-Reply-To"] == "<abc@sender.example>"
    assert host.mails[-1]["envelope_from"] == "help@localhost"
    assert host.mails[-1]["recipients"] == ["boss@x.example", "c@x.example"]


def test_reply_without_a_message_id_or_subject(host: Host) -> None:
    mail_message.from_inbound(inbound(b"From: a@x.example\r\n\r\nhi")).reply(text="ok")
    sent = host.parsed()
    assert sent["Subject"] == "" and "In-Reply-To" not in sent and "References" not in sent


# -- the handler -------------------------------------------------------------------------------------------
@pytest.fixture
def clean_registry() -> Any:
    saved = dict(registry.registrations[EMAIL_HANDLER])
    registry.registrations[EMAIL_HANDLER].clear()
    yield registry.registrations[EMAIL_HANDLER]
    registry.registrations[EMAIL_HANDLER].clear()
    registry.registrations[EMAIL_HANDLER].update(saved)


def test_handle_message_with_and_without_parentheses(clean_registry: Any, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []

    @email.handle_message
    def first(msg: Any) -> str:
        seen.append(("first", msg.subject))
        return "ignored"

    assert first.__name__ == "first" and callable(first)  # the function comes back unchanged
    assert list(clean_registry) == [EMAIL_HANDLER_NAME]
    assert clean_registry[EMAIL_HANDLER_NAME].function(inbound(b"Subject: one\r\n\r\n")) is None
    assert seen == [("first", "one")]

    @email.handle_message()
    def second(msg: Any) -> None:
        seen.append(("second", msg.subject))

    assert "already been registered" in capsys.readouterr().err  # the last one wins, with the registry's warning
    clean_registry[EMAIL_HANDLER_NAME].function(inbound(b"Subject: two\r\n\r\n"))
    assert seen[-1] == ("second", "two")
    email.handle_message(second)
    email.handle_message(fn=second, require_dkim=False)  # Anvil's keywords
    assert "already been registered" not in capsys.readouterr().err  # the same function again: no warning
    with pytest.raises(TypeError, match="require_dkim must be True or False"):
        email.handle_message(require_dkim="yes")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="decorates a function"):
        email.handle_message("name")  # type: ignore[call-overload]


def test_require_dkim_refuses_before_the_function_runs(clean_registry: Any) -> None:
    seen: list[Any] = []

    @email.handle_message(require_dkim=True)
    def strict(msg: Any) -> None:
        seen.append(msg)

    handler = clean_registry[EMAIL_HANDLER_NAME].function
    with pytest.raises(DeliveryFailure) as refused:
        handler(inbound(b"From: Zoe <zoe@sender.example>\r\n\r\nhi", dkim=False, domains=["other.example"]))
    assert str(refused.value) == "No valid DKIM signature for sender.example"
    assert refused.value.smtp_code == 554 and seen == []
    with pytest.raises(DeliveryFailure, match=r"for env\.example"):
        handler(inbound(b"no headers", sender="x@env.example"))
    handler(inbound(b"From: zoe@sender.example\r\n\r\nhi", dkim=True, domains=["sender.example"]))
    assert len(seen) == 1


def test_a_handler_s_own_delivery_failure_passes_through(clean_registry: Any) -> None:
    @email.handle_message
    def picky(msg: Any) -> None:
        raise email.DeliveryFailure("Go away", 550)

    with pytest.raises(DeliveryFailure) as refused:
        clean_registry[EMAIL_HANDLER_NAME].function(inbound(b"\r\n"))
    assert refused.value.smtp_code == 550 and str(refused.value) == "550: Go away"


def test_raw_utf8_headers_are_read_as_utf8_and_can_be_replied_to(host: Host) -> None:
    raw = "From: Zoë <zoe@sender.example>\r\nSubject: Grüße ✓\r\nMessage-ID: <u@x>\r\n\r\nhi".encode()
    message = mail_message.from_inbound(inbound(raw))
    assert message.subject == "Grüße ✓" and ("Subject", "Grüße ✓") in message.headers
    assert message.addressees.from_address is not None and message.addressees.from_address.name == "Zoë"
    message.reply(text="ok")
    assert host.parsed()["To"].addresses[0].display_name == "Zoë"
    assert host.parsed()["Subject"] == "Grüße ✓"
    latin = mail_message.from_inbound(inbound(b"Subject: caf\xe9\r\n\r\n"))
    assert latin.subject == "caf\ufffd"  # 8-bit but not UTF-8: replaced, never an error
