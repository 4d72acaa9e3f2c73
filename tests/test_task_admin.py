"""The tasks admin API shows states and return values as plain JSON (dates as ISO
strings, big numbers as strings, Media as a download link, portable classes as their
data with ``__type__``), decoded on the host without importing any class."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer, private_server
from notebook_files import write_notebook

from jupyter_anvil.host.readable import iso_datetime, plain_value

APP = """
import datetime, time
from jupyter_anvil import server
from jupyter_anvil.media import BlobMedia

@server.portable_class("shop.Point")
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

@server.background_task
def rich(pause):
    when = datetime.datetime(2024, 2, 28, 9, 30, tzinfo=datetime.timezone.utc)
    server.task_state["since"] = when
    server.task_state["points"] = [Point(1, datetime.date(2024, 1, 2))]
    time.sleep(pause)
    return {
        "when": when,
        "day": datetime.date(2024, 1, 2),
        "big": 2**70,
        "inf": float("inf"),
        "nested": [{"media": BlobMedia("text/csv", b"a,b\\n1,2\\n", name="report.csv")}, [Point(3, 4)]],
        "html": BlobMedia("text/html", b"<script>alert(1)</script>", name="page.html"),
        "plain": [1, "two", None, True],
    }

@server.callable
def start(pause):
    return server.launch_background_task("rich", pause).get_id()
"""

AUTH = {"Authorization": "token test-token-not-for-apps"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(
        tmp_path_factory, "admin", lambda root: write_notebook(root / "shop.ipynb", [APP], {"kernels": {"min": 1}})
    ) as running:
        running.wait_until_loaded(("shop",))
        yield running


def test_a_record_shows_plain_json_and_media_links(server: AnvilServer) -> None:
    events: list[dict[str, Any]] = []

    async def follow() -> str:
        url = f"ws://127.0.0.1:{server.port}/anvil/api/tasks/feed"
        async with websockets.connect(url, additional_headers=AUTH) as feed:
            task_id = await asyncio.to_thread(server.call, "shop", "start", 2)
            while True:
                message = json.loads(await asyncio.wait_for(feed.recv(), 60))
                if message["task"]["id"] == task_id:
                    events.append(message["task"])
                    if message["task"]["status"] == "completed":
                        return str(task_id)

    task_id = asyncio.run(follow())
    state = {"since": "2024-02-28T09:30:00+00:00", "points": [{"__type__": "shop.Point", "x": 1, "y": "2024-01-02"}]}
    assert any(e.get("state") == state for e in events), events  # the feed, mid-run
    listed = server.admin("anvil/api/tasks", app="shop")["tasks"]
    assert [t["state"] for t in listed if t["id"] == task_id] == [state]

    record = server.admin(f"anvil/api/tasks/{task_id}")
    assert record["state"] == state
    result = record["result"]
    base = f"/anvil/api/tasks/{task_id}/media/"
    csv, html = result["nested"][0]["media"], result["html"]
    assert result == {
        "when": "2024-02-28T09:30:00+00:00",
        "day": "2024-01-02",
        "big": str(2**70),
        "inf": "Infinity",
        "nested": [{"media": csv}, [{"__type__": "shop.Point", "x": 3, "y": 4}]],
        "html": html,
        "plain": [1, "two", None, True],
    }
    assert {k: v for k, v in csv.items() if k != "url"} == {
        "__type__": "Media", "content_type": "text/csv", "name": "report.csv", "size": 8,
    }  # fmt: skip
    assert csv["url"].startswith("/") and csv["url"].endswith(base + csv["url"].rsplit("/", 1)[1])

    download = httpx.get(server.url + csv["url"].lstrip("/"), headers=AUTH)
    assert download.status_code == 200 and download.content == b"a,b\n1,2\n"
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"].startswith('attachment; filename="report.csv"')
    page = httpx.get(server.url + html["url"].lstrip("/"), headers=AUTH)
    assert page.content == b"<script>alert(1)</script>"  # the bytes, but never rendered on Jupyter's origin
    assert page.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in page.headers["content-security-policy"] and page.headers["x-content-type-options"] == "nosniff"

    anonymous = httpx.get(server.url + csv["url"].lstrip("/"))  # Jupyter auth: a browser is sent to log in
    assert anonymous.status_code in (302, 401, 403) and b"a,b" not in anonymous.content
    assert anonymous.status_code != 302 or "/login" in anonymous.headers["location"]
    missing = httpx.get(f"{server.url}anvil/api/tasks/{task_id}/media/9", headers=AUTH)
    assert missing.status_code == 404
    assert httpx.get(f"{server.url}anvil/api/tasks/{'c' * 25}/media/0", headers=AUTH).status_code == 404


# -- the decoding itself ---------------------------------------------------------------------


def test_plain_value_converts_each_kind() -> None:
    encoded = {
        "v": {"a": None, "b": [None, {"x": 1}], "c": None, "d": None, "e": None},
        "objects": [
            {"type": ["DateTime"], "path": ["v", "a"], "value": "2024-02-28 09:30:00.000000+0530"},
            {"type": ["Long"], "path": ["v", "b", 0], "value": "123456789012345678901234567890"},
            {"type": ["ValueType"], "path": ["v", "b", 1], "typeName": "never.Imported"},
            {"type": ["ClassType"], "path": ["v", "c"], "typeName": "never.Imported"},
            {"type": ["Float"], "path": ["v", "d"], "value": "-Infinity"},
            {"type": ["Unknown"], "path": ["v", "e"]},
            {"type": ["Date"], "path": ["v", "no", "such", "place"], "value": "2024-01-01"},
            "not a descriptor",
        ],
    }
    assert plain_value(encoded) == {
        "a": "2024-02-28T09:30:00+05:30",
        "b": ["123456789012345678901234567890", {"__type__": "never.Imported", "x": 1}],
        "c": {"__type__": "class", "name": "never.Imported"},
        "d": "-Infinity",
        "e": None,
    }
    assert encoded["v"]["a"] is None  # the stored value is left as it was
    assert plain_value(None) is None and plain_value({"no": "v"}) == {"no": "v"}
    assert plain_value({"v": [1], "objects": [{"type": ["ValueType"], "path": ["v"], "typeName": "T"}]}) == {
        "__type__": "T", "data": [1],
    }  # fmt: skip
    assert iso_datetime("2024-02-28T09:30:00Z") == "2024-02-28T09:30:00+00:00"
    assert iso_datetime("not a date") == "not a date"
