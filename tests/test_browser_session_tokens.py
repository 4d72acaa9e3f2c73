"""A page's session token always names a stored session (issue 13, 2.6), seen from a
real browser on a server of this module's own, which the tests restart.

The server hands a window a token only once its session holds something: a page that
stored nothing has no token, so a restarted server has nothing to refuse; a page whose
session holds data keeps it across the restart. A window stays one session across its
transports, and a token arriving for a session the page has reset is not taken back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets.sync.client
from conftest import NEEDS_CHROMIUM, REPO, TIMEZONE, AnvilServer, private_server
from notebook_files import write_notebook
from test_browser_sessions import BLANK_PAGE, Tab, app_url

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = NEEDS_CHROMIUM

APP = "tokens"
FUNCTIONS = """
import time
from jupyter_anvil import server

@server.callable
def echo(value):
    return value

@server.callable
def count():
    n = server.session.get("n", 0) + 1
    server.session["n"] = n
    return [n]

@server.callable
def put(key, value, seconds=0):
    time.sleep(seconds)
    server.session[key] = value

@server.callable
def keys():
    return sorted(server.session.keys())
"""


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    def write(root: Path) -> None:
        shutil.copytree(REPO / "notebooks", root, dirs_exist_ok=True)  # the hello example
        write_notebook(root / f"{APP}.ipynb", [FUNCTIONS], {"kernels": {"min": 1, "max": 1}})
        (root / APP).mkdir()
        (root / APP / "index.html").write_text(BLANK_PAGE.format(title=APP))

    with private_server(tmp_path_factory, "tokens", write) as server:
        server.wait_until_loaded((APP, "hello"))
        yield server


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(timezone_id=TIMEZONE, locale="en-US")
    context.set_default_timeout(20_000)
    yield context
    context.close()


def restart(server: AnvilServer) -> None:
    server.stop()
    server.start(wait_for=(APP, "hello"))


def page_errors(tab: Tab) -> list[str]:
    # while the server is down, the browser logs its failed reconnects and the client's
    # checks whether the app is online again: not the page's fault
    return [e for e in tab.errors if "WebSocket" not in e and "net::ERR_CONNECTION_REFUSED" not in e]


CALLS = """
server.configure({transport: arg.transport});
const expiries = [];
server.onSessionExpired((e) => expiries.push(e.type));
const out = [];
for (const [fn, ...args] of arg.calls) {
    const result = await outcome(server.call(fn, ...args));
    out.push("ok" in result ? result.ok : result);
}
return {out, expiries, expired: server.sessionExpired, token: server.sessionToken};
"""


def calls(tab: Tab, transport: str, *calls: list[Any]) -> dict[str, Any]:
    return dict(tab.run(CALLS, {"transport": transport, "calls": calls}))


@pytest.mark.parametrize("transport", ["websocket", "auto"])
def test_a_page_with_an_empty_session_keeps_calling_across_a_restart(
    own_server: AnvilServer, context: Any, transport: str
) -> None:
    tab = Tab(context, app_url(own_server, APP))
    before = calls(tab, transport, ["echo", 1], ["echo", 2])
    assert before == {"out": [1, 2], "expiries": [], "expired": False, "token": None}
    restart(own_server)
    after = calls(tab, transport, ["echo", 3], ["echo", 4], ["count"], ["count"])
    assert after["out"] == [3, 4, [1], [2]] and after["expiries"] == [] and after["expired"] is False
    assert isinstance(after["token"], str)  # stored now: the page was told its token
    assert page_errors(tab) == []


def test_a_page_whose_session_holds_data_keeps_it_across_a_restart(own_server: AnvilServer, context: Any) -> None:
    tab = Tab(context, app_url(own_server, APP))
    before = calls(tab, "websocket", ["count"], ["count"])
    assert before["out"] == [[1], [2]]
    token = before["token"]
    assert isinstance(token, str) and len(token) == 43
    with websockets.sync.client.connect(own_server.ws_url(APP)) as socket:  # the store has it
        socket.send(json.dumps({"type": "HELLO", "session": token}))
        assert json.loads(socket.recv(timeout=30)) == {"type": "SESSION", "session": token}
    restart(own_server)
    after = calls(tab, "websocket", ["count"], ["keys"])
    assert after == {"out": [[3], ["n"]], "expiries": [], "expired": False, "token": token}
    tab.reload()  # the token is in sessionStorage
    assert calls(tab, "auto", ["count"])["out"] == [[4]]
    assert page_errors(tab) == []


def test_the_hello_page_works_across_a_restart(own_server: AnvilServer, context: Any) -> None:
    tab = Tab(context, f"{own_server.url}anvil/apps/hello/")
    page = tab.page
    sync_api.expect(page.locator("#visits")).to_have_text("1")
    restart(own_server)
    page.fill("#name", "Ada")
    page.click("#greet")
    sync_api.expect(page.locator("#greeting")).to_have_text("Hello, Ada!")
    assert page.text_content("#error") == "" and page.text_content("#session-error") == ""
    tab.reload()
    sync_api.expect(page.locator("#visits")).to_have_text("2")  # the same session
    assert page_errors(tab) == []


def test_a_window_stays_one_session_across_its_transports(own_server: AnvilServer, context: Any) -> None:
    """The socket runs on a fresh session of its own until the window has a token; once
    either transport stores the session, the other moves onto it."""
    tab = Tab(context, app_url(own_server, APP))
    result = tab.run(
        """
        const ws = new AnvilServer({app: arg, transport: "websocket"});
        const http = new AnvilServer({app: arg, transport: "http"});
        const n = async (s) => (await s.call("count"))[0];
        await ws.call("echo", 0);  // the socket is open, on a fresh unstored session
        const fresh = ws.sessionToken;
        const first = [await n(http), await n(ws), await n(http), await n(ws)];  // stored over HTTP
        const firstToken = ws.sessionToken;
        ws.resetSession();
        await http.call("echo", 0);
        const second = [await n(ws), await n(http), await n(ws)];  // stored over the socket
        return {fresh, first, second, transports: [ws.transport, http.transport],
                same: ws.sessionToken === http.sessionToken, changed: ws.sessionToken !== firstToken,
                tokens: [typeof firstToken, typeof ws.sessionToken]};
        """,
        APP,
    )
    assert result == {
        "fresh": None,
        "first": [1, 2, 3, 4],
        "second": [1, 2, 3],
        "transports": ["websocket", "http"],
        "same": True,
        "changed": True,
        "tokens": ["string", "string"],
    }
    assert page_errors(tab) == []


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_a_session_stored_after_reset_session_does_not_come_back(
    own_server: AnvilServer, context: Any, transport: str
) -> None:
    """A call sent before resetSession() stores the old (tokenless) session; its token
    must not become the window's: calls from then on run in the new session."""
    tab = Tab(context, app_url(own_server, APP))
    result = tab.run(
        """
        server.configure({transport: arg});
        await server.call("echo", 0);
        const slow = server.call("put", "old", 1, 1.0);
        await new Promise((r) => setTimeout(r, 300));
        server.resetSession();
        await slow;
        const afterSlow = server.sessionToken;
        const counted = (await server.call("count"))[0];
        const keys = await server.call("keys");
        return {afterSlow, counted, keys, token: typeof server.sessionToken, expired: server.sessionExpired};
        """,
        transport,
    )
    assert result == {"afterSlow": None, "counted": 1, "keys": ["n"], "token": "string", "expired": False}
    assert page_errors(tab) == []
