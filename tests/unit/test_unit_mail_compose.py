"""email.send's message building (kernel/mail_compose.py), parsed back with the stdlib: every
keyword, Anvil's layout, Unicode, bcc only in the envelope, bad input with its SendFailure,
and what is handed to the host (through the module's one seam, ``hand_to_host``)."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_anvil import email
from jupyter_anvil.errors import SendFailure
from jupyter_anvil.kernel import mail_compose
from jupyter_anvil.media import BlobMedia
from jupyter_anvil.protocol import MAX_MESSAGE_BYTES

DOMAIN = "mail.example.org"


def build(**kw: Any) -> tuple[mail_compose.Outgoing, EmailMessage]:
    outgoing = mail_compose.compose(kw, domain=DOMAIN, app="shop")
    parsed = message_from_bytes(outgoing.raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return outgoing, parsed


def structure(part: EmailMessage) -> Any:
    if part.is_multipart():
        return [part.get_content_type(), [structure(p) for p in part.iter_parts()]]  # type: ignore[arg-type]
    return part.get_content_type()


def test_every_keyword_round_trips() -> None:
    png, csv = BlobMedia("image/png", b"\x89PNG\r\n\x00", name="logo.png"), BlobMedia("text/csv", b"a,b\n1,2\n")
    outgoing, parsed = build(
        to='Jöhn Dœ <john@example.com>, "Doe, Jane" <jane@example.com>',
        cc=["carol@example.com", "Dave <dave@example.com>"],
        bcc="hidden@example.com",
        from_address="Shop <shop@example.com>",
        subject="Your order ✓ — ünïcode",
        text="Thanks ✓",
        html='<p>Thanks <img src="cid:logo"></p>',
        attachments=[csv, None, BlobMedia("application/pdf", b"%PDF-1.4", name="Rechnung ü.pdf")],
        inline_attachments={"logo": png},
        in_reply_to="<orig@example.com>",
        references="<first@example.com> <orig@example.com>",
        reply_to="Support <support@example.com>",
    )
    assert [a.addr_spec for a in parsed["To"].addresses] == ["john@example.com", "jane@example.com"]
    assert parsed["To"].addresses[0].display_name == "Jöhn Dœ"
    assert parsed["To"].addresses[1].display_name == "Doe, Jane"
    assert [a.addr_spec for a in parsed["Cc"].addresses] == ["carol@example.com", "dave@example.com"]
    assert parsed["From"].addresses[0].display_name == "Shop"
    assert parsed["From"].addresses[0].addr_spec == "shop@example.com"
    assert parsed["Reply-To"].addresses[0].addr_spec == "support@example.com"
    assert str(parsed["Subject"]) == "Your order ✓ — ünïcode"
    assert parsed["In-Reply-To"] == "<orig@example.com>"
    assert parsed["References"] == "<first@example.com> <orig@example.com>"
    assert parsed["Date"].datetime is not None
    assert parsed["MIME-Version"] == "1.0"
    # Anvil's layout: mixed > related > alternative(text, html) + inline, then the attachments
    assert structure(parsed) == [
        "multipart/mixed",
        [
            ["multipart/related", [["multipart/alternative", ["text/plain", "text/html"]], "image/png"]],
            "text/csv",
            "application/pdf",
        ],
    ]
    body, csv_part, pdf_part = parsed.iter_parts()
    alternative, inline = body.iter_parts()  # type: ignore[attr-defined]
    text_part, html_part = alternative.iter_parts()
    assert text_part.get_content().replace("\r\n", "\n") == "Thanks ✓\n"  # text is canonical CRLF
    assert html_part.get_content().strip() == '<p>Thanks <img src="cid:logo"></p>'
    assert inline["Content-ID"] == "<logo>"
    assert inline.get_content_disposition() == "inline"
    assert inline.get_filename() == "logo.png"
    assert inline.get_content() == b"\x89PNG\r\n\x00"
    # unnamed attachments are "Attachment N", N their position in the list (as Anvil)
    assert csv_part.get_filename() == "Attachment 1" and csv_part.get_content_disposition() == "attachment"
    assert csv_part.get_payload(decode=True) == b"a,b\n1,2\n"
    assert pdf_part.get_filename() == "Rechnung ü.pdf"
    assert pdf_part.get_content() == b"%PDF-1.4"
    assert outgoing.envelope_from == "shop@example.com"
    assert outgoing.recipients == [
        "john@example.com",
        "jane@example.com",
        "carol@example.com",
        "dave@example.com",
        "hidden@example.com",
    ]


def test_bcc_is_in_the_envelope_never_in_the_headers() -> None:
    outgoing, parsed = build(to="a@example.com", bcc=["Secret Person <secret@example.com>", "other@example.com"])
    assert outgoing.recipients == ["a@example.com", "secret@example.com", "other@example.com"]
    assert "Bcc" not in parsed
    assert b"secret" not in outgoing.raw.lower() and b"other@" not in outgoing.raw
    only_bcc, parsed = build(bcc="secret@example.com", text="x")
    assert only_bcc.recipients == ["secret@example.com"] and "To" not in parsed and b"secret" not in only_bcc.raw


def test_the_wire_form_is_crlf_and_seven_bit() -> None:
    outgoing, _ = build(
        to="Zoë <zoe@bücher.de>", subject="☃ " * 60, text="ü" * 2000 + "\nline", html="<b>é</b>", from_name="Ünï"
    )
    assert not re.search(rb"(?<!\r)\n", outgoing.raw), "every line ends CRLF"
    assert outgoing.raw.isascii(), "non-ASCII is encoded: no relay needs 8BITMIME or SMTPUTF8"
    assert max(len(line) for line in outgoing.raw.split(b"\r\n")) <= 998
    assert b"=?utf-8?" in outgoing.raw  # RFC 2047 names and subject
    assert "zoe@xn--bcher-kva.de" in outgoing.recipients  # IDNA domain, in the envelope and the header
    assert b"<zoe@xn--bcher-kva.de>" in outgoing.raw


def test_text_only_html_only_and_empty_bodies() -> None:
    _, parsed = build(to="a@example.com", text="just text")
    assert structure(parsed) == ["multipart/mixed", [["multipart/alternative", ["text/plain"]]]]
    _, parsed = build(to="a@example.com", html="<p>x</p>")
    assert structure(parsed) == ["multipart/mixed", [["multipart/alternative", ["text/html"]]]]
    _, parsed = build(to="a@example.com")
    assert structure(parsed) == ["multipart/mixed", [["multipart/alternative", ["text/plain"]]]]
    assert parsed["Subject"] == ""


def test_the_sender_defaults_and_bare_local_parts() -> None:
    outgoing, parsed = build(to="a@example.com")
    assert outgoing.envelope_from == f"no-reply@{DOMAIN}" and str(parsed["From"]) == f"no-reply@{DOMAIN}"
    outgoing, parsed = build(to="a@example.com", from_address="support")
    assert outgoing.envelope_from == f"support@{DOMAIN}"
    outgoing, parsed = build(to="a@example.com", from_address="Help Desk <help>")
    assert outgoing.envelope_from == f"help@{DOMAIN}" and parsed["From"].addresses[0].display_name == "Help Desk"
    _, parsed = build(to="a@example.com", from_address="Help Desk <help@example.com>", from_name="Ünï Team")
    assert parsed["From"].addresses[0].display_name == "Ünï Team"
    _, parsed = build(to="a@example.com", from_name="Robot")
    assert str(parsed["From"]) == f"Robot <no-reply@{DOMAIN}>"


def test_message_id_and_date() -> None:
    outgoing, parsed = build(to="a@example.com")
    assert parsed["Message-ID"] == outgoing.message_id
    assert re.fullmatch(rf"<[0-9a-f]+-[0-9a-f]+-shop@{re.escape(DOMAIN)}>", outgoing.message_id)
    assert mail_compose.new_message_id("my app!/x", DOMAIN).endswith(f"-my-app-x@{DOMAIN}>")
    assert outgoing.message_id != build(to="a@example.com")[0].message_id


@pytest.mark.parametrize(
    "bad",
    ["foo", "a@", "@example.com", "a@b@c.com", "a b@example.com", "<a@example.com", "a@-x.com", "a@x..com",
     "Name <a@example.com> junk", "müller@example.com", "a@example.com\r\nBcc: evil@example.com", "a@exa mple.com"],
)  # fmt: skip
def test_a_malformed_address_raises_send_failure_naming_it(bad: str) -> None:
    with pytest.raises(SendFailure) as raised:
        build(to=["ok@example.com", bad])
    assert str(raised.value).startswith("Invalid email address: ")
    assert bad.split("\r")[0].strip() in str(raised.value) or "Bcc" in bad
    with pytest.raises(SendFailure, match="Invalid email address"):
        build(to="ok@example.com", cc=bad)


def test_the_bad_piece_of_a_list_is_named() -> None:
    with pytest.raises(SendFailure, match=r"^Invalid email address: not-an-address$"):
        build(to='good@example.com, "Doe, Jane" <jane@example.com>, not-an-address')
    with pytest.raises(SendFailure, match=r"^Invalid email address: x@y.com, nope$"):
        build(to="a@example.com", from_address="x@y.com, nope")  # one sender only


def test_no_recipients() -> None:
    for kw in ({}, {"to": ""}, {"to": [], "cc": " , "}, {"to": None}):
        with pytest.raises(SendFailure, match="No recipients"):
            build(**kw)


def test_too_many_recipients() -> None:
    many = [f"r{i}@example.com" for i in range(mail_compose.MAX_RECIPIENTS + 1)]
    with pytest.raises(SendFailure, match="Too many recipients"):
        build(bcc=many)
    assert len(build(bcc=many[:-1])[0].recipients) == mail_compose.MAX_RECIPIENTS
    assert build(to="A@example.com", cc="a@example.com")[0].recipients == ["A@example.com"]


def test_unknown_keywords_are_a_type_error_naming_them() -> None:
    with pytest.raises(TypeError, match=r"send\(\) got an unexpected keyword argument 'tp'"):
        build(tp="a@example.com")
    with pytest.raises(TypeError, match=r"'subjet', 'body'"):
        build(to="a@example.com", subjet="x", body="y")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"subject": 3}, "Keyword argument 'subject' must be a string, not int"),
        ({"text": b"bytes"}, "Keyword argument 'text' must be a string, not bytes"),
        ({"html": ["x"]}, "Keyword argument 'html' must be a string, not list"),
        ({"cc": 5}, "Keyword argument 'cc' must be a string, or list of strings, not int"),
        ({"bcc": ["a@example.com", 3]}, "Keyword argument 'bcc' must be a string, or list of strings"),
        ({"attachments": b"x"}, "Keyword argument 'attachments' must be a Media object or a list of Media objects"),
        ({"attachments": ["x"]}, "not str"),
        ({"inline_attachments": [BlobMedia("image/png", b"")]}, "must be a dict of {content_id: Media}"),
        ({"inline_attachments": {"logo": "x"}}, "must be a dict of {content_id: Media}"),
        ({"inline_attachments": {"a b": BlobMedia("image/png", b"")}}, "Invalid inline attachment id"),
        ({"from_address": ["a@example.com"]}, "Keyword argument 'from_address' must be a string"),
        ({"references": 4}, "Keyword argument 'references' must be a string, or list of strings"),
    ],
)
def test_wrong_types_raise_send_failure_saying_what_is_expected(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(SendFailure) as raised:
        build(to="a@example.com", **kw)
    assert message in str(raised.value)


def test_header_values_cannot_inject_headers() -> None:
    outgoing, parsed = build(
        to="a@example.com",
        subject="hi\r\nBcc: evil@example.com",
        from_name="x\nX-Evil: 1",
        in_reply_to="<a@b>\r\nX-Evil: 2",
        references=["<a@b>", "<c@d>\nX-Evil: 3"],
    )
    assert "Bcc" not in parsed and "X-Evil" not in parsed
    assert parsed["Subject"] == "hi Bcc: evil@example.com"
    assert outgoing.recipients == ["a@example.com"]


def test_media_types_that_cannot_be_base64_go_as_octet_stream() -> None:
    _, parsed = build(
        to="a@example.com",
        attachments=[
            BlobMedia("message/rfc822", b"Subject: x\r\n\r\nbody", name="fwd.eml"),
            BlobMedia("not a type", b"x"),
            BlobMedia("text/plain; charset=latin-1", "é".encode("latin-1"), name="n.txt"),
        ],
    )
    fwd, odd, latin = list(parsed.iter_parts())[1:]
    assert (fwd.get_content_type(), fwd.get_filename(), fwd.get_payload(decode=True)) == (
        "application/octet-stream",
        "fwd.eml",
        b"Subject: x\r\n\r\nbody",
    )
    assert odd.get_content_type() == "application/octet-stream"
    assert latin.get_content_type() == "text/plain" and latin.get_payload(decode=True) == "é".encode("latin-1")


def test_the_limit_is_the_encoded_size() -> None:
    media = BlobMedia("application/octet-stream", b"\0" * 30_000)
    kw = {"to": "a@example.com", "attachments": media}
    with pytest.raises(SendFailure, match=r"Message too big: \d+ bytes encoded, the limit is 35000 bytes"):
        mail_compose.compose(kw, domain=DOMAIN, app="a", max_bytes=35_000)
    built = mail_compose.compose(kw, domain=DOMAIN, app="a", max_bytes=45_000)
    assert 40_000 < len(built.raw) <= 45_000


def test_a_message_over_the_limit_is_refused_before_it_is_built() -> None:
    big = BlobMedia("application/octet-stream", b"\0" * (MAX_MESSAGE_BYTES * 3 // 4 + 1024))
    with pytest.raises(SendFailure, match=rf"Message too big: .* the limit is {MAX_MESSAGE_BYTES} bytes"):
        build(to="a@example.com", attachments=big)


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
    subject=st.text(st.characters(blacklist_categories=("Cs",)), max_size=200),
    local=st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]", fullmatch=True),
)
def test_any_name_and_subject_survive_the_round_trip(name: str, subject: str, local: str) -> None:
    if ".." in local:
        return
    outgoing, parsed = build(to=[f"{local}@example.com"], from_name=name, subject=subject)
    assert outgoing.raw.isascii() and not re.search(rb"(?<!\r)\n", outgoing.raw)
    assert parsed["To"].addresses[0].addr_spec == f"{local}@example.com"
    # compared without whitespace: folding may add or drop some (the stdlib splits at U+00A0 too)
    controls = "[\x00-\x1f\x7f\x85\u2028\u2029]"
    assert "".join(str(parsed["Subject"]).split()) == "".join(re.sub(controls, " ", subject).split())
    assert "".join(parsed["From"].addresses[0].display_name.split()) == "".join(re.sub(controls, " ", name).split())


# -- what reaches the host ------------------------------------------------------------------------------
class Host:
    """Stands in for the host's send service at the module's seam."""

    def __init__(self, answer: Any = None) -> None:
        self.mails: list[Any] = []
        self.answer = answer

    def __call__(self, mail: Any) -> Any:
        self.mails.append(mail)
        return self.answer


def test_send_hands_the_host_the_raw_message_and_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host({"message_id": "<from-the-host@example.org>"})
    monkeypatch.setattr(mail_compose, "hand_to_host", host)
    report = email.send(to="a@example.com", bcc="b@example.com", subject="hi", text="x")
    assert isinstance(report, email.SendReport) and report.message_id == "<from-the-host@example.org>"
    (mail,) = host.mails
    assert set(mail) == {"raw", "envelope_from", "recipients"}
    assert isinstance(mail["raw"], BlobMedia) and mail["raw"].content_type == "message/rfc822"
    assert mail["envelope_from"] == "no-reply@localhost"  # no app kernel here: the fallback domain
    assert mail["recipients"] == ["a@example.com", "b@example.com"]
    parsed = message_from_bytes(mail["raw"].get_bytes(), policy=policy.default)
    assert parsed["Subject"] == "hi" and "Bcc" not in parsed


def test_send_keeps_its_own_message_id_if_the_host_answers_none(monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host(None)
    monkeypatch.setattr(mail_compose, "hand_to_host", host)
    report = email.send(to="a@example.com")
    parsed = message_from_bytes(host.mails[0]["raw"].get_bytes(), policy=policy.default)
    assert report.message_id == parsed["Message-ID"]


def test_send_outside_an_app_kernel_says_where_it_works() -> None:
    with pytest.raises(SendFailure, match=r"email\.send works in the app's server code"):
        email.send(to="a@example.com")


def test_nothing_is_handed_over_when_the_message_is_bad(monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host()
    monkeypatch.setattr(mail_compose, "hand_to_host", host)
    with pytest.raises(SendFailure):
        email.send(to="bad address")
    with pytest.raises(TypeError):
        email.send(to="a@example.com", nope=1)
    with pytest.raises(TypeError):
        email.send("a@example.com")  # type: ignore[call-arg]
    assert host.mails == []


def test_send_report_is_portable() -> None:
    from jupyter_anvil import wire

    encoded = wire.encode({"r": email.SendReport("<x@y>")})
    decoded = wire.decode(encoded.message, encoded.objects, encoded.media)["r"]
    assert isinstance(decoded, email.SendReport) and decoded.message_id == "<x@y>"
    assert encoded.objects[0]["typeName"] == "anvil.email.SendReport"


def test_header_texts_and_address_lists_are_bounded() -> None:
    limit = mail_compose.MAX_HEADER_CHARS
    for keyword in ("subject", "from_name", "in_reply_to", "references"):
        with pytest.raises(SendFailure, match=rf"Keyword argument '{keyword}' is too long: {limit + 1} characters"):
            build(to="a@example.com", **{keyword: "x" * (limit + 1)})
    build(to="a@example.com", subject="é" * limit)  # at the limit: fine
    with pytest.raises(SendFailure) as raised:
        build(to="Long " * 1000 + "<a@example.com>")
    assert str(raised.value).startswith("Invalid email address: Long Long") and str(raised.value).endswith("...")
    assert len(str(raised.value)) < 300
    with pytest.raises(SendFailure, match=r"Too many recipients in 'reply_to': 101"):
        build(to="a@example.com", reply_to=",".join(f"r{i}@example.com" for i in range(101)))
    with pytest.raises(SendFailure, match=r"Too many recipients in 'cc'"):
        build(to="a@example.com", cc="x" * (mail_compose.MAX_ADDRESS_CHARS * mail_compose.MAX_RECIPIENTS + 1))
    assert len(build(to="a@example.com", text="é" * 100_000, html="<p>" * 100_000)[0].raw) < 1_000_000


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(alphabet='ab@.<>", ()\\:;\r\nü-', max_size=40)))
def test_any_address_text_is_sent_or_refused_with_send_failure(text: str) -> None:
    try:
        outgoing, parsed = build(to=text, cc=[text], reply_to=text)
    except SendFailure as e:
        assert str(e).startswith(("Invalid email address: ", "No recipients"))
        return
    assert outgoing.recipients and all(re.fullmatch(r"\S+@[a-z0-9.\[\]:-]+", r) for r in outgoing.recipients)
    assert set(parsed.keys()) <= {
        "From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    }  # fmt: skip
