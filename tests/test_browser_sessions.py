"""Sessions, cookies, call context and cross-origin calls, seen from a real browser.

The apps are written into the shared server's root by this module. Every test gets a
fresh browser context (a fresh profile: no session storage, no cookies). A second
origin, a plain ``http.server`` on another port, plays the cross-site page.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import NEEDS_CHROMIUM, TIMEZONE, record_page
from notebook_files import write_notebook
from test_browser import app_server  # noqa: F401 (fixture)

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = NEEDS_CHROMIUM

SESSIONS_APP = "browser_sessions"  # two kernels, no allowed_origins
CORS_APP = "browser_cors"  # lists the second origin in allowed_origins
EXPIRED = "anvil.server.SessionExpiredError"
# A token of the right shape that no session has (the server must say "expired").
BOGUS_TOKEN = "Xq3v9pQz7LmN2rT8wKc4sYb6HdJf1GaE0uViOoPlZk"

FUNCTIONS = """
import os, time
from jupyter_anvil import server

@server.callable
def count():
    n = server.session.get("n", 0) + 1
    server.session["n"] = n
    return [n, os.getpid()]

@server.callable
def hold(seconds):
    time.sleep(seconds)
    return os.getpid()

@server.callable
def cookie_set(kind, key, value, timeout_days=None):
    jar = getattr(server.cookies, kind)
    if timeout_days is None:
        jar[key] = value
    else:
        jar.set(timeout_days, **{key: value})

@server.callable
def cookie_get(kind, key):
    try:
        return {"found": True, "value": getattr(server.cookies, kind)[key]}
    except KeyError:
        return {"found": False}

@server.callable
def cookie_del(kind, key):
    del getattr(server.cookies, kind)[key]

@server.callable
def context_info():
    c = server.context
    return {
        "type": c.type, "app": c.app, "client_type": c.client.type, "ip": c.client.ip,
        "caller_type": c.remote_caller.type, "trusted": c.remote_caller.is_trusted,
        "task": c.background_task_id,
    }

@server.callable
def mark(path):
    with open(path, "a") as f:
        f.write("called\\n")
    return "marked"
"""

BLANK_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="icon" href="data:,"></head><body><p>{title}</p></body></html>"""


# -- servers ---------------------------------------------------------------------------


class OtherOrigin:
    """A plain web server on another port of 127.0.0.1: another origin than the app's."""

    def __init__(self, folder: Path) -> None:
        (folder / "index.html").write_text(BLANK_PAGE.format(title="another origin"))
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None  # type: ignore[method-assign]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def other_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtherOrigin]:
    site = OtherOrigin(tmp_path_factory.mktemp("other-origin"))
    yield site
    site.close()


@pytest.fixture(scope="module")
def server(app_server: Any, other_origin: OtherOrigin) -> Any:  # noqa: F811
    """The shared server, with this module's two apps loaded."""
    root: Path = app_server.root
    write_notebook(root / f"{SESSIONS_APP}.ipynb", [FUNCTIONS], {"kernels": {"min": 2, "max": 2}})
    write_notebook(
        root / f"{CORS_APP}.ipynb",
        [FUNCTIONS],
        {"kernels": {"min": 1, "max": 1}, "allowed_origins": [other_origin.origin]},
    )
    for name in (SESSIONS_APP, CORS_APP):
        (root / name).mkdir(exist_ok=True)
        (root / name / "index.html").write_text(BLANK_PAGE.format(title=name))
    deadline = time.monotonic() + 180
    while True:
        apps = app_server.apps()
        status = {name: apps.get(name, {}).get("status") for name in (SESSIONS_APP, CORS_APP)}
        if all(s == "ready" for s in status.values()):
            return app_server
        assert "error" not in status.values(), {n: apps[n].get("error") for n in status if n in apps}
        assert time.monotonic() < deadline, f"apps not ready: {status}\n{app_server.log_tail()}"
        time.sleep(0.3)


# -- the browser -----------------------------------------------------------------------


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(timezone_id=TIMEZONE, locale="en-US")
    context.set_default_timeout(10_000)
    yield context
    context.close()


class Tab:
    """One browser tab on `url`, importing the client from `client_url`; it records the
    requests and WebSocket URLs it used and the errors it logged."""

    def __init__(self, context: Any, url: str, client_url: str | None = None) -> None:
        self.page = context.new_page()
        self.url = url
        self.client_url = client_url or url.split("/anvil/apps/")[0] + "/anvil/client.js"
        self.requests, self.sockets, self.errors = record_page(self.page)
        self.load()

    def load(self) -> None:
        response = self.page.goto(self.url)
        assert response is not None and response.status == 200, f"GET {self.url}: {response and response.status}"

    def reload(self) -> None:
        response = self.page.reload()
        assert response is not None and response.status == 200

    def run(self, body: str, arg: Any = None) -> Any:
        """Run `body` (an async function body) with the client's exports in scope, plus
        `outcome(promise)`: {ok: value} or {type, message, isAnvilError}."""
        script = f"""async (arg) => {{
            const {{server, kwargs, AnvilError, AnvilServer}} = await import({json.dumps(self.client_url)});
            const outcome = async (promise) => {{
                try {{ return {{ok: await promise}}; }}
                catch (e) {{ return {{type: e.type, message: e.message, isAnvilError: e instanceof AnvilError}}; }}
            }};
            {body}
        }}"""
        return self.page.evaluate(script, arg)

    def calls(self, path: str) -> list[Any]:
        return [r for r in self.requests if path in r.url]


def app_url(server: Any, app: str = SESSIONS_APP) -> str:
    return f"{server.url}anvil/apps/{app}/"


def session_key(server: Any, app: str = SESSIONS_APP) -> str:
    """Where client.js keeps a window's session token in sessionStorage."""
    return f"anvil-session:{app_url(server, app)}"


TRANSPORTS = pytest.mark.parametrize("transport", ["websocket", "http"])


def count(tab: Tab, transport: str, n: int = 1) -> list[int]:
    return tab.run(
        f"""
        server.configure({{transport: {json.dumps(transport)}}});
        const counts = [];
        for (let i = 0; i < {n}; i++) counts.push((await server.call("count"))[0]);
        if (server.transport !== {json.dumps(transport)}) throw new Error(`went over ${{server.transport}}`);
        return counts;
        """
    )


# -- sessions --------------------------------------------------------------------------


@TRANSPORTS
def test_session_counter_across_two_kernels(server: Any, context: Any, transport: str) -> None:
    tab = Tab(context, app_url(server))
    # While `hold` keeps one kernel busy, the pool sends `count` to the other one.
    result = tab.run(
        """
        server.configure({transport: arg});
        const results = [];
        for (let i = 0; i < 6; i++) {
            const hold = i % 2 ? server.call("hold", 0.6) : null;
            if (hold) await new Promise((r) => setTimeout(r, 150));
            results.push(await server.call("count"));
            if (hold) results.push(["held on", await hold]);
        }
        return {results, transport: server.transport, token: server.sessionToken};
        """,
        transport,
    )
    counted = [r for r in result["results"] if r[0] != "held on"]
    assert [n for n, _ in counted] == [1, 2, 3, 4, 5, 6]
    assert len({pid for _, pid in counted}) == 2, f"all calls landed on one kernel: {result['results']}"
    for i, r in enumerate(result["results"]):
        if r[0] == "held on":  # the count beside a hold ran on the other kernel
            assert r[1] != result["results"][i - 1][1]
    assert result["transport"] == transport
    assert isinstance(result["token"], str) and len(result["token"]) >= 22
    assert tab.errors == []


@TRANSPORTS
def test_two_tabs_are_two_sessions_and_a_reload_keeps_one(server: Any, context: Any, transport: str) -> None:
    first = Tab(context, app_url(server))
    second = Tab(context, app_url(server))  # same browser profile, another tab
    assert count(first, transport, 2) == [1, 2]
    assert count(second, transport) == [1]
    assert count(first, transport) == [3]
    token = first.run("return server.sessionToken;")
    assert token != second.run("return server.sessionToken;")

    first.reload()
    assert first.run("return server.sessionToken;") == token
    assert count(first, transport) == [4]
    assert count(second, transport) == [2]
    # The token travels in a header or a message, never in a URL.
    for tab in (first, second):
        assert not [r.url for r in tab.requests if token in r.url]
        assert not [url for url in tab.sockets if token in url]
    headers = [r.all_headers() for r in first.calls("/_/call/")]
    if transport == "http":
        assert headers and all(h["x-anvil-client"] == "browser" for h in headers)
        assert headers[0].get("x-anvil-session") is None  # the first call had no session yet
        assert all(h["x-anvil-session"] == token for h in headers[1:])
    else:
        assert headers == []


def test_a_session_survives_switching_transport(server: Any, context: Any) -> None:
    tab = Tab(context, app_url(server))
    assert count(tab, "websocket", 2) == [1, 2]
    assert count(tab, "http", 2) == [3, 4]
    assert count(tab, "websocket") == [5]


@TRANSPORTS
def test_reset_session_starts_a_new_session(server: Any, context: Any, transport: str) -> None:
    tab = Tab(context, app_url(server))
    result = tab.run(
        """
        server.configure({transport: arg.transport});
        const n = async () => (await server.call("count"))[0];
        const before = [await n(), await n()];
        const oldToken = server.sessionToken;
        server.resetSession();
        const cleared = server.sessionToken;
        const after = [await n(), await n()];
        // Another client object for the same app in this window shares the session.
        const other = new AnvilServer({app: server.app, transport: arg.transport});
        const shared = [(await other.call("count"))[0], other.sessionToken === server.sessionToken];
        return {before, after, shared, cleared, changed: server.sessionToken !== oldToken,
                stored: sessionStorage.getItem(arg.key) === server.sessionToken};
        """,
        {"transport": transport, "key": session_key(server)},
    )
    assert result == {
        "before": [1, 2],
        "after": [1, 2],
        "shared": [3, True],
        "cleared": None,
        "changed": True,
        "stored": True,
    }


@TRANSPORTS
def test_an_expired_session_rejects_calls_until_reset(server: Any, context: Any, transport: str) -> None:
    # The first load finds a token the server does not know (as after a long absence).
    context.add_init_script(
        f"""if (!sessionStorage.getItem("seeded")) {{
            sessionStorage.setItem("seeded", "1");
            sessionStorage.setItem({json.dumps(session_key(server))}, {json.dumps(BOGUS_TOKEN)});
        }}"""
    )
    tab = Tab(context, app_url(server))
    result = tab.run(
        """
        server.configure({transport: arg});
        const seen = [];
        server.onSessionExpired((e) => seen.push([e.type, e instanceof AnvilError]));
        const first = await outcome(server.call("count"));
        const second = await outcome(server.call("count"));
        const expired = server.sessionExpired;
        server.resetSession();
        const after = [(await server.call("count"))[0], (await server.call("count"))[0]];
        return {first, second, seen, expired, after, stillExpired: server.sessionExpired,
                token: server.sessionToken};
        """,
        transport,
    )
    refused = {"type": EXPIRED, "message": "Session expired", "isAnvilError": True}
    assert result["first"] == refused
    assert result["second"] == refused
    assert result["seen"] == [[EXPIRED, True]]  # once, not once per call
    assert result["expired"] is True
    assert result["after"] == [1, 2]
    assert result["stillExpired"] is False
    assert result["token"] not in (None, BOGUS_TOKEN)


def test_a_reload_after_expiry_starts_a_new_session(server: Any, context: Any) -> None:
    context.add_init_script(
        f"""if (!sessionStorage.getItem("seeded")) {{
            sessionStorage.setItem("seeded", "1");
            sessionStorage.setItem({json.dumps(session_key(server))}, {json.dumps(BOGUS_TOKEN)});
        }}"""
    )
    tab = Tab(context, app_url(server))
    assert tab.run('return (await outcome(server.call("count"))).type;') == EXPIRED
    tab.reload()
    assert count(tab, "websocket", 2) == [1, 2]


# -- cookies ---------------------------------------------------------------------------

COOKIE_CALLS = """
    server.configure({transport: arg.transport});
    const out = [];
    for (const {fn, args, kw} of arg.calls) out.push(await server.call(fn, ...args, kwargs(kw)));
    if (server.transport !== arg.transport) throw new Error(`went over ${server.transport}`);
    return out;
"""


def cookie_calls(tab: Tab, transport: str, *calls: tuple[Any, ...]) -> list[Any]:
    """Make the calls in order, each `(function, *args)` with an optional final dict of
    keyword arguments; return their results."""
    encoded = []
    for fn, *args in calls:
        kw = args.pop() if args and isinstance(args[-1], dict) else {}
        encoded.append({"fn": fn, "args": args, "kw": kw})
    return tab.run(COOKIE_CALLS, {"transport": transport, "calls": encoded})


def browser_cookies(context: Any) -> list[dict[str, Any]]:
    return [c for c in context.cookies() if c["domain"] == "127.0.0.1"]


@TRANSPORTS
def test_a_cookie_set_in_one_call_is_read_later_and_after_a_reload(server: Any, context: Any, transport: str) -> None:
    tab = Tab(context, app_url(server))
    got = cookie_calls(
        tab,
        transport,
        ("cookie_get", "local", "name"),
        ("cookie_set", "local", "name", "Ada Lovelace"),
        ("cookie_get", "local", "name"),
    )
    assert got == [{"found": False}, None, {"found": True, "value": "Ada Lovelace"}]
    cookie_posts = [r for r in tab.calls("/_/cookies") if r.method == "POST"]
    assert len(cookie_posts) == (1 if transport == "websocket" else 0)  # the socket trades a ticket

    # HttpOnly and encrypted: the page cannot read it, and the value is not in clear.
    assert tab.run("return document.cookie;") == ""
    stored = browser_cookies(context)
    assert stored and all(c["httpOnly"] for c in stored)
    assert not [c for c in stored if "Ada" in c["value"] or "Lovelace" in c["value"]]
    assert all(c["sameSite"] in ("Lax", "Strict") for c in stored)

    tab.reload()
    for again in ("websocket", "http"):
        assert cookie_calls(tab, again, ("cookie_get", "local", "name")) == [{"found": True, "value": "Ada Lovelace"}]
    # Cookies belong to the browser, not the tab's session: a new session still sees it.
    tab.run("server.resetSession();")
    assert cookie_calls(tab, transport, ("cookie_get", "local", "name")) == [{"found": True, "value": "Ada Lovelace"}]
    # Another tab of the same browser too; another browser profile does not.
    assert cookie_calls(Tab(context, app_url(server)), transport, ("cookie_get", "local", "name"))[0]["found"]
    other_context = context.browser.new_context()
    try:
        assert cookie_calls(Tab(other_context, app_url(server)), transport, ("cookie_get", "local", "name")) == [
            {"found": False}
        ]
    finally:
        other_context.close()


@TRANSPORTS
def test_deleting_a_cookie(server: Any, context: Any, transport: str) -> None:
    tab = Tab(context, app_url(server))
    cookie_calls(tab, transport, ("cookie_set", "local", "a", 1), ("cookie_set", "local", "b", [2, "two"]))
    got = cookie_calls(
        tab, transport, ("cookie_del", "local", "a"), ("cookie_get", "local", "a"), ("cookie_get", "local", "b")
    )
    assert got == [None, {"found": False}, {"found": True, "value": [2, "two"]}]
    tab.reload()
    assert cookie_calls(tab, transport, ("cookie_get", "local", "a"), ("cookie_get", "local", "b")) == [
        {"found": False},
        {"found": True, "value": [2, "two"]},
    ]


@TRANSPORTS
def test_each_cookie_key_expires_on_its_own(server: Any, context: Any, transport: str) -> None:
    tab = Tab(context, app_url(server))
    got = cookie_calls(
        tab,
        transport,
        ("cookie_set", "local", "brief", "soon gone", {"timeout_days": 2 / 86400}),  # two seconds
        ("cookie_set", "local", "lasting", "still here"),
        ("cookie_get", "local", "brief"),
    )
    assert got[2] == {"found": True, "value": "soon gone"}
    time.sleep(2.5)
    assert cookie_calls(tab, transport, ("cookie_get", "local", "brief"), ("cookie_get", "local", "lasting")) == [
        {"found": False},
        {"found": True, "value": "still here"},
    ]
    tab.reload()
    assert cookie_calls(tab, transport, ("cookie_get", "local", "brief"), ("cookie_get", "local", "lasting")) == [
        {"found": False},
        {"found": True, "value": "still here"},
    ]


@TRANSPORTS
def test_shared_cookies_are_apart_from_local_ones(server: Any, context: Any, transport: str) -> None:
    tab = Tab(context, app_url(server))
    got = cookie_calls(
        tab,
        transport,
        ("cookie_set", "shared", "theme", "dark"),
        ("cookie_set", "local", "theme", "light"),
        ("cookie_get", "shared", "theme"),
        ("cookie_get", "local", "theme"),
    )
    assert got[2:] == [{"found": True, "value": "dark"}, {"found": True, "value": "light"}]
    tab.reload()
    got = cookie_calls(tab, transport, ("cookie_del", "local", "theme"), ("cookie_get", "shared", "theme"))
    assert got == [None, {"found": True, "value": "dark"}]
    assert tab.run("return document.cookie;") == ""


def test_other_tabs_see_a_cookie_change_on_their_next_call(server: Any, context: Any) -> None:
    # A socket carries the cookies of its handshake: after a change elsewhere, a tab's
    # client replaces its socket before the next call, without losing calls in flight.
    first = Tab(context, app_url(server))
    second = Tab(context, app_url(server))
    for tab in (first, second):
        assert cookie_calls(tab, "websocket", ("cookie_get", "local", "k")) == [{"found": False}]
    in_flight = second.page.evaluate_handle(
        """async () => {
            const {server} = await import(new URL("../../client.js", location.href).href);
            return {reply: server.call("hold", 1.0)};  // not awaited: still in flight
        }"""
    )
    time.sleep(0.2)
    cookie_calls(first, "websocket", ("cookie_set", "local", "k", "from the first tab"))
    got = cookie_calls(second, "websocket", ("cookie_get", "local", "k"))
    assert got == [{"found": True, "value": "from the first tab"}]
    assert second.run("return server._retiring.size;") == 1  # the old socket waits for its call
    assert isinstance(in_flight.evaluate("async (h) => await h.reply"), int)  # answered on the old socket
    assert second.run("return server._retiring.size;") == 0
    assert len(second.sockets) == 2
    # The tab that made the change keeps its socket.
    assert cookie_calls(first, "websocket", ("cookie_get", "local", "k"))[0]["found"]
    assert len(first.sockets) == 1


def test_a_cookie_change_over_http_renews_the_sockets_of_this_tab_and_others(server: Any, context: Any) -> None:
    # The browser stores an HTTP call's cookies itself; the reply's X-Anvil-Cookies header
    # tells the client that sockets opened before (this page's, other tabs') are stale.
    first = Tab(context, app_url(server))
    second = Tab(context, app_url(server))
    assert cookie_calls(second, "websocket", ("cookie_get", "local", "h")) == [{"found": False}]
    first.run(
        """window.other = new AnvilServer({app: arg, transport: "websocket"});
        await window.other.call("cookie_get", "local", "h");""",
        SESSIONS_APP,
    )
    assert cookie_calls(first, "http", ("cookie_set", "local", "h", "over http")) == [None]
    (set_call,) = first.calls("/_/call/cookie_set")
    header = set_call.response().headers.get("x-anvil-cookies")
    assert header == "changed"
    assert cookie_calls(second, "websocket", ("cookie_get", "local", "h")) == [{"found": True, "value": "over http"}]
    assert len(second.sockets) == 2
    got = first.run('return await window.other.call("cookie_get", "local", "h");')
    assert got == {"found": True, "value": "over http"}
    assert len(first.sockets) == 2
    # A call that changes no cookie renews nothing.
    assert cookie_calls(first, "http", ("cookie_get", "local", "h")) == [{"found": True, "value": "over http"}]
    assert cookie_calls(second, "websocket", ("count",))[0][0] >= 1
    assert len(second.sockets) == 2


# -- call context ----------------------------------------------------------------------


@TRANSPORTS
def test_call_context_of_a_browser_call(server: Any, context: Any, transport: str) -> None:
    tab = Tab(context, app_url(server))
    info = tab.run('server.configure({transport: arg}); return await server.call("context_info");', transport)
    assert info == {
        "type": "server_module",
        "app": SESSIONS_APP,
        "client_type": "browser",
        "ip": "127.0.0.1",
        "caller_type": "browser",
        "trusted": False,
        "task": None,
    }


# -- cross-origin ----------------------------------------------------------------------


def other_tab(context: Any, server: Any, other_origin: OtherOrigin) -> Tab:
    """A page of the other origin that imports the client from the app's server."""
    return Tab(context, f"{other_origin.origin}/index.html", client_url=f"{server.url}anvil/client.js")


def test_another_origin_can_import_the_client(server: Any, context: Any, other_origin: OtherOrigin) -> None:
    tab = other_tab(context, server, other_origin)
    assert tab.run("return typeof server.call;") == "function"
    response = context.request.get(f"{server.url}anvil/client.js", headers={"Origin": other_origin.origin})
    assert response.headers.get("access-control-allow-origin") == "*"


@TRANSPORTS
def test_another_origin_is_refused_by_an_app_that_does_not_list_it(
    server: Any, context: Any, other_origin: OtherOrigin, transport: str, tmp_path: Path
) -> None:
    marker = tmp_path / "called"
    tab = other_tab(context, server, other_origin)
    result = tab.run(
        """
        server.configure({app: arg.app, transport: arg.transport});
        return {refused: await outcome(server.call("mark", arg.marker)), token: server.sessionToken};
        """,
        {"app": SESSIONS_APP, "transport": transport, "marker": str(marker)},
    )
    assert result["refused"]["isAnvilError"] is True
    assert result["refused"]["type"] == "anvil.server.RuntimeUnavailableError"
    assert result["token"] is None
    # Nor can a page get around the preflight with a "simple" request it cannot read.
    tab.run(
        """
        await fetch(arg.url, {method: "POST", mode: "no-cors", body: JSON.stringify({args: [arg.marker]})})
            .catch(() => null);
        await fetch(arg.url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                              body: JSON.stringify({args: [arg.marker]})}).catch(() => null);
        """,
        {"url": f"{app_url(server)}_/call/mark", "marker": str(marker)},
    )
    time.sleep(0.5)
    assert not marker.exists(), "a refused cross-origin call ran"
    # The server's own answers, as a script (no browser) sees them.
    http = context.request.post(
        f"{app_url(server)}_/call/mark",
        headers={"Origin": other_origin.origin, "Content-Type": "application/json"},
        data=json.dumps({"args": [str(marker)]}),
    )
    assert http.status == 403
    assert "access-control-allow-origin" not in http.headers
    assert not marker.exists()


@TRANSPORTS
def test_another_origin_listed_by_the_app_may_call_it(
    server: Any, context: Any, other_origin: OtherOrigin, transport: str, tmp_path: Path
) -> None:
    marker = tmp_path / "called"
    tab = other_tab(context, server, other_origin)
    result = tab.run(
        """
        server.configure({app: arg.app, transport: arg.transport});
        const counts = [(await server.call("count"))[0], (await server.call("count"))[0]];
        const marked = await server.call("mark", arg.marker);
        return {counts, marked, transport: server.transport, token: server.sessionToken};
        """,
        {"app": CORS_APP, "transport": transport, "marker": str(marker)},
    )
    assert result["counts"] == [1, 2]  # the session works across origins too
    assert result["marked"] == "marked"
    assert result["transport"] == transport
    assert isinstance(result["token"], str)
    assert marker.read_text() == "called\n"
    assert tab.errors == []
    # The CORS answer names this origin only, never "*".
    http = context.request.post(
        f"{app_url(server, CORS_APP)}_/call/count",
        headers={"Origin": other_origin.origin, "Content-Type": "application/json"},
        data="{}",
    )
    assert http.status == 200
    assert http.headers.get("access-control-allow-origin") == other_origin.origin
    assert http.headers.get("access-control-allow-credentials") == "true"
    assert "x-anvil-session" in http.headers.get("access-control-expose-headers", "").lower()


# -- the hello example -----------------------------------------------------------------


def test_hello_counts_visits_per_tab(server: Any, context: Any) -> None:
    hello = f"{server.url}anvil/apps/hello/"
    first = Tab(context, hello)
    visits = first.page.locator("#visits")
    sync_api.expect(visits).to_have_text("1")
    first.reload()
    sync_api.expect(visits).to_have_text("2")
    second = Tab(context, hello)
    sync_api.expect(second.page.locator("#visits")).to_have_text("1")
    first.reload()
    sync_api.expect(visits).to_have_text("3")
    first.page.click("#new-session")
    sync_api.expect(visits).to_have_text("1")
    assert first.errors == [] and second.errors == []


def greeted_with_remember_me(context: Any, hello: str) -> Tab:
    """A new tab of the hello page, greeted as Ada with 'remember me' checked (a cookie set)."""
    tab = Tab(context, hello)
    page = tab.page
    sync_api.expect(page.locator("#visits")).to_have_text("1")
    sync_api.expect(page.locator("#welcome-back")).to_have_text("")
    page.fill("#name", "Ada")
    page.check("#remember")
    page.click("#greet")
    sync_api.expect(page.locator("#greeting")).to_have_text("Hello, Ada!")
    page.wait_for_function("() => !document.querySelector('#greet').disabled")
    return tab


def test_hello_remembers_a_name_in_a_cookie(server: Any, context: Any) -> None:
    hello = f"{server.url}anvil/apps/hello/"
    tab = greeted_with_remember_me(context, hello)
    page = tab.page
    tab.reload()
    sync_api.expect(page.locator("#welcome-back")).to_have_text("Welcome back, Ada!")
    assert page.input_value("#name") == "Ada"
    assert page.is_checked("#remember")
    # A new tab (a new session) is still greeted: the cookie is the browser's.
    sync_api.expect(Tab(context, hello).page.locator("#welcome-back")).to_have_text("Welcome back, Ada!")
    page.uncheck("#remember")
    page.click("#greet")
    page.wait_for_function("() => !document.querySelector('#greet').disabled")
    tab.reload()
    sync_api.expect(page.locator("#visits")).to_have_text("3")
    sync_api.expect(page.locator("#welcome-back")).to_have_text("")
    assert page.input_value("#name") == ""
    assert tab.errors == []


def test_a_new_session_on_an_open_socket_sees_the_current_cookies(server: Any, context: Any) -> None:
    """The socket learned the cookies at its handshake; a session started on it later
    (resetSession) must see the cookie changes made since, both a set and a delete."""
    hello = f"{server.url}anvil/apps/hello/"
    tab = greeted_with_remember_me(context, hello)
    page = tab.page
    page.click("#new-session")  # no reload: the same page, its socket already open
    sync_api.expect(page.locator("#visits")).to_have_text("1")
    sync_api.expect(page.locator("#welcome-back")).to_have_text("Welcome back, Ada!")
    page.uncheck("#remember")
    page.click("#greet")
    page.wait_for_function("() => !document.querySelector('#greet').disabled")
    page.click("#new-session")
    sync_api.expect(page.locator("#visits")).to_have_text("1")
    sync_api.expect(page.locator("#welcome-back")).to_have_text("")
    assert not page.is_checked("#remember")
    assert len(tab.sockets) >= 1
    assert tab.errors == []
