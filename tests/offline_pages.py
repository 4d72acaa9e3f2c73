"""What the offline browser tests share: a server of their own behind a TCP forwarder they
can cut (tcp_forwarder.py), its apps (an app with a static front end and server functions
that leave a trace in a file, and a second app whose files must never be cached by the
first one's service worker), and a browser tab helper."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import TIMEZONE, AnvilServer, private_server, record_page
from notebook_files import write_notebook
from tcp_forwarder import Forwarder

APP = "offline_app"
OTHER_APP = "offline_other"
# A token of the right shape that no session has (the server says "expired").
BOGUS_TOKEN = "Xq3v9pQz7LmN2rT8wKc4sYb6HdJf1GaE0uViOoPlZk"

FUNCTIONS = """
import os, time
from jupyter_anvil import server

@server.callable
def record(path, value, seconds=0):
    # the trace of a run: one line per run, written before the (optional) wait
    with open(path, "a") as f:
        f.write(f"{value}\\n")
    time.sleep(seconds)
    return {"value": value, "pid": os.getpid()}

@server.callable
def echo(value):
    return value

@server.callable
def hold(seconds):
    time.sleep(seconds)
    return seconds

@server.callable
def refuse(path, value):
    with open(path, "a") as f:
        f.write(f"{value}\\n")
    raise ValueError(f"refused {value}")

@server.callable
def session_put(key, value):
    server.session[key] = value
    return key

@server.callable
def session_get(key):
    return server.session.get(key)
"""

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="app.css"></head>
<body><h1 id="title">{title}</h1><script type="module" src="app.js"></script></body></html>"""
APP_JS = """import {server} from "../../client.js";
window.appServer = server;
document.body.dataset.ready = "yes";
"""
APP_CSS = "h1 { color: rgb(1, 2, 3); }\n"


def write_apps(root: Path) -> None:
    for name in (APP, OTHER_APP):
        write_notebook(root / f"{name}.ipynb", [FUNCTIONS], {"kernels": {"min": 1, "max": 2}})
        folder = root / name
        folder.mkdir(exist_ok=True)
        (folder / "index.html").write_text(PAGE.format(title=f"{name} v1"))
        (folder / "app.js").write_text(APP_JS)
        (folder / "app.css").write_text(APP_CSS)
    # a file of the app's own named like the worker: the extension's worker wins
    (root / APP / "sw.js").write_text("/* the app's own file, never served as its worker */\n")


class OfflineSite:
    """The server, and the forwarder pages reach it through."""

    def __init__(self, server: AnvilServer) -> None:
        self.server = server
        self.forwarder = Forwarder(server.port)
        self.forwarder.start()
        self.url = self.forwarder.url

    def app_url(self, app: str = APP) -> str:
        return f"{self.url}anvil/apps/{app}/"

    def session_key(self, app: str = APP) -> str:
        return f"anvil-session:{self.app_url(app)}"

    def cut(self, context: Any) -> None:
        """No connection: the page's requests fail (set_offline) and so do its service
        worker's (the forwarder is down)."""
        self.forwarder.stop()
        context.set_offline(True)

    def restore(self, context: Any) -> None:
        self.forwarder.start()
        context.set_offline(False)


@contextmanager
def browser_context(browser: Any, forwarder: Forwarder) -> Iterator[Any]:
    """A fresh browser context (the tests' time zone, 20 s timeouts); closed after, with the
    forwarder restored for the next test (one that failed with the connection cut)."""
    context = browser.new_context(timezone_id=TIMEZONE, locale="en-US")
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        context.close()
        forwarder.start()


@contextmanager
def offline_site(tmp_path_factory: pytest.TempPathFactory, label: str, *options: str) -> Iterator[OfflineSite]:
    with private_server(tmp_path_factory, label, write_apps, *options) as server:
        wait_ready(server)
        site = OfflineSite(server)
        try:
            yield site
        finally:
            site.forwarder.stop()


def wait_ready(server: AnvilServer, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        apps = server.apps()
        status = {name: apps.get(name, {}).get("status") for name in (APP, OTHER_APP)}
        if all(s == "ready" for s in status.values()):
            return
        assert "error" not in status.values(), {n: apps[n].get("error") for n in status if n in apps}
        assert time.monotonic() < deadline, f"apps not ready: {status}\n{server.log_tail()}"
        time.sleep(0.3)


def lines_of(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_for(condition: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll `condition()` (a file, a server's state: nothing a page event could tell us)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Tab:
    """One browser tab on `url`; it records the requests it made and the errors it logged."""

    def __init__(self, context: Any, url: str) -> None:
        self.page = context.new_page()
        self.url = url
        self.client_url = url.split("/anvil/apps/")[0] + "/anvil/client.js"
        self.requests, self.sockets, self.errors = record_page(self.page)
        #: requests answered (any status): a send that failed for lack of connection is not
        self.finished: list[Any] = []
        self.page.on("requestfinished", lambda r: self.finished.append(r))
        self.load()

    def load(self) -> None:
        response = self.page.goto(self.url)
        assert response is not None and response.ok, f"GET {self.url}: {response and response.status}"
        self.page.wait_for_function("document.body.dataset.ready === 'yes'")

    def reload(self) -> None:
        response = self.page.reload()
        assert response is not None and response.ok
        self.page.wait_for_function("document.body.dataset.ready === 'yes'")

    def run(self, body: str, arg: Any = None) -> Any:
        """Run `body` (an async function body) with the client's exports in scope, plus
        `outcome(promise)`: {ok: value} or {type, message, isAnvilError, isOffline}."""
        script = f"""async (arg) => {{
            const client = await import({json.dumps(self.client_url)});
            const {{server, AnvilError, AppOfflineError, localStore, anvilDate, isAnvilDate, kwargs}} = client;
            const outcome = async (promise) => {{
                try {{ return {{ok: await promise}}; }}
                catch (e) {{ return {{type: e.type, message: e.message, isAnvilError: e instanceof AnvilError,
                                     isOffline: e instanceof AppOfflineError}}; }}
            }};
            {body}
        }}"""
        return self.page.evaluate(script, arg)

    def wait_until(self, expression: str, timeout_ms: int = 20_000) -> None:
        """Wait until the async JS `expression` (awaited; the client's exports in scope) is
        true: page.wait_for_function does not await a promise."""
        self.run(
            f"""
            const deadline = performance.now() + {timeout_ms};
            while (!(await ({expression}))) {{
                if (performance.now() > deadline) throw new Error({json.dumps("timed out waiting for " + expression)});
                await new Promise((r) => setTimeout(r, 50));
            }}
            """
        )

    def posts(self, function: str, answered: bool = True) -> list[Any]:
        """The calls of `function` this tab sent (and got an answer to, unless not `answered`)."""
        requests = self.finished if answered else self.requests
        return [r for r in requests if r.method == "POST" and r.url.endswith(f"/_/call/{function}")]
