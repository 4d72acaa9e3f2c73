"""server.cookies (encrypted HttpOnly browser cookies), server.context, and which
origins may call an app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from apps import write_sessions_app
from conftest import AnvilServer, private_server

BROWSER = {"X-Anvil-Client": "browser"}


class Browser:
    """What client.js does over HTTP: a cookie jar, the session token, the browser mark."""

    def __init__(self, server: AnvilServer, app: str = "sessions") -> None:
        self.server, self.app = server, app
        self.http = httpx.Client(base_url=server.url, timeout=60)
        self.token: str | None = None

    def post(self, function: str, *args: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        sent = {**BROWSER, **({"X-Anvil-Session": self.token} if self.token else {}), **(headers or {})}
        response = self.http.post(f"anvil/apps/{self.app}/_/call/{function}", json={"args": list(args)}, headers=sent)
        self.token = response.headers.get("X-Anvil-Session", self.token)
        return response

    def call(self, function: str, *args: Any) -> Any:
        response = self.post(function, *args)
        assert response.status_code == 200, response.text
        return response.json()["response"]


def test_cookies_set_in_one_call_are_read_in_the_next(anvil_server: AnvilServer) -> None:
    browser = Browser(anvil_server)
    response = browser.post("set_item", "local", "name", "Ada")
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith("anvil-local=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/anvil/apps/sessions/"):
        assert attribute in set_cookie
    assert "Ada" not in set_cookie  # encrypted
    assert browser.call("get_cookie", "local", "name") == "Ada"
    assert Browser(anvil_server).call("get_cookie", "local", "name") == "missing"  # another browser
    browser.call("set_cookie", "shared", "theme", "dark")
    assert browser.call("get_cookie", "shared", "theme") == "dark"
    assert browser.call("get_cookie", "local", "name") == "Ada"
    browser.call("del_cookie", "local", "name")
    assert browser.call("get_cookie", "local", "name") == "missing"
    error = browser.post("strict_cookie", "name").json()["error"]
    assert error["type"] == "KeyError" and error["message"] == "'name'"
    browser.call("clear_cookies", "shared")
    assert browser.call("get_cookie", "shared", "theme") == "missing"


def test_each_key_expires_on_its_own(anvil_server: AnvilServer) -> None:
    browser = Browser(anvil_server)
    browser.call("set_cookie", "local", "brief", "soon gone", 2 / 86400)
    browser.call("set_cookie", "local", "lasting", "stays")
    assert browser.call("get_cookie", "local", "brief") == "soon gone"
    time.sleep(2.5)
    assert browser.call("get_cookie", "local", "brief") == "missing"
    assert browser.call("get_cookie", "local", "lasting") == "stays"


def test_too_big_or_media_cookies_are_refused_and_nothing_is_lost(anvil_server: AnvilServer) -> None:
    browser = Browser(anvil_server)
    browser.call("set_item", "local", "keep", "me")
    error = browser.post("big_cookie", 5000).json()["error"]
    assert error == {**error, "type": "anvil.server.CookieError", "message": "Cookie too big"}
    assert browser.call("big_cookie", 1000) is None  # well under the limit
    media_error = browser.post("media_cookie").json()["error"]
    assert media_error["type"] == "anvil.server.SerializationError" and "Media" in media_error["message"]
    assert browser.call("get_cookie", "local", "keep") == "me"


def test_a_tampered_cookie_is_ignored_and_logged(anvil_server: AnvilServer) -> None:
    browser = Browser(anvil_server)
    browser.call("set_item", "local", "role", "user")
    sealed = browser.http.cookies["anvil-local"]
    forged = sealed[:40] + ("A" if sealed[40] != "A" else "B") + sealed[41:]
    browser.http.cookies.clear()
    browser.http.cookies.set("anvil-local", forged, path="/anvil/apps/sessions/")
    response = browser.post("get_cookie", "local", "role")
    assert response.status_code == 200 and response.json()["response"] == "missing"
    assert "could not be decrypted" in anvil_server.log_tail(200)
    # another app's cookie, or the other kind, does not open here either
    browser.http.cookies.clear()
    browser.http.cookies.set("anvil-shared", sealed, path="/")
    assert browser.call("get_cookie", "shared", "role") == "missing"


def test_cookies_need_a_browser(anvil_server: AnvilServer) -> None:
    response = anvil_server.post("sessions", "get_cookie", {"args": ["local", "x"]})
    error = response.json()["error"]
    assert error["type"] == "anvil.server.CookieError"
    assert error["message"] == "This connection is not from a web browser - cannot access cookies."


async def test_cookies_changed_over_the_websocket_reach_the_browser_by_ticket(anvil_server: AnvilServer) -> None:
    async with websockets.connect(anvil_server.ws_url("sessions")) as socket:
        await socket.send(json.dumps({"type": "HELLO", "session": None, "client": "browser"}))
        assert json.loads(await socket.recv())["type"] == "SESSION"
        await socket.send(json.dumps({"type": "CALL", "id": "1", "command": "set_item", "args": ["local", "k", "v"]}))
        reply = json.loads(await socket.recv())
        await socket.send(json.dumps({"type": "CALL", "id": "2", "command": "get_cookie", "args": ["local", "k"]}))
        assert json.loads(await socket.recv())["response"] == "v"  # the connection keeps the new value
    ticket = reply["cookies"]
    url = f"{anvil_server.url}anvil/apps/sessions/_/cookies"
    redeemed = httpx.post(url, json={"ticket": ticket})
    assert redeemed.status_code == 204 and redeemed.headers["set-cookie"].startswith("anvil-local=")
    again = httpx.post(url, json={"ticket": ticket})
    assert again.status_code == 400 and again.json()["error"]["type"] == "anvil.server.CookieError"
    browser = Browser(anvil_server)
    browser.http.cookies.set("anvil-local", redeemed.cookies["anvil-local"], path="/anvil/apps/sessions/")
    assert browser.call("get_cookie", "local", "k") == "v"


def test_call_context_for_http_and_browser_callers(anvil_server: AnvilServer) -> None:
    plain = anvil_server.call("sessions", "context_info")
    assert plain == {
        "type": "server_module", "app": "sessions", "task": None,
        "client": {"type": "http", "ip": "127.0.0.1", "location": None},
        "remote_caller": {"type": "http", "is_trusted": False},
        "stack": ["http"],
    }  # fmt: skip
    browser = Browser(anvil_server).call("context_info")
    assert browser["client"]["type"] == "browser" and browser["remote_caller"] == {
        "type": "browser",
        "is_trusted": False,
    }
    nested = Browser(anvil_server).call("nested_context")
    assert nested["remote_caller"] == {"type": "server_module", "is_trusted": True}
    assert nested["client"]["type"] == "browser" and nested["stack"] == ["browser", "server_module"]
    # X-Forwarded-For counts only when the server trusts a proxy (it does not here)
    spoofed = anvil_server.post("sessions", "context_info", {}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert spoofed.json()["response"]["client"]["ip"] == "127.0.0.1"


def test_cross_origin_calls_need_the_apps_consent(anvil_server: AnvilServer) -> None:
    evil = {"Origin": "http://evil.example"}
    refused = anvil_server.post("sessions", "count", {}, headers=evil)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "anvil.server.PermissionDenied"
    assert "access-control-allow-origin" not in refused.headers
    preflight = httpx.options(f"{anvil_server.url}anvil/apps/sessions/_/call/count", headers=evil)
    assert preflight.status_code == 403
    assert (
        anvil_server.post("sessions", "count", {}, headers={"Origin": anvil_server.url.rstrip("/")}).status_code == 200
    )
    good = {"Origin": "http://good.example"}
    allowed = anvil_server.post("partner", "hello", {}, headers=good)
    assert allowed.status_code == 200 and allowed.json()["response"] == "hello, partner"
    assert allowed.headers["access-control-allow-origin"] == "http://good.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    preflight = httpx.options(
        f"{anvil_server.url}anvil/apps/partner/_/call/hello",
        headers={**good, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    )
    assert preflight.status_code == 204
    assert "X-Anvil-Session" in preflight.headers["access-control-allow-headers"]
    assert anvil_server.post("partner", "hello", {}, headers=evil).status_code == 403


# -- key rotation and trusted proxies need a server of our own ------------------------------


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    def write(root: Path) -> None:
        write_sessions_app(root / "sessions.ipynb", kernels={"min": 1, "max": 1})

    with private_server(tmp_path_factory, "cookie", write, "--ServerApp.trust_xheaders=True") as server:
        yield server


def test_rotating_the_key_logs_nobody_out(proxied_server: AnvilServer) -> None:
    keys = Path(proxied_server.workdir, "jupyter_data_dir", "jupyter_anvil", "cookie_keys")
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    browser = Browser(proxied_server)
    browser.call("set_item", "local", "who", "Ada")
    old_cookie = browser.http.cookies["anvil-local"]
    proxied_server.stop()
    env = {**os.environ, "JUPYTER_DATA_DIR": str(keys.parent.parent)}
    rotated = subprocess.run(
        [sys.executable, "-m", "jupyter_anvil", "rotate-cookie-key"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "new cookie key" in rotated.stdout
    assert len(keys.read_text().split()) == 2 and oct(keys.stat().st_mode & 0o777) == "0o600"
    proxied_server.start()
    assert browser.call("get_cookie", "local", "who") == "Ada"  # sealed with the old key, still opens
    browser.call("set_item", "local", "who", "Grace")
    assert browser.http.cookies["anvil-local"] != old_cookie
    assert browser.call("get_cookie", "local", "who") == "Grace"


def test_a_trusted_proxy_supplies_the_client_ip(proxied_server: AnvilServer) -> None:
    response = proxied_server.post("sessions", "context_info", {}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.json()["response"]["client"]["ip"] == "203.0.113.9"


# -- the cookie ticket endpoint (issue 13, 2.9) ----------------------------------------------


async def issue_ticket(server: AnvilServer, key: str = "k") -> str:
    """A ticket as a page gets one: a call over the WebSocket that changes cookies."""
    async with websockets.connect(server.ws_url("sessions")) as socket:
        await socket.send(json.dumps({"type": "HELLO", "session": None, "client": "browser"}))
        assert json.loads(await socket.recv())["type"] == "SESSION"
        await socket.send(json.dumps({"type": "CALL", "id": "1", "command": "set_item", "args": ["local", key, "v"]}))
        reply = json.loads(await socket.recv())
    return str(reply["cookies"])


def ticket_url(server: AnvilServer, app: str = "sessions") -> str:
    return f"{server.url}anvil/apps/{app}/_/cookies"


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "text/plain;charset=UTF-8"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {},  # a no-cors fetch of a Blob without a type sends none
    ],
)
async def test_a_ticket_must_come_as_json(anvil_server: AnvilServer, headers: dict[str, str]) -> None:
    ticket = await issue_ticket(anvil_server)
    body = json.dumps({"ticket": ticket}).encode()
    refused = httpx.post(ticket_url(anvil_server), content=body, headers=headers)
    assert refused.status_code == 415, refused.text
    error = refused.json()["error"]
    assert error["type"] == "anvil.server.SerializationError" and "application/json" in error["message"]
    assert "set-cookie" not in refused.headers
    # the refused request used nothing up
    redeemed = httpx.post(ticket_url(anvil_server), content=body, headers={"Content-Type": "application/json"})
    assert redeemed.status_code == 204 and redeemed.headers["set-cookie"].startswith("anvil-local=")


async def test_a_ticket_presented_on_another_app_stays_valid_for_its_own(anvil_server: AnvilServer) -> None:
    ticket = await issue_ticket(anvil_server)
    for app in ("core", "no_such_app", "partner"):
        wrong = httpx.post(ticket_url(anvil_server, app), json={"ticket": ticket})
        assert wrong.status_code == 400 and wrong.json()["error"]["type"] == "anvil.server.CookieError"
        assert "set-cookie" not in wrong.headers
    right = httpx.post(ticket_url(anvil_server), json={"ticket": ticket})
    assert right.status_code == 204 and right.headers["set-cookie"].startswith("anvil-local=")
    assert httpx.post(ticket_url(anvil_server), json={"ticket": ticket}).status_code == 400  # one use


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[" * 3000 + b"]" * 3000, 413, "at most"),
        (b"[" * 2000 + b"]" * 2000, 400, "not valid JSON"),
        (b'["ticket"]', 400, '{"ticket": "..."}'),
        (b'{"ticket": 5}', 400, '{"ticket": "..."}'),
        (b'{"ticket": null}', 400, '{"ticket": "..."}'),
        (b"", 400, '{"ticket": "..."}'),
        (b'{"ticket": "' + b"x" * 10000 + b'"}', 413, "at most"),
        (b'{"ticket": "\\ud800"}', 400, "Unknown or expired"),
    ],
)
def test_a_malformed_ticket_request_is_a_clear_4xx(
    anvil_server: AnvilServer, body: bytes, status: int, words: str
) -> None:
    response = httpx.post(ticket_url(anvil_server), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_the_ticket_table_is_bounded_and_expires() -> None:
    from jupyter_anvil.host.cookies import CookieTickets

    tickets = CookieTickets(ttl=0.3, limit=3)
    issued = [tickets.issue("a", [f"h{i}"]) for i in range(5)]
    assert len(tickets) == 3
    assert tickets.redeem(issued[0], "a") is None and tickets.redeem(issued[1], "a") is None  # the oldest went
    assert tickets.redeem(issued[2], "b") is None  # another app's route: still there
    assert tickets.redeem(issued[2], "a") == ["h2"]
    assert tickets.redeem(issued[2], "a") is None  # one use
    time.sleep(0.4)
    assert tickets.redeem(issued[3], "a") is None
    fresh = tickets.issue("a", ["new"])
    assert len(tickets) == 1 and tickets.redeem(fresh, "a") == ["new"]
