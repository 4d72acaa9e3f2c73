"""The admin API's live feed ``anvil/api/feed`` on a real server: the hello, app log
records, tasks' output, apps' changes (kernels busy and idle, a broken save and its fix,
a reload, a deleted notebook), the bound on a reader that does not read, no leak of
subscriptions, and Jupyter auth."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from raw_websocket import raw_socket_client
from shapes import assert_fits

from jupyter_anvil.host import api_types as api

AUTH = {"Authorization": "token test-token-not-for-apps"}

APP = """
import time
from jupyter_anvil import server

@server.callable
def shout(word):
    print("said:", word)
    return word

@server.callable
def slow(seconds):
    time.sleep(seconds)
    return "done"

@server.callable
def flood(lines):
    for i in range(lines):
        print(f"{i:06d} " + "x" * 65000)
    return lines

@server.background_task
def counting(n):
    for i in range(n):
        print(f"line {i}")
        server.task_state["done"], server.task_state["total"] = i + 1, n
        time.sleep(0.02)
    return n

@server.callable
def start_counting(n):
    return server.launch_background_task("counting", n).get_id()
"""

VICTIM = """
from jupyter_anvil import server

@server.callable
def hello():
    return "hi"
"""


def write_apps(root: Path) -> None:
    write_notebook(root / "loud.ipynb", [APP], {"kernels": {"min": 1, "max": 2}})
    write_notebook(root / "victim.ipynb", [VICTIM], {"kernels": {"min": 1, "max": 1}})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "feed", write_apps, "--AnvilApp.task_spares=1") as running:
        running.wait_until_loaded(("loud", "victim"))
        yield running


def feed_url(server: AnvilServer, path: str = "anvil/api/feed") -> str:
    return f"ws://127.0.0.1:{server.port}/{path}"


class Feed:
    """A feed client that keeps every event it reads."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []

    async def until(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 60, start: int = 0
    ) -> dict[str, Any]:
        """Read until an event passes ``check`` (events already read from ``start`` on count too)."""
        for event in self.events[start:]:
            if check(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such event in {timeout}s; last: {self.events[-5:]}")
            event = json.loads(await asyncio.wait_for(self.socket.recv(), left))
            assert_fits(event, api.FeedEvent)
            self.events.append(event)
            if check(event):
                return event


def follow(server: AnvilServer, body: Callable[[Feed], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with websockets.connect(feed_url(server), additional_headers=AUTH, max_size=None) as socket:
            feed = Feed(socket)
            hello = await feed.until(lambda e: True)
            assert hello["type"] == "hello" and isinstance(hello["server"], str) and hello["time"] > 0
            return await body(feed)

    return asyncio.run(run())


def task_ended(task_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "task" and e["task"]["id"] == task_id and e["task"]["status"] == "completed"


def app_event(name: str, check: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "app" and e["app"]["name"] == name and check(e["app"])


def test_a_calls_print_arrives_as_a_logs_event_with_its_seq(server: AnvilServer) -> None:
    async def body(feed: Feed) -> dict[str, Any]:
        await asyncio.to_thread(server.call, "loud", "shout", "marmalade")
        event = await feed.until(
            lambda e: e["type"] == "logs" and any("said: marmalade" in r["text"] for r in e["records"])
        )
        return next(r for r in event["records"] if "said: marmalade" in r["text"])

    record = follow(server, body)
    assert record["app"] == "loud" and record["function"] == "shout" and record["stream"] == "stdout"
    stored = server.admin("anvil/api/logs", app="loud", since=record["seq"] - 1, limit=1)["records"]
    assert stored == [record]  # exactly what anvil/api/logs reads


def test_a_tasks_prints_arrive_as_task_output_with_consistent_offsets(server: AnvilServer) -> None:
    async def body(feed: Feed) -> tuple[str, list[dict[str, Any]], list[str]]:
        task_id = await asyncio.to_thread(server.call, "loud", "start_counting", 60)
        await feed.until(task_ended(task_id))
        mine = [e for e in feed.events if e.get("id") == task_id or e.get("task", {}).get("id") == task_id]
        return task_id, [e for e in mine if e["type"] == "task_output"], [e["type"] for e in mine]

    task_id, outputs, kinds = follow(server, body)
    assert len(outputs) >= 2, outputs  # batched while it ran, not all at its end
    offset = 0
    for event in outputs:
        assert event["offset"] - len(event["text"]) == offset, (offset, event)
        offset = event["offset"]
    text = "".join(e["text"] for e in outputs)
    assert text == "".join(f"line {i}\n" for i in range(60))
    output = server.admin(f"anvil/api/tasks/{task_id}/output")
    assert output["text"] == text and output["offset"] == offset
    assert kinds.index("task_output") < len(kinds) - 1 and kinds[-1] == "task"  # its output before its end


def test_app_events_when_kernels_go_busy_and_idle(server: AnvilServer) -> None:
    async def body(feed: Feed) -> None:
        call = asyncio.create_task(asyncio.to_thread(server.call, "loud", "slow", 1.5))
        busy = await feed.until(app_event("loud", lambda a: a["pool"]["busy"] >= 1))
        assert_fits(busy, api.AppEvent)
        assert busy["app"]["status"] == "ready" and busy["app"]["url"].endswith("/anvil/apps/loud/")
        assert await call == "done"
        await feed.until(app_event("loud", lambda a: a["pool"]["busy"] == 0 and a["pool"]["in_flight"] == 0))

    follow(server, body)


def test_a_broken_save_its_fix_a_reload_and_a_delete(server: AnvilServer) -> None:
    path = server.root / "victim.ipynb"

    async def body(feed: Feed) -> None:
        write_notebook(path, [VICTIM, "x = 1\nraise RuntimeError('saved broken')"], {"kernels": {"min": 1, "max": 1}})
        broken = await feed.until(app_event("victim", lambda a: "saved broken" in (a["error"] or "")))
        assert broken["app"]["error_location"] == {"notebook": "victim.ipynb", "cell": 1, "line": 2}
        assert broken["app"]["status"] == "ready"  # the version before serves on, the error beside it
        write_notebook(path, [VICTIM, "x = 2"], {"kernels": {"min": 1, "max": 1}})
        await feed.until(app_event("victim", lambda a: a["status"] == "ready" and a["error"] is None))
        answer = await asyncio.to_thread(httpx.post, f"{server.url}anvil/api/apps/victim/reload", headers=AUTH)
        assert answer.status_code == 202 and answer.json()["status"] == "loading"
        start = len(feed.events)
        ready = await feed.until(app_event("victim", lambda a: a["status"] == "ready"), start=start)
        mine = [e["app"] for e in feed.events[start:] if e["type"] == "app" and e["app"]["name"] == "victim"]
        statuses = [a["status"] for a in mine]
        assert statuses[0] == "loading" and statuses[-1] == "ready" and ready["app"]["error"] is None
        os.remove(path)
        removed = await feed.until(lambda e: e["type"] == "app_removed")
        assert removed == {"type": "app_removed", "name": "victim"}

    follow(server, body)


def test_the_old_route_is_the_feed_as_it_was(server: AnvilServer) -> None:
    async def run() -> list[str]:
        async with websockets.connect(feed_url(server, "anvil/api/tasks/feed"), additional_headers=AUTH) as socket:
            task_id = await asyncio.to_thread(server.call, "loud", "start_counting", 3)
            kinds = []
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), 60))
                assert_fits(event, api.TaskFeedEvent)
                kinds.append(event["type"])
                if task_ended(task_id)(event):
                    return kinds

    assert set(asyncio.run(run())) <= {"task", "schedule", "mail", "mail_deleted", "env", "env_output"}


def test_no_token_no_feed(server: AnvilServer) -> None:
    async def run(path: str) -> int:
        try:
            async with websockets.connect(feed_url(server, path)):
                return 101
        except websockets.InvalidStatus as e:
            return e.response.status_code

    assert asyncio.run(run("anvil/api/feed")) in (401, 403)
    assert asyncio.run(run("anvil/api/tasks/feed")) in (401, 403)
    bad = {"Authorization": "token wrong"}

    async def wrong() -> int:
        try:
            async with websockets.connect(feed_url(server), additional_headers=bad):
                return 101
        except websockets.InvalidStatus as e:
            return e.response.status_code

    assert asyncio.run(wrong()) in (401, 403)


def test_closed_feeds_leave_no_subscription_behind(server: AnvilServer) -> None:
    async def run() -> dict[str, int]:
        async def once() -> dict[str, int]:
            async with websockets.connect(feed_url(server), additional_headers=AUTH) as socket:
                return dict(json.loads(await asyncio.wait_for(socket.recv(), 30))["followers"])

        first = await once()
        for _ in range(50):
            async with websockets.connect(feed_url(server), additional_headers=AUTH) as socket:
                await asyncio.wait_for(socket.recv(), 30)
        await asyncio.sleep(0.5)
        after = await once()
        assert after == first, (first, after)
        return after

    followers = asyncio.run(run())
    assert set(followers) == {"tasks", "schedules", "mail", "envs", "apps", "logs", "task_output"}
    # this connection alone (the server follows environments itself, for its apps' events)
    assert followers["apps"] == followers["logs"] == followers["task_output"] == followers["tasks"] == 1, followers


def raw_feed(server: AnvilServer) -> socket.socket:
    """An admin feed client that never reads after the handshake."""
    return raw_socket_client(server, "/anvil/api/feed", AUTH)


def test_a_reader_that_does_not_read_is_cut_at_the_bound(server: AnvilServer) -> None:
    raw = raw_feed(server)
    try:
        for _ in range(8):  # 8 x 16 records of 64 KB: about 8 MiB of log, times 2 with the feed below
            server.call("loud", "flood", 16)
        deadline = time.monotonic() + 60
        cut = False
        while time.monotonic() < deadline and not cut:
            server.call("loud", "flood", 16)
            cut = "closing an admin feed" in server.log_path.read_text(errors="replace")
        assert cut, server.log_tail()
        raw.settimeout(30)
        received = 0
        try:
            while chunk := raw.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        # what it did not read was dropped: far less than what was logged reached it
        assert received < 12 * 1024 * 1024
    finally:
        raw.close()
    # the server is healthy: calls, the admin API and a new feed all work
    assert server.call("loud", "shout", "still here") == "still here"
    assert server.apps()["loud"]["status"] == "ready"

    async def body(feed: Feed) -> None:
        await asyncio.to_thread(server.call, "loud", "shout", "after the cut")
        await feed.until(lambda e: e["type"] == "logs" and any("after the cut" in r["text"] for r in e["records"]))

    follow(server, body)


def test_a_reader_that_reads_gets_a_flood_whole(server: AnvilServer) -> None:
    async def body(feed: Feed) -> list[int]:
        for _ in range(10):  # about 10 MiB of log: more than the bound, read as it comes
            start = len(feed.events)
            await asyncio.to_thread(server.call, "loud", "flood", 16)
            # a reader that keeps up: each call's last record read before the next call (unpaced,
            # a starved test process itself fell 8 MiB behind on a loaded machine and was cut)
            await feed.until(
                lambda e: e["type"] == "logs" and any(r["text"].startswith("000015 ") for r in e["records"]),
                start=start,
            )
        await asyncio.to_thread(server.call, "loud", "shout", "flood over")
        await feed.until(lambda e: e["type"] == "logs" and any("flood over" in r["text"] for r in e["records"]))
        return [r["seq"] for e in feed.events if e["type"] == "logs" for r in e["records"]]

    seqs = follow(server, body)
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) and len(seqs) >= 160
    assert seqs[-1] - seqs[0] + 1 == len(seqs)  # none missing between the first and the last


def test_a_new_notebook_with_a_server_cell_appears_as_an_app(server: AnvilServer) -> None:
    async def body(feed: Feed) -> dict[str, Any]:
        write_notebook(server.root / "newcomer.ipynb", [VICTIM], {"kernels": {"min": 1, "max": 1}})
        await feed.until(app_event("newcomer", lambda a: True))
        return await feed.until(app_event("newcomer", lambda a: a["status"] == "ready"))

    ready = follow(server, body)
    assert ready["app"]["functions"] == ["hello"] and ready["app"]["pool"]["kernels"] == 1
