"""Offline data in a real browser: localStore's values, and queued calls (callQueued):
kept across reloads and browser restarts, replayed in order when the connection returns,
run exactly once (also when the reply of a replayed call is lost), once for two tabs, never
after cancel(), not retried after a server error, and refused when the session expired
offline unless the page renewed it.

The server is this module's own, behind a TCP forwarder (offline_pages.OfflineSite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM, TIMEZONE
from offline_pages import BOGUS_TOKEN, OfflineSite, Tab, browser_context, lines_of, offline_site, wait_for

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = NEEDS_CHROMIUM

EXPIRED = "anvil.server.SessionExpiredError"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineSite]:
    with offline_site(tmp_path_factory, "offline-queue") as site:
        yield site


@pytest.fixture
def context(browser: Any, site: OfflineSite) -> Iterator[Any]:
    with browser_context(browser, site.forwarder) as context:
        yield context


def offline_tab(site: OfflineSite, context: Any) -> Tab:
    """A tab of the app, its pages kept by the service worker, with the connection cut."""
    tab = Tab(context, site.app_url())
    tab.run("await server.enableOffline();")
    site.cut(context)
    return tab


def queue(tab: Tab, calls: list[list[Any]]) -> list[str]:
    """Queue `calls` ([name, ...args]); the handles go in window.handles; returns their ids."""
    return tab.run(
        """
        window.handles = window.handles ?? [];
        const ids = [];
        for (const [name, ...args] of arg) {
            const q = await server.callQueued(name, ...args);
            handles.push(q);
            ids.push(q.id);
        }
        return ids;
        """,
        calls,
    )


def settle_all(tab: Tab) -> list[Any]:
    """Await every handle in window.handles: {state, ok} or {state, type, message}."""
    return tab.run(
        """
        const out = [];
        for (const q of handles) {
            const r = await outcome(q.result);
            out.push({...r, state: q.state});
        }
        return out;
        """
    )


# -- localStore ---------------------------------------------------------------------------


def test_local_data_round_trips_portable_values_across_a_reload(site: OfflineSite, context: Any) -> None:
    tab = Tab(context, site.app_url())
    tab.run(
        """
        const notes = localStore("notes");
        await notes.set("date", anvilDate(2024, 2, 29));
        await notes.set("when", new Date(Date.UTC(2023, 11, 31, 23, 59, 58, 125)));
        await notes.set("blob", new Blob([new Uint8Array([0, 1, 2, 255])], {type: "application/x-test"}));
        await notes.set("file", new File(["hello"], "hello.txt", {type: "text/plain"}));
        await notes.set("big", 2n ** 70n);
        await notes.set("nested", {list: [1, "two", {on: anvilDate("2000-01-02")}], none: null, pi: 3.25});
        await notes.set("gone", "soon");
        await notes.delete("gone");
        await localStore("other").set("date", "not the same store");
        """
    )
    tab.reload()
    result = tab.run(
        """
        const notes = localStore("notes");
        const date = await notes.get("date");
        const when = await notes.get("when");
        const blob = await notes.get("blob");
        const file = await notes.get("file");
        const nested = await notes.get("nested");
        return {
            keys: await notes.keys(),
            date: [isAnvilDate(date), date.getFullYear(), date.getMonth(), date.getDate()],
            when: [when instanceof Date, isAnvilDate(when), when.getTime()],
            blob: [blob instanceof Blob, blob.type, [...new Uint8Array(await blob.arrayBuffer())]],
            file: [file instanceof File, file.name, file.type, await file.text()],
            big: [typeof (await notes.get("big")), String(await notes.get("big"))],
            nested: [nested.list[0], nested.list[1], isAnvilDate(nested.list[2].on),
                     nested.list[2].on.getDate(), nested.none, nested.pi],
            missing: (await notes.get("gone")) === undefined,
            other: await localStore("other").get("date"),
        };
        """
    )
    assert result == {
        "keys": ["big", "blob", "date", "file", "nested", "when"],
        "date": [True, 2024, 1, 29],
        "when": [True, False, 1704067198125],
        "blob": [True, "application/x-test", [0, 1, 2, 255]],
        "file": [True, "hello.txt", "text/plain", "hello"],
        "big": ["bigint", str(2**70)],
        "nested": [1, "two", True, 2, None, 3.25],
        "missing": True,
        "other": "not the same store",
    }
    cleared = tab.run(
        """
        await localStore("notes").clear();
        const refused = await outcome(localStore("notes").set(5, "x")).catch((e) => e.name);
        let typeError = null;
        try { await localStore("notes").get(5); } catch (e) { typeError = e.name; }
        return {keys: await localStore("notes").keys(), other: await localStore("other").keys(), typeError};
        """
    )
    assert cleared == {"keys": [], "other": ["date"], "typeError": "TypeError"}


# -- queued calls -------------------------------------------------------------------------


def test_queued_calls_survive_a_reload_and_replay_in_order(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    tab = offline_tab(site, context)
    ids = queue(tab, [["record", str(trace), f"n{i}"] for i in range(3)])
    assert tab.run("return handles.map((q) => q.state);") == ["queued"] * 3
    tab.reload()  # offline, from the service worker
    waiting = tab.run(
        """
        window.counts = [];
        const first = new Promise((resolve) => server.on("queue", resolve));
        server.on("queue", (n) => counts.push(n));
        await first;
        window.handles = await server.queuedCalls();
        const again = await server.queuedCalls();
        return {ids: handles.map((q) => q.id), states: handles.map((q) => q.state),
                same: again.every((q, i) => q === handles[i])};
        """
    )
    assert waiting == {"ids": ids, "states": ["queued"] * 3, "same": True}
    assert lines_of(trace) == []
    site.restore(context)
    results = settle_all(tab)
    assert [r["ok"]["value"] for r in results] == ["n0", "n1", "n2"]
    assert [r["state"] for r in results] == ["done"] * 3
    assert lines_of(trace) == ["n0", "n1", "n2"]  # in order, each once
    tab.page.wait_for_function("counts.includes(0)")
    assert tab.run("return counts;")[0] == 3  # what waited when the page asked
    assert tab.run("return (await server.queuedCalls()).length;") == 0
    # every send carried its key, each call's own
    keys = [r.headers.get("idempotency-key") for r in tab.posts("record")]
    assert keys == ids


def test_a_queued_call_online_is_sent_at_once(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    tab = Tab(context, site.app_url())
    result = tab.run(
        """
        const q = await server.callQueued("record", arg, "now");
        const value = await q.result;
        return {value: value.value, state: q.state, left: (await server.queuedCalls()).length};
        """,
        str(trace),
    )
    assert result == {"value": "now", "state": "done", "left": 0}
    assert lines_of(trace) == ["now"]


def test_a_call_runs_once_when_the_reply_of_its_send_is_lost(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    tab = Tab(context, site.app_url())
    tab.run(
        """
        window.q = await server.callQueued("record", arg, "once", 2);
        window.settled = outcome(q.result);
        """,
        str(trace),
    )
    wait_for(lambda: lines_of(trace) == ["once"], what="the call to start")
    site.forwarder.stop()  # the server ran it; its reply never reaches the page
    tab.page.wait_for_function("q.state === 'queued'")
    site.forwarder.start()
    result = tab.run("const r = await settled; return {r, state: q.state};")
    assert result["state"] == "done"
    assert result["r"]["ok"]["value"] == "once"
    assert lines_of(trace) == ["once"]  # sent twice, run once
    assert len(tab.posts("record", answered=False)) >= 2
    answered = [r.response() for r in tab.posts("record")]
    assert [r.headers.get("idempotency-replayed") for r in answered if r is not None] == ["true"]


def test_a_reply_lost_then_a_server_restart_replays_the_stored_outcome(
    site: OfflineSite, context: Any, tmp_path: Path
) -> None:
    """The server ran the call and answered; the answer was lost; the server restarted.
    The replay gets the outcome the store kept: the call does not run again."""
    trace = tmp_path / "trace"
    tab = Tab(context, site.app_url())
    tab.run("await server.call('session_put', 'k', 1);")  # the window has a stored session
    site.forwarder.swallow_replies = True
    try:
        tab.run(
            """
            window.q = await server.callQueued("record", arg, "durable");
            window.settled = outcome(q.result);
            """,
            str(trace),
        )
        wait_for(lambda: lines_of(trace) == ["durable"], what="the call to run")
        wait_for(lambda: site.forwarder.swallowed > 0, what="the server's answer")
        site.forwarder.stop()
    finally:
        site.forwarder.swallow_replies = False
    tab.page.wait_for_function("q.state === 'queued'")
    site.server.stop()
    site.server.start()
    site.forwarder.start()
    result = tab.run("const r = await settled; return {r, state: q.state};")
    assert result == {"r": {"ok": {"value": "durable", "pid": result["r"]["ok"]["pid"]}}, "state": "done"}
    assert lines_of(trace) == ["durable"]
    replies = [r.response() for r in tab.posts("record")]
    assert [r.headers.get("idempotency-replayed") for r in replies if r is not None] == ["true"]


def test_a_call_cut_off_by_a_server_restart_is_not_run_again(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    """At most once: the server stopped while the call ran; the replay is told so."""
    trace = tmp_path / "trace"
    tab = Tab(context, site.app_url())
    tab.run("await server.call('session_put', 'k', 1);")
    tab.run(
        """
        window.q = await server.callQueued("record", arg, "cut", 60);
        window.settled = outcome(q.result);
        """,
        str(trace),
    )
    wait_for(lambda: lines_of(trace) == ["cut"], what="the call to start")
    site.forwarder.stop()
    tab.page.wait_for_function("q.state === 'queued'")
    site.server.stop()
    site.server.start()
    site.forwarder.start()
    result = tab.run("const r = await settled; return {r, state: q.state};")
    assert result["state"] == "failed", result
    assert result["r"]["type"] == "anvil.server.ExecutionTerminatedError", result
    assert lines_of(trace) == ["cut"]


def test_queued_arguments_keep_their_types(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    tab = offline_tab(site, context)
    tab.run(
        """
        window.q = await server.callQueued("echo", {
            on: anvilDate(2024, 2, 29), at: new Date(Date.UTC(2020, 0, 2, 3, 4, 5)), big: 2n ** 64n,
            blob: new Blob([new Uint8Array([9, 8, 7])], {type: "application/x-bytes"}),
        });
        """
    )
    tab.reload()
    site.restore(context)
    result = tab.run(
        """
        const [q] = await server.queuedCalls();
        const v = await q.result;
        return [isAnvilDate(v.on), v.on.getDate(), v.at.getTime(), String(v.big), v.blob.type,
                [...new Uint8Array(await v.blob.arrayBuffer())]];
        """
    )
    assert result == [True, 29, 1577934245000, str(2**64), "application/x-bytes", [9, 8, 7]]


def test_local_data_without_indexeddb_is_a_clear_error(site: OfflineSite, context: Any) -> None:
    context.add_init_script("Object.defineProperty(window, 'indexedDB', {value: undefined});")
    tab = Tab(context, site.app_url())
    result = tab.run("return await outcome(localStore('notes').get('k'));")
    assert result["isAnvilError"] is True
    assert result["type"] == "anvil.server.StorageUnavailableError"
    assert "IndexedDB" in result["message"]


def test_a_queued_call_survives_a_browser_restart(site: OfflineSite, browser: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    profile = tmp_path / "profile"

    def launch() -> Any:
        context = browser.browser_type.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timezone_id=TIMEZONE
        )
        context.set_default_timeout(20_000)
        return context

    first = launch()
    try:
        tab = Tab(first, site.app_url())
        tab.run("await localStore('kept').set('k', anvilDate(2021, 5, 6));")
        first.set_offline(True)
        queue(tab, [["record", str(trace), "a"], ["record", str(trace), "b"]])
    finally:
        first.close()
    assert lines_of(trace) == []
    second = launch()
    try:
        tab = Tab(second, site.app_url())  # the page loads, and sends what waited
        wait_for(lambda: lines_of(trace) == ["a", "b"], what="the queued calls to run")
        tab.wait_until("server.queuedCalls().then((w) => w.length === 0)")
        kept = tab.run("const d = await localStore('kept').get('k'); return [isAnvilDate(d), d.getDate()];")
        assert kept == [True, 6]
    finally:
        second.close()
    assert lines_of(trace) == ["a", "b"]


def test_two_tabs_replay_the_queue_once(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    first = offline_tab(site, context)
    second = Tab(context, site.app_url())  # offline: from the worker
    queue(first, [["record", str(trace), f"t{i}"] for i in range(4)])
    second.run("window.handles = await server.queuedCalls();")
    assert second.run("return handles.length;") == 4
    site.restore(context)
    for tab in (first, second):
        results = settle_all(tab)
        assert [r["ok"]["value"] for r in results] == ["t0", "t1", "t2", "t3"]
    assert lines_of(trace) == ["t0", "t1", "t2", "t3"]
    # one tab sent them, once each
    sends = len(first.posts("record")) + len(second.posts("record"))
    assert sends == 4


def test_a_cancelled_call_never_runs(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    tab = offline_tab(site, context)
    queue(tab, [["record", str(trace), "kept"], ["record", str(trace), "cancelled"], ["record", str(trace), "last"]])
    cancelled = tab.run(
        "return [await handles[1].cancel(), await handles[1].cancel(), handles[1].state, "
        "(await server.queuedCalls()).map((q) => q.id) .length];"
    )
    assert cancelled == [True, False, "cancelled", 2]
    site.restore(context)
    results = settle_all(tab)
    assert results[1]["type"] == "anvil.server.CallCancelledError" and results[1]["state"] == "cancelled"
    assert results[2]["ok"]["value"] == "last"
    assert tab.run("return await handles[0].cancel();") is False  # done: too late
    assert lines_of(trace) == ["kept", "last"]


def test_a_server_error_is_not_retried(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    tab = offline_tab(site, context)
    queue(tab, [["refuse", str(trace), "bad"], ["record", str(trace), "good"]])
    site.restore(context)
    results = settle_all(tab)
    assert results[0]["type"] == "ValueError" and "refused bad" in results[0]["message"]
    assert results[0]["state"] == "failed"
    assert results[1]["ok"]["value"] == "good"
    # back online once more: nothing is sent again
    site.cut(context)
    site.restore(context)
    tab.run("await server.syncQueued();")
    assert lines_of(trace) == ["bad", "good"]
    assert len(tab.posts("refuse")) == 1


def expired_tab(site: OfflineSite, context: Any) -> Tab:
    """An offline tab whose window holds a session token the server does not know (as
    after a long absence)."""
    context.add_init_script(
        f"""if (!sessionStorage.getItem("seeded")) {{
            sessionStorage.setItem("seeded", "1");
            sessionStorage.setItem({site.session_key()!r}, {BOGUS_TOKEN!r});
        }}"""
    )
    tab = Tab(context, site.app_url())
    tab.run("await server.enableOffline();")
    site.cut(context)
    assert tab.run("return server.sessionToken;") == BOGUS_TOKEN
    return tab


def test_calls_queued_in_an_expired_session_are_refused(site: OfflineSite, context: Any, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    tab = expired_tab(site, context)
    queue(tab, [["record", str(trace), "x"], ["record", str(trace), "y"]])
    tab.run("window.expiries = []; server.onSessionExpired((e) => expiries.push(e.type));")
    site.restore(context)
    results = settle_all(tab)
    assert [(r["type"], r["state"]) for r in results] == [(EXPIRED, "failed")] * 2
    assert tab.run("return expiries;") == [EXPIRED]
    assert lines_of(trace) == []
    assert len(tab.posts("record")) == 1  # the second was refused without a send


def test_calls_queued_in_an_expired_session_go_on_when_the_page_renews_it(
    site: OfflineSite, context: Any, tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    tab = expired_tab(site, context)
    queue(tab, [["record", str(trace), "x"], ["record", str(trace), "y"]])
    tab.run("server.onSessionExpired(() => server.resetSession());")
    site.restore(context)
    results = settle_all(tab)
    assert [r["ok"]["value"] for r in results] == ["x", "y"]
    assert lines_of(trace) == ["x", "y"]
    token = tab.run("return server.sessionToken;")
    assert isinstance(token, str) and token != BOGUS_TOKEN
    sent = [r.headers.get("x-anvil-session") for r in tab.posts("record")]
    assert sent[0] == BOGUS_TOKEN and sent[1:] == [token, token]


def test_a_call_whose_reply_was_lost_is_not_run_again_when_its_session_expired_meanwhile(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The server ran the call; its reply was lost; the page stayed offline longer than a
    session lives and renews its session when told. The call is answered from its key's
    outcome (found by the token it was sent with), not run again in the new session; a call
    that never ran goes on in the new session."""
    trace = tmp_path / "trace"
    with (
        offline_site(tmp_path_factory, "offline-expiry", "--AnvilApp.session_idle_minutes=0.05") as quick,
        browser_context(browser, quick.forwarder) as context,
    ):
        tab = Tab(context, quick.app_url())
        tab.run("await server.enableOffline(); await server.call('session_put', 'k', 1);")
        tab.run("server.onSessionExpired(() => server.resetSession());")
        quick.forwarder.swallow_replies = True
        try:
            queue(tab, [["record", str(trace), "ran"]])
            wait_for(lambda: lines_of(trace) == ["ran"], what="the call to run")
            wait_for(lambda: quick.forwarder.swallowed > 0, what="the server's answer")
            quick.cut(context)
        finally:
            quick.forwarder.swallow_replies = False
        tab.page.wait_for_function("handles[0].state === 'queued'")
        queue(tab, [["record", str(trace), "never sent"]])
        old_token = tab.run("return server.sessionToken;")
        tab.page.wait_for_timeout(4000)  # the session (3 s idle at most) expires
        quick.restore(context)
        results = settle_all(tab)
        assert [r["ok"]["value"] for r in results] == ["ran", "never sent"]
        assert lines_of(trace) == ["ran", "never sent"]  # each ran once
        replies = [(r.headers.get("x-anvil-session"), r.response()) for r in tab.posts("record")]
        answered = [(token, response.headers.get("idempotency-replayed")) for token, response in replies if response]
        new_token = tab.run("return server.sessionToken;")
        assert new_token != old_token
        assert (old_token, "true") in answered and answered[-1] == (new_token, None), answered
