"""The example app notebooks/helpdesk.ipynb, as its markdown tells a newcomer to try it:
mail sent with swaks gets a ticket number back (in the outbox), an empty message is
refused with the handler's own words, and its send_report puts a report with an
attachment in the outbox."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import time
from typing import Any

import httpx
import pytest
from conftest import AnvilServer

AUTH = {"Authorization": "token test-token-not-for-apps"}


@pytest.fixture(scope="module")
def server(anvil_server: AnvilServer) -> AnvilServer:
    anvil_server.wait_until_loaded(("helpdesk",))
    return anvil_server


def outbox_message(server: AnvilServer, subject: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{server.url}anvil/api/mail", params={"app": "helpdesk", "box": "outbox"}, headers=AUTH, timeout=30
        ).json()
        found = [m for m in page["messages"] if m["subject"] == subject]
        if found:
            return found[0]  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"no message {subject!r} in the outbox")


def test_mail_sent_with_swaks_gets_a_ticket_back(server: AnvilServer) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is installed by scripts/test (Debian package)"
    sent = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{server.smtp_port}", "--to", "helpdesk@localhost", "--from",
         "you@example.com", "--header", "Subject: My printer is on fire", "--body", "Please help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    reply = outbox_message(server, "My printer is on fire")
    assert reply["recipients"] == ["you@example.com"] and reply["envelope_from"] == "helpdesk@localhost"
    detail = httpx.get(f"{server.url}anvil/api/mail/{reply['id']}", headers=AUTH, timeout=30).json()
    assert "ticket #" in detail["text"] and "Please help" in detail["text"]
    headers = {name.lower(): value for name, value in detail["headers"]}
    assert headers["in-reply-to"].startswith("<")


def test_an_empty_message_is_refused_with_the_handlers_words(server: AnvilServer) -> None:
    with (
        smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as smtp,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        smtp.sendmail("you@example.com", ["helpdesk@localhost"], b"Subject: (empty)\r\n\r\n")
    assert refused.value.smtp_code == 554
    assert b"Empty message" in refused.value.smtp_error


def test_send_report_puts_a_report_in_the_outbox(server: AnvilServer) -> None:
    message_id = server.call("helpdesk", "send_report", "boss@example.com")
    report = outbox_message(server, "Weekly tickets")
    assert report["message_id"] == message_id and report["status"] == "kept"
    detail = httpx.get(f"{server.url}anvil/api/mail/{report['id']}", headers=AUTH, timeout=30).json()
    assert [p["name"] for p in detail["parts"]] == ["tickets.csv"]
