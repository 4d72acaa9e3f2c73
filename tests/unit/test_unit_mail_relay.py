"""The relay URL (every scheme, passwords and their redaction, URLs we refuse) and how a
relay's replies are classified. The transport against real relays: tests/test_mail_relay.py."""

from __future__ import annotations

import pytest

from jupyter_anvil.host.mail.relay import PASSWORD_ENV, RelayConfig, redact_url
from jupyter_anvil.host.mail.transport import (
    Delivered,
    Outbox,
    PermanentFailure,
    SmtpRelay,
    TemporaryFailure,
    classify,
    reply_text,
)

NO_ENV: dict[str, str] = {}


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port"),
    [
        ("smtp://mail.example.com", "smtp", "mail.example.com", 587),
        ("smtp://mail.example.com:2525", "smtp", "mail.example.com", 2525),
        ("SMTP://Mail.Example.COM:25", "smtp", "mail.example.com", 25),
        ("smtps://mail.example.com", "smtps", "mail.example.com", 465),
        ("smtps://mail.example.com:10465/", "smtps", "mail.example.com", 10465),
        ("smtp+plain://127.0.0.1", "smtp+plain", "127.0.0.1", 25),
        ("smtp+plain://localhost:8025", "smtp+plain", "localhost", 8025),
        ("smtp+plain://[::1]:8025", "smtp+plain", "::1", 8025),
    ],
)
def test_each_scheme_and_its_default_port(url: str, scheme: str, host: str, port: int) -> None:
    config = RelayConfig.from_url(url, environ=NO_ENV)
    assert (config.scheme, config.host, config.port, config.user, config.password) == (scheme, host, port, None, None)
    assert config.uses_tls is (scheme != "smtp+plain")


def test_user_and_password_are_percent_decoded() -> None:
    config = RelayConfig.from_url("smtp://me%40example.com:p%40ss%3Aw%2Frd@relay:587", environ=NO_ENV)
    assert config.user == "me@example.com"
    assert config.password == "p@ss:w/rd"
    assert config.shown == "smtp://me%40example.com:***@relay:587"


def test_password_argument_first_then_url_then_environment() -> None:
    env = {PASSWORD_ENV: "from-env"}
    assert RelayConfig.from_url("smtp://u:in-url@h", "from-trait", environ=env).password == "from-trait"
    assert RelayConfig.from_url("smtp://u:in-url@h", "", environ=env).password == "in-url"
    assert RelayConfig.from_url("smtp://u@h", "", environ=env).password == "from-env"
    assert RelayConfig.from_url("smtp://u@h", None, environ=env).password == "from-env"


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret-env")
    assert RelayConfig.from_url("smtps://user@relay").password == "s3cret-env"


def test_a_password_without_a_user_is_not_kept() -> None:
    config = RelayConfig.from_url("smtp+plain://localhost:25", "unused", environ={PASSWORD_ENV: "x"})
    assert config.user is None and config.password is None


def test_a_user_without_any_password_is_a_start_up_error() -> None:
    with pytest.raises(ValueError, match=r"names the user 'bob' but no password.*JUPYTER_ANVIL_SMTP_PASSWORD"):
        RelayConfig.from_url("smtp://bob@relay", environ=NO_ENV)


def test_the_password_is_never_shown() -> None:
    secret = "hunter2-Secret"
    config = RelayConfig.from_url(f"smtps://bob:{secret}@relay.example.com:465", environ=NO_ENV)
    for text in (str(config), repr(config), config.shown, repr(SmtpRelay(config))):
        assert secret not in text
        assert "bob:***@relay.example.com:465" in text
    assert str(config) == "smtps://bob:***@relay.example.com:465"
    # a password from the trait is never shown either, and is redacted as if in the URL
    config = RelayConfig.from_url("smtp://bob@relay", secret, environ=NO_ENV)
    assert str(config) == "smtp://bob:***@relay:587"
    assert secret not in repr(config)


def test_scrub_removes_the_password_plain_and_as_auth_sends_it() -> None:
    config = RelayConfig.from_url("smtp://bob@relay", "hunter2-Secret", environ=NO_ENV)
    assert config.scrub("535 bad password hunter2-Secret") == "535 bad password ***"
    assert config.scrub("535 bad AGJvYgBodW50ZXIyLVNlY3JldA==") == "535 bad ***"
    assert config.scrub("250 ok") == "250 ok"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("http://relay.example.com", "must start smtp://"),
        ("relay.example.com:25", "must start smtp://"),
        ("smtpx://relay", "must start smtp://"),
        ("smtp://", "names no host"),
        ("smtp://:25", "names no host"),
        ("smtp://user:pw@:25", "names no host"),
        ("smtp://bad host/", "control characters|names no host"),
        ("smtp://relay:0", "bad port"),
        ("smtp://relay:65536", "bad port"),
        ("smtp://relay:-1", "bad port"),
        ("smtp://relay:port", "bad port"),
        ("smtp://relay/some/path", "no path or query"),
        ("smtp://relay?verify=no", "no path or query"),
        ("smtp://relay#x", "no path or query"),
        ("smtp://relay\r\nRCPT TO:<x@y>", "control characters"),
    ],
)
def test_urls_we_cannot_use(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RelayConfig.from_url(url, environ=NO_ENV)


@pytest.mark.parametrize(
    "url",
    [
        "smtp://u:TopSecret@relay:99999",
        "smtp://u:TopSecret@relay/path",
        "ftp://u:TopSecret@relay",
        "smtp://u:Top@Secret@:1",
    ],
)
def test_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        RelayConfig.from_url(url, environ=NO_ENV)
    assert "Secret" not in str(caught.value)
    assert "u:***@" in str(caught.value)


def test_redact_url_takes_everything_up_to_the_last_at() -> None:
    assert redact_url("smtp://u:p@ss/w@rd@relay:25") == "smtp://u:***@relay:25"
    assert redact_url("smtp://u@relay") == "smtp://u@relay"
    assert redact_url("smtp://relay") == "smtp://relay"
    assert redact_url("not a url") == "not a url"


def test_tls_options() -> None:
    import ssl

    strict = RelayConfig.from_url("smtps://relay", environ=NO_ENV).tls_context()
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    loose = RelayConfig.from_url("smtps://relay", verify_tls=False, environ=NO_ENV).tls_context()
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname
    with pytest.raises(ValueError, match="cannot read the mail relay's CA file"):
        RelayConfig.from_url("smtp://relay", ca_file="/nonexistent/ca.pem", environ=NO_ENV)
    # smtp+plain never uses TLS: its CA file is not read
    RelayConfig.from_url("smtp+plain://relay", ca_file="/nonexistent/ca.pem", environ=NO_ENV)


def test_a_bad_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        RelayConfig.from_url("smtp://relay", timeout=0, environ=NO_ENV)


# -- classification ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (550, PermanentFailure),
        (552, PermanentFailure),
        (554, PermanentFailure),
        (535, PermanentFailure),
        (421, TemporaryFailure),
        (450, TemporaryFailure),
        (451, TemporaryFailure),
        (452, TemporaryFailure),
        (None, TemporaryFailure),
        (-1, TemporaryFailure),  # smtplib's code for a reply it could not read
    ],
)
def test_classify_by_code(code: int | None, kind: type) -> None:
    outcome = classify(code, "text")
    assert isinstance(outcome, kind)
    assert outcome.smtp_code == code and outcome.outcome == "text"


def test_reply_text_is_one_line_with_its_code() -> None:
    assert reply_text(550, b"5.1.1 <x@y>: no such user") == "550 5.1.1 <x@y>: no such user"
    assert reply_text(451, b"4.3.0 first line\n4.3.0 second line") == "451 4.3.0 first line 4.3.0 second line"
    assert reply_text(None, "connection refused") == "connection refused"
    assert reply_text(550, b"\xff bad bytes") == "550 \ufffd bad bytes"


def test_delivered_names_refused_recipients() -> None:
    assert Delivered(250, "250 OK").outcome == "accepted by the relay: 250 OK"
    one = Delivered(250, "250 OK", {"x@y": "550 no such user"})
    assert one.outcome == "accepted by the relay: 250 OK (refused 1 recipients: x@y: 550 no such user)"
    many = Delivered(250, "250 OK", {f"r{i}@y": "550 no" for i in range(8)})
    assert "refused 8 recipients" in many.outcome and "and 3 more" in many.outcome


async def test_the_outbox_sends_nothing() -> None:
    outbox = Outbox()
    assert outbox.sends_mail is False
    assert isinstance(await outbox.deliver(b"x", "a@b", ["c@d"]), PermanentFailure)
