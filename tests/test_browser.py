"""The browser client and the hello app, driven in a real browser (Chromium via Playwright).

The page is served by the real server; nothing here sends the Jupyter token to the app
surface. Pages run in a non-UTC time zone with a half-hour offset (Asia/Kolkata, +05:30)
so that date handling cannot pass by accident.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

from conftest import NEEDS_CHROMIUM, TIMEZONE  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

pytestmark = NEEDS_CHROMIUM


# -- the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_server(anvil_server: Any) -> Any:
    """conftest's server, once the hello app answers a call from outside (its kernel warm)."""
    deadline = time.monotonic() + 120
    call = f"{anvil_server.url}anvil/apps/hello/_/call/greet"
    while True:
        request = urllib.request.Request(
            call, data=b'{"args": ["ready?"]}', headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if response.status == 200:
                    return anvil_server
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the hello app at {call} did not answer within 120 s")
        time.sleep(0.5)


# -- the browser -----------------------------------------------------------------------


class Page:
    """A page of the hello app, with what it did on the network and what went wrong."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.root = url[: url.rindex("/") + 1]  # the app's folder: {base}anvil/apps/hello/
        self.sockets: list[str] = []
        self.posts: list[str] = []
        self.errors: list[str] = []
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on("request", lambda r: self.posts.append(r.url) if r.method == "POST" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        response = page.goto(url)
        assert response is not None and response.status == 200, f"GET {url}: {response and response.status}"

    def run(self, body: str, arg: Any = None) -> Any:
        """Run `body` (an async function body) in the page with the client's exports in
        scope, plus `outcome(promise)`: {ok: value} or {type, message, isAnvilError}."""
        script = f"""async (arg) => {{
            const client = await import(new URL("../../client.js", location.href).href);
            const {{server, kwargs, AnvilError, AnvilServer, anvilDate, isAnvilDate,
                    portable, portableTypeName}} = client;
            const outcome = async (promise) => {{
                try {{ return {{ok: await promise}}; }}
                catch (e) {{ return {{type: e.type, message: e.message, isAnvilError: e instanceof AnvilError}}; }}
            }};
            {body}
        }}"""
        return self.page.evaluate(script, arg)


def open_page(browser: Any, url: str) -> Iterator[Page]:
    context = browser.new_context(timezone_id=TIMEZONE, locale="en-US")
    context.set_default_timeout(10_000)  # calls take milliseconds; fail fast when a page is broken
    page = Page(context.new_page(), url)
    yield page
    context.close()


@pytest.fixture
def app(app_server: Any, browser: Any) -> Iterator[Page]:
    """The hello app's page (it calls the server as it loads)."""
    yield from open_page(browser, f"{app_server.url}anvil/apps/hello/")


@pytest.fixture
def client(app_server: Any, browser: Any) -> Iterator[Page]:
    """A page of the hello app that only loads the client: calls are the test's own."""
    yield from open_page(browser, f"{app_server.url}anvil/apps/hello/console.html")


# -- the hello page --------------------------------------------------------------------


def test_page_greets(app: Page) -> None:
    app.page.fill("#name", "Ada")
    app.page.click("#greet")
    sync_api.expect(app.page.locator("#greeting")).to_have_text("Hello, Ada!")
    sync_api.expect(app.page.locator("#error")).to_have_text("")
    assert app.errors == []


def test_page_passes_keyword_arguments(app: Page) -> None:
    app.page.fill("#name", "Ada")
    app.page.check("#excited")
    app.page.click("#greet")
    sync_api.expect(app.page.locator("#greeting")).to_have_text("HELLO, ADA!")


def test_page_shows_the_server_error_for_an_empty_name(app: Page) -> None:
    app.page.fill("#name", "Ada")
    app.page.click("#greet")
    sync_api.expect(app.page.locator("#greeting")).to_have_text("Hello, Ada!")
    app.page.fill("#name", "")
    app.page.click("#greet")
    sync_api.expect(app.page.locator("#error")).to_have_text("Please tell me your name")
    sync_api.expect(app.page.locator("#greeting")).to_have_text("")


def test_page_date_round_trip(app: Page) -> None:
    # 2024 is a leap year: the day after Feb 28 is Feb 29, at the same local time.
    app.page.fill("#when", "2024-02-28T09:30")
    app.page.click("#next-day")
    result = app.page.locator("#next-day-result")
    sync_api.expect(result).to_contain_text("Thursday, February 29, 2024")
    sync_api.expect(result).to_contain_text("9:30")
    # 09:30 at +05:30 is 04:00 UTC.
    assert result.get_attribute("data-iso") == "2024-02-29T04:00:00.000Z"
    assert app.errors == []


def test_page_file_round_trip(app: Page) -> None:
    app.page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"some notes\n"}]
    )
    app.page.click("#echo-file")
    sync_api.expect(app.page.locator("#file-result")).to_contain_text("notes.txt: 11 bytes, text/plain")
    assert app.errors == []


# -- the client module -----------------------------------------------------------------


def test_calls_go_over_one_websocket(client: Page) -> None:
    result = client.run("""
        const greeting = await server.call("greet", "Ada");
        return {greeting, transport: server.transport, stats: {...server.stats}};
    """)
    assert result == {"greeting": "Hello, Ada!", "transport": "websocket", "stats": {"websocket": 1, "http": 0}}
    assert len(client.sockets) == 1
    assert client.sockets[0].startswith(client.root.replace("http://", "ws://", 1))
    assert client.sockets[0].endswith("/_/ws")
    assert not [url for url in client.posts if "/_/call/" in url]


def test_forcing_http(client: Page) -> None:
    result = client.run("""
        server.configure({transport: "http"});
        const greeting = await server.call("greet", "Ada");
        const error = await outcome(server.call("greet", ""));
        return {greeting, error, transport: server.transport, stats: {...server.stats}};
    """)
    assert result["greeting"] == "Hello, Ada!"
    assert result["error"] == {"type": "ValueError", "message": "Please tell me your name", "isAnvilError": True}
    assert result["transport"] == "http"
    assert result["stats"] == {"websocket": 0, "http": 2}
    assert client.sockets == []
    assert [url for url in client.posts if "/_/call/" in url] == [f"{client.root}_/call/greet"] * 2


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_keyword_arguments(client: Page, transport: str) -> None:
    result = client.run(
        """
        server.configure({transport: arg});
        return [
            await server.call("shout", "hi"),
            await server.call("shout", "hi", kwargs({excited: true})),
            await server.call("shout", kwargs({text: "all kw", excited: true})),
            server.transport,
        ];
        """,
        transport,
    )
    assert result == ["HI", "HI!", "ALL KW!", transport]


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_errors_from_the_server(client: Page, transport: str) -> None:
    result = client.run(
        """
        server.configure({transport: arg});
        return {
            missing: await outcome(server.call("no_such_function", 1)),
            value: await outcome(server.call("greet", "")),
            transport: server.transport,
        };
        """,
        transport,
    )
    missing = result["missing"]
    assert missing["type"] == "anvil.server.NoServerFunctionError"
    assert "no_such_function" in missing["message"]
    assert missing["isAnvilError"] is True
    assert result["value"] == {"type": "ValueError", "message": "Please tell me your name", "isAnvilError": True}
    assert result["transport"] == transport


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_blob_round_trip(client: Page, transport: str) -> None:
    result = client.run(
        """
        server.configure({transport: arg});
        // Every byte value, and more than two 64 KiB chunks.
        const bytes = new Uint8Array(150001).map((_, i) => (i * 7 + 3) % 256);
        const sameBytes = async (blob, expected) => {
            const got = new Uint8Array(await blob.arrayBuffer());
            return got.length === expected.length && got.every((b, i) => b === expected[i]);
        };
        const file = new File([bytes], "data.bin", {type: "application/x-test"});
        const copy = await server.call("echo_media", file);
        const blob = await server.call("echo_media", new Blob(["héllo"], {type: "text/plain"}));
        const empty = await server.call("echo_media", new File([], "empty.txt", {type: "text/plain"}));
        return {
            file: [copy instanceof File, copy.name, copy.type, copy.size, await sameBytes(copy, bytes)],
            blob: [blob instanceof File, blob.type, await blob.text()],
            empty: [empty.name, empty.size],
            transport: server.transport,
        };
        """,
        transport,
    )
    assert result["file"] == [True, "data.bin", "application/x-test", 150001, True]
    assert result["blob"] == [False, "text/plain", "héllo"]
    assert result["empty"] == ["empty.txt", 0]
    assert result["transport"] == transport


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_special_values_round_trip(client: Page, transport: str) -> None:
    result = client.run(
        """
        server.configure({transport: arg});
        const described = async (value) => {
            const {type, repr, value: back} = await server.call("describe", value);
            return {type, repr, back};
        };
        const when = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678));
        const dt = await described(when);
        const date = await described(anvilDate(2024, 2, 29));
        const long = await described(2n ** 40n);
        const huge = await described(-(2n ** 70n));
        const unsafe = await described(2 ** 60);
        const inf = await described(-Infinity);
        const nan = await described(NaN);
        const nested = await server.call("describe", kwargs({value: {list: [1, when, {n: 2n ** 35n}]}}));
        return {
            dt: [dt.type, dt.repr, dt.back instanceof Date && dt.back.getTime() === when.getTime(),
                 isAnvilDate(dt.back)],
            date: [date.type, date.repr, isAnvilDate(date.back), date.back.getFullYear(), date.back.getMonth(),
                   date.back.getDate(), date.back.getHours()],
            long: [long.type, long.repr, typeof long.back, long.back],
            huge: [huge.repr, typeof huge.back, String(huge.back)],
            unsafe: [unsafe.repr, typeof unsafe.back, String(unsafe.back)],
            inf: [inf.type, inf.repr, inf.back === -Infinity],
            nan: [nan.type, Number.isNaN(nan.back)],
            nested: [nested.value.list[1].getTime() === when.getTime(), nested.value.list[2].n],
        };
        """,
        transport,
    )
    # 03:04:05.678 UTC is 08:34:05.678 in Kolkata: sent with the browser's offset.
    assert result["dt"][0] == "datetime"
    assert "2024, 1, 2, 8, 34, 5, 678000" in result["dt"][1]
    assert "19800" in result["dt"][1]  # +05:30 as a timedelta of seconds
    assert result["dt"][2:] == [True, False]
    assert result["date"] == ["date", "datetime.date(2024, 2, 29)", True, 2024, 1, 29, 0]
    assert result["long"] == ["int", "1099511627776", "number", 1099511627776]
    assert result["huge"] == [str(-(2**70)), "bigint", str(-(2**70))]
    assert result["unsafe"] == [str(2**60), "bigint", str(2**60)]
    assert result["inf"] == ["float", "-inf", True]
    assert result["nan"] == ["float", True]
    assert result["nested"] == [True, 2**35]


def test_portable_objects_go_back_as_they_came(client: Page) -> None:
    result = client.run("""
        const p = await server.call("point", 1, 2);
        const moved = await server.call("move", p, kwargs({dx: 10, dy: -1}));
        const seen = await server.call("describe", moved);
        // One made in the browser, under the name the server uses.
        const made = await server.call("move", portable(portableTypeName(p), {x: 5, y: 5}), 1, 1);
        return {
            p: [p.x, p.y, Object.keys(p).sort()],
            typeName: portableTypeName(p),
            moved: [moved.x, moved.y, portableTypeName(moved)],
            seen: seen.type,
            made: [made.x, made.y],
        };
    """)
    assert result["p"] == [1, 2, ["x", "y"]]
    assert result["typeName"].endswith("Point")
    assert result["moved"] == [11, 1, result["typeName"]]
    assert result["seen"] == "Point"
    assert result["made"] == [6, 6]


def test_values_that_cannot_be_sent_are_refused_before_sending(client: Page) -> None:
    result = client.run("""
        return [
            await outcome(server.call("describe", new Map())),
            await outcome(server.call("describe", {f: () => 1})),
            server.transport,
        ];
    """)
    refused_map, refused_function, transport = result
    assert refused_map["type"] == "anvil.server.SerializationError"
    assert "Map" in refused_map["message"]
    assert refused_function["type"] == "anvil.server.SerializationError"
    assert 'msg["args"][0]["f"]' in refused_function["message"]
    assert transport is None  # nothing was sent
    assert client.sockets == []


def test_many_concurrent_calls(client: Page) -> None:
    # Later calls finish first, so replies arrive out of order on the one socket.
    result = client.run("""
        const calls = Array.from({length: 20}, (_, i) =>
            server.call("slow_echo", {i, tag: `call ${i}`}, kwargs({seconds: (20 - i) * 0.02})));
        const results = await Promise.all(calls);
        return {results, stats: {...server.stats}};
    """)
    assert result["results"] == [{"i": i, "tag": f"call {i}"} for i in range(20)]
    assert result["stats"] == {"websocket": 20, "http": 0}
    assert len(client.sockets) == 1


def test_lost_connection_fails_calls_in_flight_and_reconnects(client: Page) -> None:
    result = client.run("""
        await server.call("greet", "before");
        const first = server._socket;
        const inFlight = outcome(server.call("slow_echo", "late", kwargs({seconds: 2})));
        await new Promise((r) => setTimeout(r, 200));  // let the call reach the server
        first.close();  // as if the network dropped
        const lost = await inFlight;
        // Calls keep working while the client waits to reconnect: over HTTP.
        const during = await server.call("greet", "during");
        const duringTransport = server.transport;
        // It reconnects by itself, without waiting for another call.
        const deadline = performance.now() + 15000;
        while (!server.connected && performance.now() < deadline) {
            await new Promise((r) => setTimeout(r, 50));
        }
        const reconnected = server.connected;
        const after = await server.call("greet", "after");
        return {
            lost, during, duringTransport, reconnected, after,
            transport: server.transport,
            newSocket: server._socket !== null && server._socket !== first,
        };
    """)
    assert result["lost"] == {
        "type": "anvil.server.RuntimeUnavailableError",
        "message": "Connection to the server was lost",
        "isAnvilError": True,
    }
    assert result["during"] == "Hello, during!"
    assert result["duringTransport"] == "http"
    assert result["reconnected"] is True
    assert result["after"] == "Hello, after!"
    assert result["transport"] == "websocket"
    assert result["newSocket"] is True
    assert len(client.sockets) == 2


def test_disconnect_then_call_reopens_the_socket(client: Page) -> None:
    result = client.run("""
        await server.call("greet", "one");
        server.disconnect();
        const closed = !server.connected;
        const two = await server.call("greet", "two");
        return {closed, two, transport: server.transport};
    """)
    assert result == {"closed": True, "two": "Hello, two!", "transport": "websocket"}
    assert len(client.sockets) == 2


def test_another_app_object_sends_no_credentials(client: Page) -> None:
    requests: list[Any] = []
    client.page.on("request", lambda r: requests.append(r) if "/_/call/" in r.url else None)
    result = client.run("""
        const hello = new AnvilServer({app: "hello", transport: "http"});
        const nowhere = new AnvilServer({app: "no-such-app", transport: "http"});
        return {
            greeting: await hello.call("greet", "Grace"),
            nowhere: await outcome(nowhere.call("greet", "Grace")),
        };
    """)
    assert result["greeting"] == "Hello, Grace!"
    assert result["nowhere"]["isAnvilError"] is True
    assert result["nowhere"]["type"]
    apps = client.root.removesuffix("hello/")
    assert [r.url for r in requests] == [f"{apps}hello/_/call/greet", f"{apps}no-such-app/_/call/greet"]
    for r in requests:
        headers = r.all_headers()
        assert "authorization" not in headers
        assert "token" not in r.url


# -- under a base_url other than "/" -----------------------------------------------------

PREFIX = "sub/path/"


@pytest.fixture(scope="module")
def prefixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second server under --ServerApp.base_url=/sub/path/, serving only the examples."""
    from conftest import AnvilServer  # tests/ is on sys.path

    root = tmp_path_factory.mktemp("prefixed-root")
    shutil.copytree(REPO / "notebooks", root, dirs_exist_ok=True)
    server = AnvilServer(root, tmp_path_factory.mktemp("prefixed-server"), f"--ServerApp.base_url=/{PREFIX}")
    server.url += PREFIX
    server.start(wait_for=("hello",))
    yield server
    server.stop()


def test_the_app_works_under_a_base_url(prefixed_server: Any, browser: Any) -> None:
    context = browser.new_context(timezone_id=TIMEZONE, locale="en-US")
    context.set_default_timeout(10_000)
    try:
        app = Page(context.new_page(), f"{prefixed_server.url}anvil/apps/hello/console.html")
        result = app.run("""
            const overSocket = await server.call("greet", "Ada");
            const socketTransport = server.transport;
            server.configure({transport: "http"});
            const overHttp = await server.call("shout", "hi", kwargs({excited: true}));
            return {overSocket, socketTransport, overHttp, transport: server.transport};
        """)
        assert result == {
            "overSocket": "Hello, Ada!",
            "socketTransport": "websocket",
            "overHttp": "HI!",
            "transport": "http",
        }
        hello = f"{prefixed_server.url}anvil/apps/hello/"
        assert app.sockets == [hello.replace("http://", "ws://", 1) + "_/ws"]
        assert [url for url in app.posts if "/_/call/" in url] == [f"{hello}_/call/shout"]
        assert app.page.goto(hello).status == 200
        sync_api.expect(app.page.locator("#visits")).to_have_text("1")  # a session under the prefix too
        app.page.fill("#name", "Ada")
        app.page.click("#greet")
        sync_api.expect(app.page.locator("#greeting")).to_have_text("Hello, Ada!")
    finally:
        context.close()
