"""Kernel pools under faults: kernels crashing faster than they are replaced, and
replacement kernels that cannot start."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from test_app_loading import wait_for

#: the functions every app here serves: one that kills its kernel, one that answers
FUNCTIONS = """
from jupyter_anvil import server
import os

@server.callable
def crash():
    os._exit(1)

@server.callable
def ok():
    return os.getpid()
"""

CRASHY = FUNCTIONS

# the cell counts its runs and needs a file beside the notebook: outside state it depends on
GATED = (
    """
import os

with open("attempts.log", "a") as f:
    f.write("start\\n")
if not os.path.exists("gate"):
    raise RuntimeError("the gate file is gone")
"""
    + FUNCTIONS
)

# a kernel that starts slowly once the file "slow" exists beside the notebook
SLOW_START = (
    """
import os, time

if os.path.exists("slow"):
    time.sleep(6)
"""
    + FUNCTIONS
)


def write_apps(root: Path) -> None:
    write_notebook(root / "crashy.ipynb", [CRASHY], {"kernels": {"min": 1, "max": 4}, "call_timeout": 30})
    (root / "gated").mkdir()
    (root / "gated" / "gate").write_text("open")
    write_notebook(root / "gated" / "gated.ipynb", [GATED], {"kernels": {"min": 1, "max": 2}, "call_timeout": 20})
    write_notebook(root / "slow" / "slow.ipynb", [SLOW_START], {"kernels": {"min": 1, "max": 1}, "call_timeout": 2})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "faults", write_apps) as server:
        server.wait_until_loaded(("crashy", "gated.gated", "slow.slow"))
        yield server


def error_of(response: httpx.Response) -> dict[str, Any]:
    return response.json().get("error") or {}


def test_kernels_crashing_faster_than_they_are_replaced_never_lose_the_functions(server: AnvilServer) -> None:
    """Three callers crash a kernel as soon as their last crash was answered, with two
    callers of a well-behaved function beside them, on an app of up to 4 kernels: every
    call is answered as a crash (never 404: the functions belong to the version, not to
    whichever kernel is alive), and the admin API lists the functions throughout."""
    assert server.call("crashy", "ok")
    stop = time.monotonic() + 12
    crash_replies: list[tuple[int, str]] = []
    ok_replies: list[tuple[int, str, float]] = []
    listed: list[list[str]] = []

    def crash_caller() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                r = client.post(f"{server.url}anvil/apps/crashy/_/call/crash", json={})
                crash_replies.append((r.status_code, error_of(r).get("type", "")))

    def caller() -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                r = client.post(f"{server.url}anvil/apps/crashy/_/call/ok", json={})
                ok_replies.append((r.status_code, error_of(r).get("type", ""), time.monotonic()))

    def watcher() -> None:
        while time.monotonic() < stop:
            listed.append(server.apps()["crashy"]["functions"])
            time.sleep(0.05)

    threads = [threading.Thread(target=f) for f in (crash_caller, crash_caller, crash_caller, caller, caller, watcher)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert len(crash_replies) >= 10, crash_replies  # kernels did crash over and over
    assert all(r == (500, "anvil.server.ExecutionTerminatedError") for r in crash_replies), crash_replies
    # a well-behaved call either ran, or shared a kernel that a crash beside it killed
    allowed = {(200, ""), (500, "anvil.server.ExecutionTerminatedError")}
    assert {(status, kind) for status, kind, _ in ok_replies} <= allowed, ok_replies
    assert any(status == 200 for status, _, _ in ok_replies), ok_replies
    assert listed and all(functions == ["crash", "ok"] for functions in listed), listed
    # once the crashing stops, warm kernels answer every call
    wait_for(lambda: server.post("crashy", "ok").status_code == 200, what="a warm kernel")
    assert all(server.post("crashy", "ok").status_code == 200 for _ in range(10))
    assert server.apps()["crashy"]["status"] == "ready"


def test_a_replacement_kernel_that_cannot_start_backs_off_and_recovers(server: AnvilServer) -> None:
    """When the cells fail in a replacement kernel (outside state changed), callers are
    told at once (503 naming the failed start, not left waiting for their timeout), the
    retries back off instead of storming, the app log and admin API say so, and the pool
    recovers by itself once the cells can run again."""
    folder = server.root / "gated"
    attempts = folder / "attempts.log"
    assert server.call("gated.gated", "ok")
    (folder / "gate").unlink()
    started = attempts.read_text().count("start")
    crashed = server.post("gated.gated", "crash")
    assert crashed.status_code == 500, crashed.text

    # callers keep calling for 8 seconds: each gets an answer quickly, never a 404
    statuses: list[tuple[int, str, float]] = []
    until = time.monotonic() + 8
    while time.monotonic() < until:
        began = time.monotonic()
        r = server.post("gated.gated", "ok", timeout=30)
        statuses.append((r.status_code, error_of(r).get("type", ""), time.monotonic() - began))
        if r.status_code == 503:
            message = error_of(r)["message"]
            assert "failed to start" in message and "retried in" in message, message
            assert "the gate file is gone" not in message  # the author's details stay in the log
    assert {(s, t) for s, t, _ in statuses} == {(503, "anvil.server.RuntimeUnavailableError")}, statuses
    assert max(elapsed for _, _, elapsed in statuses) < 5, statuses  # not left waiting for the 20 s timeout
    # starts are 1, 2, 4 s apart: a handful, however many calls came (here dozens)
    retries = attempts.read_text().count("start") - started
    assert 1 <= retries <= 5, retries
    assert len(statuses) > 2 * retries, (len(statuses), retries)

    app = server.apps()["gated.gated"]
    assert app["status"] == "ready" and app["functions"] == ["crash", "ok"]
    assert "failed to start" in app["error"] and "the gate file is gone" in app["error"], app
    records = server.admin("anvil/api/logs", app="gated.gated")["records"]
    assert any("failed to start" in r["text"] and "retrying in" in r["text"] for r in records), records
    assert any(r["stream"] == "traceback" and "the gate file is gone" in r["text"] for r in records), records

    # the cells can run again: with no caller to prompt it, the pool gets a kernel back
    (folder / "gate").write_text("open")
    wait_for(lambda: server.apps()["gated.gated"]["pool"]["kernels"] == 1, timeout=45, what="the pool to recover")
    assert server.call("gated.gated", "ok")
    assert server.apps()["gated.gated"]["error"] is None
    records = server.admin("anvil/api/logs", app="gated.gated")["records"]
    assert any("started again" in r["text"] for r in records), records


def test_a_call_waits_for_a_replacement_kernel_within_its_timeout(server: AnvilServer) -> None:
    """Every kernel dead and the replacement still warming: a call waits for it, and is
    answered 504 saying so when its timeout (2 s here) passes first; calls made once the
    replacement is warm are served."""
    (server.root / "slow" / "slow").write_text("")  # replacements now take 6 s to warm
    before = server.call("slow.slow", "ok")
    assert server.post("slow.slow", "crash").status_code == 500
    began = time.monotonic()
    response = server.post("slow.slow", "ok")
    assert 1.5 < time.monotonic() - began < 5, time.monotonic() - began
    assert response.status_code == 504, response.text
    error = error_of(response)
    assert error["type"] == "anvil.server.TimeoutError"
    assert "no kernel of 'slow.slow' became ready in time (its kernels are being replaced)" in error["message"]
    after = wait_for(lambda: server.post("slow.slow", "ok").json().get("response"), what="the warm replacement")
    assert after != before
