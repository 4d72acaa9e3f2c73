"""Offline apps in a real browser: AppOfflineError, the online state and its events, and
the app's service worker (the page, its files and the client load with no connection).

The server is this module's own, reached through a TCP forwarder the tests cut: Playwright's
``context.set_offline`` does not cut a service worker's fetches, so "no connection" is both
(see offline_pages.OfflineSite.cut)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import NEEDS_CHROMIUM
from offline_pages import APP, OTHER_APP, PAGE, OfflineSite, Tab, browser_context, offline_site

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = NEEDS_CHROMIUM

STATIC = Path(__file__).resolve().parent.parent / "jupyter_anvil" / "static"
OFFLINE = "anvil.server.AppOfflineError"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineSite]:
    with offline_site(tmp_path_factory, "offline") as site:
        yield site


@pytest.fixture
def context(browser: Any, site: OfflineSite) -> Iterator[Any]:
    with browser_context(browser, site.forwarder) as context:
        yield context


# -- the worker's route (no browser) --------------------------------------------------------


def test_the_service_worker_is_served_for_each_app(site: OfflineSite) -> None:
    for app in (APP, OTHER_APP):
        response = httpx.get(f"{site.server.url}anvil/apps/{app}/sw.js")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.headers["cache-control"] == "no-cache"
        # the prelude names the app's own scope; the body is the package's worker, not the
        # app's file of that name
        assert f'"scope": "/anvil/apps/{app}/"' in response.text.splitlines()[0]
        assert "never served as its worker" not in response.text
        assert 'self.addEventListener("fetch"' in response.text
    head = httpx.head(f"{site.server.url}anvil/apps/{APP}/sw.js")
    assert head.status_code == 200 and head.content == b""


def test_the_service_worker_of_an_app_not_served_is_a_404(site: OfflineSite) -> None:
    response = httpx.get(f"{site.server.url}anvil/apps/no_such_app/sw.js")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "anvil.server.NoServerFunctionError"
    refused = httpx.get(f"{site.server.url}anvil/apps/{APP}/sw.js", headers={"Host": "evil.example"})
    assert refused.status_code == 403


def test_the_worker_keeps_every_client_module() -> None:
    # offline.js lists the client's modules for the worker to keep: all of them
    text = (STATIC / "client" / "offline.js").read_text()
    match = re.search(r"const CLIENT_MODULES = \[([^\]]*)\]", text)
    assert match is not None
    listed = sorted(re.findall(r'"([a-z_]+)"', match.group(1)))
    assert listed == sorted(p.stem for p in (STATIC / "client").glob("*.js"))


# -- AppOfflineError and the online state ---------------------------------------------------


@pytest.mark.parametrize("transport", ["auto", "websocket", "http"])
def test_calls_reject_with_app_offline_error_within_the_bound(site: OfflineSite, context: Any, transport: str) -> None:
    tab = Tab(context, site.app_url())
    assert tab.run("server.configure({transport: arg}); return await server.call('echo', 1);", transport) == 1
    site.cut(context)
    result = tab.run(
        """
        const started = performance.now();
        const first = await outcome(server.call("echo", 2));
        const firstMs = performance.now() - started;
        const again = performance.now();
        const second = await outcome(server.call("echo", 3));
        return {first, second, firstMs, secondMs: performance.now() - again, online: await server.isAppOnline()};
        """
    )
    for key in ("first", "second"):
        assert result[key]["type"] == OFFLINE, result
        assert result[key]["isOffline"] is True and result[key]["isAnvilError"] is True
    assert result["firstMs"] < 8000 and result["secondMs"] < 8000, result
    assert result["online"] is False
    site.restore(context)
    assert tab.run("return await server.call('echo', 4);") == 4


def test_a_stopped_server_is_offline_too(site: OfflineSite, context: Any) -> None:
    tab = Tab(context, site.app_url())
    tab.run("server.configure({transport: 'http'}); await server.call('echo', 1);")
    site.forwarder.stop()  # the browser thinks it is online: only the server is gone
    result = tab.run(
        """
        const started = performance.now();
        const failed = await outcome(server.call("echo", 2));
        return {failed, ms: performance.now() - started, online: await server.isAppOnline()};
        """
    )
    assert result["failed"]["type"] == OFFLINE and result["ms"] < 8000
    assert result["online"] is False
    site.forwarder.start()


def test_online_state_and_events_follow_the_connection(site: OfflineSite, context: Any) -> None:
    tab = Tab(context, site.app_url())
    assert (
        tab.run(
            """
        window.seen = [];
        window.unsubscribe = server.on("offline", () => seen.push("offline"));
        window.onOnline = () => seen.push("online");
        server.on("online", onOnline);
        return await server.isAppOnline();
        """
        )
        is True
    )
    site.cut(context)
    tab.page.wait_for_function("seen.length >= 1")
    assert tab.run("return [await server.isAppOnline(), await server.isAppOnline(), [...seen]];") == [
        False,
        False,
        ["offline"],
    ]
    # a failed call while already offline is no second "offline"
    tab.run("await outcome(server.call('echo', 1));")
    site.restore(context)
    tab.page.wait_for_function("seen.length >= 2")
    assert tab.run("return [await server.isAppOnline(), [...seen]];") == [True, ["offline", "online"]]
    # a server that goes away without the browser noticing: a call finds out, then the
    # client notices by itself when it comes back (no browser event to tell it)
    site.forwarder.stop()
    assert tab.run("return (await outcome(server.call('echo', 1))).type;") == OFFLINE
    tab.page.wait_for_function("seen.length >= 3")
    site.forwarder.start()
    tab.page.wait_for_function("seen.length >= 4", timeout=15_000)
    assert tab.run("unsubscribe(); return [...seen];") == ["offline", "online", "offline", "online"]
    site.cut(context)
    tab.wait_until("server.isAppOnline().then((online) => !online)")
    # unsubscribed: no new "offline"
    assert tab.run("return [...seen];") == ["offline", "online", "offline", "online"]
    tab.run("server.off('online', onOnline);")
    site.restore(context)
    tab.wait_until("server.isAppOnline()")
    assert tab.run("return [...seen];") == ["offline", "online", "offline", "online"]


def test_the_online_check_is_cheap_and_not_cached(site: OfflineSite, context: Any) -> None:
    tab = Tab(context, site.app_url())
    tab.run("await server.isAppOnline(); await server.isAppOnline();")
    checks = [r for r in tab.requests if "/_/check-app-online" in r.url]
    assert len(checks) == 1  # the second answer came from the short cache
    assert re.search(r"\?t=\d+$", checks[0].url)


def test_an_open_socket_does_not_swallow_calls_when_the_browser_goes_offline(site: OfflineSite, context: Any) -> None:
    tab = Tab(context, site.app_url())
    tab.run("server.configure({transport: 'websocket'}); await server.call('echo', 1);")
    tab.run("window.held = outcome(server.call('hold', 30)); window.heldAt = performance.now();")
    context.set_offline(True)
    result = tab.run("const r = await held; return {r, ms: performance.now() - heldAt, connected: server.connected};")
    assert result["r"]["type"] == OFFLINE
    assert result["ms"] < 8000
    assert result["connected"] is False
    context.set_offline(False)


# -- the service worker ---------------------------------------------------------------------


def page_state(tab: Tab) -> dict[str, Any]:
    return tab.page.evaluate(
        """() => ({title: document.getElementById("title").textContent,
                   color: getComputedStyle(document.getElementById("title")).color,
                   ready: document.body.dataset.ready,
                   controlled: navigator.serviceWorker.controller !== null})"""
    )


def test_enable_offline_loads_the_app_with_no_connection(site: OfflineSite, context: Any) -> None:
    tab = Tab(context, site.app_url())
    registration = tab.run(
        """
        const reg = await server.enableOffline();
        return {scope: reg.scope, script: reg.active.scriptURL};
        """
    )
    assert registration == {"scope": site.app_url(), "script": site.app_url() + "sw.js"}
    # through the worker now: a call, the online check and a missing file are never kept
    tab.run(
        """
        await server.call("echo", 1);
        server.configure({transport: "http"});
        await server.call("echo", 2);
        await fetch(arg + "_/check-app-online");
        await fetch(arg + "missing.js");
        """,
        site.app_url(),
    )
    tab.reload()
    # a page the worker controls registers again at once (its files went through the worker)
    assert tab.run("const reg = await server.enableOffline(); return reg.active.state;") == "activated"
    site.cut(context)
    tab.reload()  # from the worker's cache: the page, its CSS, its module, the client
    assert page_state(tab) == {"title": f"{APP} v1", "color": "rgb(1, 2, 3)", "ready": "yes", "controlled": True}
    # the client works offline: calls say so
    assert tab.run("return (await outcome(server.call('echo', 1))).type;") == OFFLINE
    # another query string of the same page is the same page
    response = tab.page.goto(site.app_url() + "?from=home")
    assert response is not None and response.ok
    tab.page.wait_for_function("document.body.dataset.ready === 'yes'")
    # what the worker kept: the app's files and the client, nothing else
    kept = tab.run(
        """
        const names = await caches.keys();
        const urls = [];
        for (const name of names) for (const r of await (await caches.open(name)).keys()) urls.push(r.url);
        return {names, urls};
        """
    )
    assert len(kept["names"]) == 1 and site.app_url() in kept["names"][0]
    assert site.app_url() in kept["urls"]
    assert f"{site.url}anvil/client.js" in kept["urls"]
    assert f"{site.url}anvil/client/queue.js" in kept["urls"]
    for url in kept["urls"]:
        assert url.startswith((site.app_url(), f"{site.url}anvil/client")), url
        assert "/_/" not in url and not url.endswith(("/sw.js", "missing.js")), url
        assert "?" not in url, url  # one copy per file, whatever the query
    site.restore(context)


def test_a_new_version_of_the_page_replaces_the_cached_one(site: OfflineSite, context: Any) -> None:
    page_file = site.server.root / APP / "index.html"
    tab = Tab(context, site.app_url())
    tab.run("await server.enableOffline();")
    try:
        page_file.write_text(PAGE.format(title=f"{APP} v2"))
        tab.reload()  # online: the network's fresh copy wins, and is kept
        assert page_state(tab)["title"] == f"{APP} v2"
        site.cut(context)
        tab.reload()
        assert page_state(tab) == {"title": f"{APP} v2", "color": "rgb(1, 2, 3)", "ready": "yes", "controlled": True}
    finally:
        page_file.write_text(PAGE.format(title=f"{APP} v1"))
        site.restore(context)


def test_the_worker_never_serves_another_app_or_server_calls_from_its_cache(site: OfflineSite, context: Any) -> None:
    other = Tab(context, site.app_url(OTHER_APP))  # visited online, without its own worker
    tab = Tab(context, site.app_url())
    tab.run("await server.enableOffline(); await server.call('echo', 1);")
    tab.run("await fetch(arg); await fetch(arg + 'app.css');", site.app_url(OTHER_APP))  # through no worker of its
    site.cut(context)
    response = None
    with contextlib.suppress(sync_api.Error):  # the browser's own error page: what it should be
        response = other.page.goto(site.app_url(OTHER_APP))
    assert response is None or not response.ok
    assert tab.run("return (await outcome(fetch(arg))).ok === undefined;", site.app_url(OTHER_APP) + "app.css")
    site.restore(context)


def test_enable_offline_refuses_where_service_workers_are_unavailable(site: OfflineSite, context: Any) -> None:
    tab = Tab(context, site.app_url())
    result = tab.run(
        """
        Object.defineProperty(navigator, "serviceWorker", {value: undefined});
        return await outcome(server.enableOffline());
        """
    )
    assert result["isAnvilError"] is True and "service workers" in result["message"]
