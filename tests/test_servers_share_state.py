"""Two real servers over one store (one SQLite data folder, or one PostgreSQL database)
behave as one: a session written through one is read fresh through the other (no stale
cached copy), and a task launched through one is killed through the other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import AnvilServer
from notebook_files import write_notebook
from pg_cluster import PostgresCluster
from test_app_loading import wait_for

APP = """
import time
from jupyter_anvil import server

@server.callable
def bump():
    server.session["n"] = server.session.get("n", 0) + 1
    return server.session["n"]

@server.callable
def count_run():
    server.session["runs"] = server.session.get("runs", 0) + 1
    return server.session["runs"]

@server.background_task
def sleeper(seconds):
    server.task_state["started"] = True
    time.sleep(seconds)
    return "woke"

@server.callable
def start(seconds):
    return server.launch_background_task("sleeper", seconds).get_id()
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def two_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AnvilServer, AnvilServer]]:
    root = tmp_path_factory.mktemp("shared-root")
    write_notebook(root / "shared.ipynb", [APP], {"kernels": {"min": 1, "max": 1}})
    options: tuple[str, ...] = ()
    if request.param == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        options = (f"--AnvilApp.database_url={cluster.create_database()}",)
    first = AnvilServer(root, tmp_path_factory.mktemp("first"), *options)
    first.start(wait_for=("shared",))
    second_dir = tmp_path_factory.mktemp("second")
    if not options:  # SQLite: the second server's data folder is the first one's
        (second_dir / "jupyter_data_dir").symlink_to(first.workdir / "jupyter_data_dir", target_is_directory=True)
    second = AnvilServer(root, second_dir, *options)
    try:
        second.start(wait_for=("shared",))
        yield first, second
    finally:
        second.stop()
        first.stop()


def bump(server: AnvilServer, token: str | None) -> tuple[int, str]:
    headers = {"X-Anvil-Session": token} if token else {}
    response = server.post("shared", "bump", {"args": []}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["response"], response.headers.get("X-Anvil-Session") or token or ""


def test_a_session_written_through_one_server_is_read_fresh_through_the_other(
    two_servers: tuple[AnvilServer, AnvilServer],
) -> None:
    a, b = two_servers
    n, token = bump(a, None)
    assert n == 1 and token
    assert bump(b, token)[0] == 2
    assert bump(a, token)[0] == 3  # A's cached copy said 1: it must read B's write
    assert bump(b, token)[0] == 4
    assert bump(a, token)[0] == 5


def task(server: AnvilServer, task_id: str) -> dict[str, Any]:
    return server.admin(f"anvil/api/tasks/{task_id}")  # type: ignore[no-any-return]


def test_a_task_launched_through_one_server_is_killed_through_the_other(
    two_servers: tuple[AnvilServer, AnvilServer],
) -> None:
    a, b = two_servers
    task_id = a.call("shared", "start", 600)
    wait_for(lambda: task(b, task_id)["status"] == "running", what="the task to run, as B sees it")
    killed = httpx.post(
        f"{b.url}anvil/api/tasks/{task_id}/kill", headers={"Authorization": f"token {b.token}"}, timeout=30
    )
    assert killed.status_code < 300, killed.text
    started = time.monotonic()
    wait_for(lambda: task(a, task_id)["status"] == "killed", timeout=30, what="the task killed on A")
    assert task(b, task_id)["status"] == "killed"
    assert time.monotonic() - started < 30


def test_a_keyed_call_replayed_to_the_other_server_runs_once(two_servers: tuple[AnvilServer, AnvilServer]) -> None:
    """A queued offline call sent again, this time to another server: it runs once."""
    a, b = two_servers
    token = bump(a, None)[1]
    headers = {"X-Anvil-Session": token, "Idempotency-Key": "offline-call-1"}
    first = a.post("shared", "count_run", {"args": []}, headers=headers)
    again = b.post("shared", "count_run", {"args": []}, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json()["response"] == again.json()["response"] == 1
    assert again.headers.get("Idempotency-Replayed") == "true"
    assert b.post("shared", "count_run", {"args": []}, headers={"X-Anvil-Session": token}).json()["response"] == 2
