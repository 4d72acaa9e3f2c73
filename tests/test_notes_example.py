"""The notes example (notebooks/notes.ipynb) as its markdown says to try it: write notes,
lose the connection, go on writing (the page reloads from its service worker and shows
its notes and how many changes wait), and see every change reach the server once the
connection is back.

Its server is this module's own, serving a copy of the example, reached through a TCP
forwarder the test cuts (Playwright's ``context.set_offline`` does not cut a service
worker's fetches)."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import NEEDS_CHROMIUM, AnvilServer, private_server, record_page
from offline_pages import browser_context
from tcp_forwarder import Forwarder

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = NEEDS_CHROMIUM

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def copy_example(root: Path) -> None:
    shutil.copy(NOTEBOOKS / "notes.ipynb", root / "notes.ipynb")
    shutil.copytree(NOTEBOOKS / "notes", root / "notes")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "notes", copy_example) as server:
        server.wait_until_loaded(("notes",))
        assert server.apps()["notes"]["status"] == "ready", server.apps()["notes"]
        yield server


def stored_notes(server: AnvilServer) -> dict[str, tuple[str, bool, bool]]:
    """The notes in the app's own database: text -> (id, done, deleted)."""
    path = server.root / ".notes.sqlite3"
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT id, text, done, deleted FROM notes").fetchall()
    return {text: (note_id, bool(done), bool(deleted)) for note_id, text, done, deleted in rows}


def test_the_notes_page_works_offline_and_syncs_when_back(server: AnvilServer, browser: Any) -> None:
    forwarder = Forwarder(server.port)
    forwarder.start()
    with browser_context(browser, forwarder) as context:
        page = context.new_page()
        _requests, _sockets, errors = record_page(page)
        url = f"{forwarder.url}anvil/apps/notes/"
        page.goto(url)
        page.wait_for_function("document.getElementById('offline-mode').textContent.includes('works offline')")
        sync_api.expect(page.locator("#status")).to_have_text("online")

        # online: a note reaches the server at once
        page.fill("#text", "Buy milk")
        page.click("#add")
        sync_api.expect(page.locator("#notes li .text")).to_have_text(["Buy milk"])
        sync_api.expect(page.locator("#notes li .unsynced")).to_have_count(0)
        assert stored_notes(server)["Buy milk"][1:] == (False, False)

        # offline: the page goes on, and says what waits
        forwarder.stop()
        context.set_offline(True)
        sync_api.expect(page.locator("#status")).to_have_text("offline")
        page.fill("#text", "Call the plumber")
        page.click("#add")
        page.get_by_label("Done: Buy milk").check()
        sync_api.expect(page.locator("#waiting")).to_have_text("2 changes waiting to sync")
        sync_api.expect(page.locator("#notes li .unsynced")).to_have_count(2)

        # a reload with no connection: the service worker serves the page, which shows its
        # own copy of the notes and the changes still waiting
        page.reload()
        sync_api.expect(page.locator("h1")).to_have_text("Notes")
        sync_api.expect(page.locator("#notes li")).to_have_count(2)
        texts = sorted(page.locator("#notes li .text").all_text_contents())
        assert texts == ["Buy milk", "Call the plumber"]
        sync_api.expect(page.locator("#waiting")).to_have_text("2 changes waiting to sync")
        assert "Call the plumber" not in stored_notes(server)

        # back online: the queue replays, in order, and the page says all is synced
        forwarder.start()
        context.set_offline(False)
        sync_api.expect(page.locator("#status")).to_have_text("online", timeout=30_000)
        sync_api.expect(page.locator("#waiting")).to_have_text("", timeout=30_000)
        sync_api.expect(page.locator("#notes li .unsynced")).to_have_count(0)
        stored = stored_notes(server)
        assert stored["Buy milk"][1:] == (True, False)
        assert stored["Call the plumber"][1:] == (False, False)

        # a deletion, offline, and the sync that follows
        forwarder.stop()
        context.set_offline(True)
        sync_api.expect(page.locator("#status")).to_have_text("offline")
        page.get_by_label("Delete Buy milk").click()
        sync_api.expect(page.locator("#waiting")).to_have_text("1 change waiting to sync")
        forwarder.start()
        context.set_offline(False)
        sync_api.expect(page.locator("#waiting")).to_have_text("", timeout=30_000)
        assert stored_notes(server)["Buy milk"][2] is True
        sync_api.expect(page.locator("#notes li .text")).to_have_text(["Call the plumber"])
        # what the browser logs for requests that found no server is expected; nothing else
        unexpected = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e and "ERR_INTERNET_DISCONNECTED" not in e]
        assert not unexpected, errors
    forwarder.stop()
