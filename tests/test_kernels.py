"""Kernel pools under real load: concurrency, overload, timeouts and crashing kernels."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import httpx
from conftest import AnvilServer
from test_app_loading import wait_for


def test_concurrent_calls_spread_over_the_pool(anvil_server: AnvilServer) -> None:
    """shop.orders may grow to 2 kernels of 4 calls each: 8 one-second calls take about
    a second, on two kernels."""
    with concurrent.futures.ThreadPoolExecutor(8) as executor:
        first = list(executor.map(lambda _: anvil_server.post("shop.orders", "sleep", {"args": [0.3]}), range(8)))
        assert all(r.status_code == 200 for r in first)
        wait_for(lambda: anvil_server.apps()["shop.orders"]["pool"]["kernels"] == 2, what="the pool to grow")
        started = time.monotonic()
        responses = list(executor.map(lambda _: anvil_server.post("shop.orders", "sleep", {"args": [1]}), range(8)))
        elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["response"] for r in responses}) == 2  # two kernel processes answered
    assert elapsed < 3.5, elapsed  # not 8 s in a row
    # idle for longer than idle_seconds (2 s on the test server), the pool shrinks back to its minimum
    wait_for(lambda: anvil_server.apps()["shop.orders"]["pool"]["kernels"] == 1, timeout=20, what="the pool to shrink")
    assert anvil_server.post("shop.orders", "sleep", {"args": [0]}).status_code == 200


async def test_an_overloaded_app_answers_503_instead_of_waiting_forever(anvil_server: AnvilServer) -> None:
    """core has one kernel of 4 call slots and the test server queues at most 20: of 40
    simultaneous two-second calls, 24 are served and the rest refused at once."""
    url = f"{anvil_server.url}anvil/apps/core/_/call/sleep"
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(*(client.post(url, json={"args": [2]}) for _ in range(40)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) + statuses.count(503) == 40, statuses
    assert 22 <= statuses.count(200) <= 26, statuses  # a call may finish while others still arrive
    refused = next(r for r in responses if r.status_code == 503).json()["error"]
    assert refused["type"] == "anvil.server.RuntimeUnavailableError" and "overloaded" in refused["message"]
    assert anvil_server.call("core", "add", 1, 1) == 2


def test_a_call_over_its_timeout_gets_timeout_error_and_a_new_kernel(anvil_server: AnvilServer) -> None:
    before = anvil_server.call("timeouts", "pid")
    response = anvil_server.post("timeouts", "sleep", {"args": [30]})
    assert response.status_code == 504
    assert response.json()["error"] == {
        "type": "anvil.server.TimeoutError",
        "message": "Server code took too long",
        "trace": [],
    }
    after = wait_for(lambda: anvil_server.post("timeouts", "pid").json().get("response"), what="a replacement kernel")
    assert after != before
    records = anvil_server.admin("anvil/api/logs", app="timeouts")["records"]
    assert any("TOOK TOO LONG" in r["text"] and r["function"] == "sleep" for r in records)


def test_a_kernel_that_dies_mid_call_is_replaced(anvil_server: AnvilServer) -> None:
    before = anvil_server.call("timeouts", "pid")
    response = anvil_server.post("timeouts", "die")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "anvil.server.ExecutionTerminatedError"
    assert "exit code 3" in error["message"]
    after = wait_for(lambda: anvil_server.post("timeouts", "pid").json().get("response"), what="a replacement kernel")
    assert after != before
    assert anvil_server.call("timeouts", "pid") == after


def test_logs_carry_what_calls_print_tagged_and_need_auth(anvil_server: AnvilServer) -> None:
    assert anvil_server.call("core", "chatty", "hello-log") == "hello-log"
    records = wait_for(
        lambda: [r for r in anvil_server.admin("anvil/api/logs", app="core")["records"] if "hello-log" in r["text"]],
        what="the log line",
    )
    assert records[0]["app"] == "core" and records[0]["function"] == "chatty" and records[0]["call_id"]
    assert records[0]["stream"] == "stdout" and records[0]["text"] == "chatty says hello-log\n"
    unauthenticated = httpx.get(f"{anvil_server.url}anvil/api/logs", params={"app": "core"})
    assert unauthenticated.status_code in (401, 403)
    assert "hello-log" not in unauthenticated.text
    assert httpx.get(f"{anvil_server.url}anvil/api/apps").status_code in (401, 403)
    last = records[-1]["seq"]
    assert all(r["seq"] > last for r in anvil_server.admin("anvil/api/logs", app="core", since=last)["records"])
