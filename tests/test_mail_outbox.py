"""Email with the default transport, the outbox, on a real server: server code sends,
nothing leaves the machine, and the admin API lists, reads, downloads and deletes what was
kept; a browser cannot send; the live feed tells of each message."""

from __future__ import annotations

import asyncio
import email.policy
import json
from collections.abc import Iterator
from email.parser import BytesParser
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer, private_server
from notebook_files import write_notebook

APP = """
from jupyter_anvil import email, server
from jupyter_anvil.media import BlobMedia

@server.callable
def send(**kw):
    if "attach" in kw:
        kw["attachments"] = [BlobMedia("text/csv", kw.pop("attach").encode(), name="data.csv")]
    if "logo" in kw:
        kw["inline_attachments"] = {"logo": BlobMedia("image/png", kw.pop("logo").encode(), name="logo.png")}
    return email.send(**kw).message_id

@server.callable
def send_bad(address):
    try:
        email.send(to=address, subject="x", text="x")
    except email.SendFailure as e:
        return "SendFailure: " + str(e)
    return "sent"
"""

AUTH = {"Authorization": "token test-token-not-for-apps"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(
        tmp_path_factory,
        "outbox",
        lambda root: write_notebook(root / "mailer.ipynb", [APP], {"kernels": {"min": 1}}),
        "--AnvilApp.mail_from_domain=shop.example",
    ) as running:
        running.wait_until_loaded(("mailer",))
        yield running


def admin(server: AnvilServer, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"{server.url}anvil/api/{path}", headers=AUTH, timeout=30)


def newest(server: AnvilServer, **query: str) -> dict[str, Any]:
    page = admin(server, "mail?" + "&".join(f"{k}={v}" for k, v in query.items())).json()
    assert page["messages"], page
    return page["messages"][0]  # type: ignore[no-any-return]


def test_a_sent_message_is_kept_in_the_outbox_and_read_back_whole(server: AnvilServer) -> None:
    message_id = server.call(
        "mailer",
        "send",
        to="Zoë Martin <zoe@example.com>, bob@example.com",
        bcc="secret@example.com",
        subject="Café ☕ report",
        text="plain body",
        html='<p>html body <img src="cid:logo"></p>',
        attach="a,b\n1,2\n",
        logo="PNGDATA",
    )
    assert message_id.startswith("<") and message_id.endswith(">")
    mail = newest(server, app="mailer", box="outbox")
    assert mail["status"] == "kept" and mail["message_id"] == message_id
    assert mail["envelope_from"] == "no-reply@shop.example"
    assert sorted(mail["recipients"]) == ["bob@example.com", "secret@example.com", "zoe@example.com"]
    assert mail["subject"] == "Café ☕ report"
    detail = admin(server, f"mail/{mail['id']}").json()
    names = [name.lower() for name, _ in detail["headers"]]
    assert "bcc" not in names
    assert detail["text"].strip() == "plain body" and "html body" in detail["html"]
    parts = {p["name"]: p for p in detail["parts"]}
    assert parts["data.csv"]["content_type"] == "text/csv" and not parts["data.csv"]["inline"]
    assert parts["logo.png"]["inline"] and parts["logo.png"]["content_id"] == "logo"
    assert detail["raw_url"] == f"/anvil/api/mail/{mail['id']}/raw"  # under the server's base URL
    csv = httpx.get(server.url.rstrip("/") + parts["data.csv"]["url"], headers=AUTH, timeout=30)
    assert csv.status_code == 200 and csv.content == b"a,b\n1,2\n"
    assert csv.headers["content-disposition"].startswith("attachment")
    raw = admin(server, f"mail/{mail['id']}/raw")
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("message/rfc822")
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw.content)
    assert parsed["Subject"] == "Café ☕ report" and parsed["Bcc"] is None
    assert parsed.get_content_type() == "multipart/mixed"
    assert b"\r\n" in raw.content and b"secret@example.com" not in raw.content


def test_a_malformed_address_raises_send_failure_naming_it(server: AnvilServer) -> None:
    answer = server.call("mailer", "send_bad", "not an address@@")
    assert answer.startswith("SendFailure: ") and "not an address@@" in answer


def test_a_browser_cannot_send_mail(server: AnvilServer) -> None:
    response = server.post(
        "mailer", "anvil.private.email.send", {"args": [], "kwargs": {"envelope_from": "a@b.c", "recipients": []}}
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "anvil.server.PermissionDenied"
    assert "Cannot send email from client code" in error["message"]


def test_the_admin_api_refuses_bad_queries_and_unknown_ids(server: AnvilServer) -> None:
    assert admin(server, "mail?box=trash").status_code == 400
    assert admin(server, "mail?limit=0").status_code == 400
    assert admin(server, "mail?limit=abc").status_code == 400
    assert admin(server, "mail?before=nan").status_code == 400
    unknown = "a" * 26
    for path in (f"mail/{unknown}", f"mail/{unknown}/raw", f"mail/{unknown}/parts/0"):
        assert admin(server, path).status_code == 404
    assert admin(server, "mail/../../etc").status_code == 404
    assert admin(server, f"mail/{unknown}", "DELETE").status_code == 404
    assert httpx.get(f"{server.url}anvil/api/mail", timeout=30).status_code == 403


def test_pages_go_back_in_time_and_delete_removes_one(server: AnvilServer) -> None:
    for n in range(3):
        server.call("mailer", "send", to="pager@example.com", subject=f"page {n}", text="x")
    first = admin(server, "mail?app=mailer&limit=2").json()
    assert len(first["messages"]) == 2 and first["next"] is not None
    second = admin(server, f"mail?app=mailer&limit=2&before={first['next']}").json()
    ids = [m["id"] for m in first["messages"] + second["messages"]]
    assert len(ids) == len(set(ids))
    gone = first["messages"][0]["id"]
    assert admin(server, f"mail/{gone}", "DELETE").status_code == 204
    assert admin(server, f"mail/{gone}").status_code == 404


async def test_the_live_feed_tells_of_each_message(server: AnvilServer) -> None:
    url = f"ws://127.0.0.1:{server.port}/anvil/api/tasks/feed"
    async with websockets.connect(url, additional_headers=AUTH) as feed:
        await asyncio.to_thread(server.call, "mailer", "send", to="feed@example.com", subject="fed", text="x")
        while True:
            event = json.loads(await asyncio.wait_for(feed.recv(), 30))
            if event["type"] == "mail":
                break
    assert event["mail"]["subject"] == "fed" and event["mail"]["box"] == "outbox"
