"""Two real servers over one store (one SQLite data folder, or one PostgreSQL database) share
the work as one: each scheduled run fires once across them; an inbound mail is handled once;
a task running on one is followed live from the other's admin feed; a cookie set through one
opens through the other when both are given the same cookie keys (and is treated as absent
where the keys differ). A server killed with SIGKILL: test_servers_crash.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer
from server_pairs import (
    BROWSER,
    PERIOD,
    Pair,
    admin,
    assert_each_due_time_ran_once,
    inbox,
    runs,
    send_mail,
    server_id,
    start_pair,
    stop_pair,
    task,
    tick_schedule,
)
from test_app_loading import wait_for


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One pair for the scenarios that leave both servers up."""
    started = start_pair(request, tmp_path_factory)
    try:
        schedule = tick_schedule(started.a)
        admin(started.a, "PATCH", f"schedules/{schedule['id']}", {"paused": True})  # until a test resumes it
        yield started
    finally:
        stop_pair(started)


# -- 1. each scheduled run fires once across the servers ------------------------------------------
def test_each_scheduled_run_fires_once_across_both_servers(pair: Pair) -> None:
    schedule = tick_schedule(pair.a)
    sid = schedule["id"]
    before = {run["seq"] for run in runs(pair.a, sid)}
    admin(pair.a, "PATCH", f"schedules/{sid}", {"paused": False})
    try:
        # B reads the change within its refresh (5 s); from then on both compete for each run
        wait_for(lambda: not tick_schedule(pair.b)["paused"], timeout=10, what="B to see the schedule resumed")
        time.sleep(4 * PERIOD + 6)
    finally:
        admin(pair.a, "PATCH", f"schedules/{sid}", {"paused": True})
    time.sleep(1)  # a run claimed just before the pause is recorded
    found = [run for run in runs(pair.b, sid) if run["seq"] not in before]
    assert len(found) >= 5, found
    assert_each_due_time_ran_once(found, PERIOD)
    launched = [run for run in found if run["outcome"] == "launched"]
    assert launched, found
    # each launched run's task ran once: one line in the ledger each, and no other run's line
    for run in launched:
        wait_for(lambda: task(pair.b, run["task_id"])["status"] == "completed", what="the runs' tasks to end")  # noqa: B023
    ticks = [line.split()[1] for line in pair.lines("tick ")]
    every_launch = {run["task_id"] for run in runs(pair.a, sid) if run["outcome"] == "launched"}
    assert len(ticks) == len(set(ticks)) and set(ticks) <= every_launch, (ticks, every_launch)
    assert {run["task_id"] for run in launched} <= set(ticks)
    assert {run["server"] for run in found} <= {server_id(pair.a), server_id(pair.b)}


# -- 3. an inbound mail is handled once ---------------------------------------------------------------
def test_an_inbound_mail_is_handled_once_by_the_server_that_took_it(pair: Pair) -> None:
    ids = {"A": server_id(pair.a), "B": server_id(pair.b)}
    for name, server in (("A", pair.a), ("B", pair.b)):
        for n in range(2):
            assert send_mail(server, f"to {name} {n}") == {}  # 250: its handler ran, on that server
    time.sleep(2)  # a while longer: nothing is handled again, by either server
    for name in ("A", "B"):
        for n in range(2):
            subject = f"to {name} {n}"
            assert len(pair.lines(f"mail {subject}")) == 1, pair.lines("mail ")
            for reader in (pair.a, pair.b):
                record = inbox(reader)[subject]
                assert record["status"] == "handled" and record["owner"] == ids[name], record


# -- 4. a task on one server, followed from the other's feed ---------------------------------------
def follow_task_on_other_server(pair: Pair, path: str) -> tuple[list[dict[str, Any]], list[float], str]:
    """Launch a printing task on A while following B's feed at ``path``: B's events of the
    task, the delay of each line (from its print on A to its event on B), the task's id."""

    async def run() -> tuple[list[dict[str, Any]], list[float], str]:
        url = f"ws://127.0.0.1:{pair.b.port}/{path}"
        headers = {"Authorization": f"token {pair.b.token}"}
        async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
            task_id = await asyncio.to_thread(pair.a.call, "work", "start", "printer", 6, 0.5)
            events: list[dict[str, Any]] = []
            delays: list[float] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                event = json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic()))
                if event.get("id") == task_id or event.get("task", {}).get("id") == task_id:
                    events.append(event)
                    if event["type"] == "task_output":
                        printed = [float(line.split(" at ")[1]) for line in event["text"].splitlines()]
                        delays += [time.time() - at for at in printed]
                    if event["type"] == "task" and event["task"]["status"] not in ("queued", "running"):
                        return events, delays, task_id
            raise AssertionError(f"B's feed did not tell the task's end: {events}")

    return asyncio.run(run())


def test_a_task_running_on_one_server_is_followed_live_from_the_others_feed(pair: Pair) -> None:
    events, delays, task_id = follow_task_on_other_server(pair, "anvil/api/feed")
    text = "".join(e["text"] for e in events if e["type"] == "task_output")
    assert [line.split(" at ")[0] for line in text.splitlines()] == [f"line {i}" for i in range(6)], events
    offsets = [e["offset"] for e in events if e["type"] == "task_output"]
    assert offsets == sorted(offsets) and offsets[-1] == len(text)
    # each line on B's feed about 2 s after its print on A at most: A writes output each second,
    # B polls each half second (with room for a busy machine)
    assert max(delays) < 3 and sorted(delays)[len(delays) // 2] < 2, delays
    statuses = [e["task"]["status"] for e in events if e["type"] == "task"]
    assert statuses[-1] == "completed" and "running" in statuses, statuses
    assert task(pair.b, task_id)["status"] == "completed"
    assert admin(pair.b, "GET", f"tasks/{task_id}/output")["text"] == text


def test_the_older_task_feed_of_one_server_tells_a_task_of_the_other(pair: Pair) -> None:
    events, _, _ = follow_task_on_other_server(pair, "anvil/api/tasks/feed")
    assert all(e["type"] == "task" for e in events)  # this feed never carried output
    statuses = [e["task"]["status"] for e in events]
    assert statuses[-1] == "completed" and "running" in statuses, statuses


def test_a_tasks_output_is_read_through_the_other_server_while_it_runs(pair: Pair) -> None:
    task_id = pair.a.call("work", "start", "printer", 8, 0.5)
    wait_for(
        lambda: "line 2 " in admin(pair.b, "GET", f"tasks/{task_id}/output")["text"],
        timeout=10,
        what="the output on B while the task runs on A",
    )
    assert task(pair.b, task_id)["status"] == "running"
    wait_for(lambda: task(pair.b, task_id)["status"] == "completed", what="the end, as B sees it")


# -- 5. cookie keys shared through configuration ---------------------------------------------------
def browser_call(server: AnvilServer, cookies: dict[str, str], function: str, *args: Any) -> httpx.Response:
    """A browser's call (client.js marks it), carrying ``cookies``."""
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=60) as client:
        return client.post(f"anvil/apps/work/_/call/{function}", json={"args": list(args)}, headers=BROWSER)


def set_cookies_through(server: AnvilServer) -> dict[str, str]:
    """A browser's cookies after it set one of each kind through ``server``."""
    jar: dict[str, str] = {}
    for kind, value in (("local", "Ada"), ("shared", "dark")):
        response = browser_call(server, jar, "set_cookie", kind, "k", value)
        assert response.status_code == 200, response.text
        jar.update(response.cookies)
    assert set(jar) == {"anvil-local", "anvil-shared"}, jar
    return jar


def test_a_cookie_set_through_one_server_is_read_through_the_other(pair: Pair) -> None:
    """Both are given one cookie keys file (``--AnvilApp.cookie_keys_file``)."""
    jar = set_cookies_through(pair.a)
    for kind, value in (("local", "Ada"), ("shared", "dark")):
        response = browser_call(pair.b, jar, "get_cookie", kind, "k")
        assert response.status_code == 200 and response.json()["response"] == value, response.text


def test_with_other_cookie_keys_a_server_takes_the_others_cookie_for_absent(
    pair: Pair, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A third server over the same store and notebooks, with cookie keys of its own: the
    cookies A sealed do not open there; they are absent, never an error."""
    workdir = tmp_path_factory.mktemp("c")
    options = [f"--AnvilApp.cookie_keys_file={workdir / 'own_keys'}", "--AnvilApp.task_spares=0"]
    if pair.database_url is None:
        (workdir / "jupyter_data_dir").symlink_to(pair.a.workdir / "jupyter_data_dir", target_is_directory=True)
    else:
        options.append(f"--AnvilApp.database_url={pair.database_url}")
    c = AnvilServer(pair.a.root, workdir, *options)
    c.start(wait_for=("work",))
    try:
        jar = set_cookies_through(pair.a)
        for kind in ("local", "shared"):
            response = browser_call(c, jar, "get_cookie", kind, "k")
            assert response.status_code == 200 and response.json()["response"] == "missing", response.text
        assert "could not be decrypted" in c.log_tail(200)
        own = set_cookies_through(c)  # its own cookies open there, and not on A
        assert browser_call(c, own, "get_cookie", "local", "k").json()["response"] == "Ada"
        assert browser_call(pair.a, own, "get_cookie", "local", "k").json()["response"] == "missing"
    finally:
        c.stop()
