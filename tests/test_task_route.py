"""``GET anvil/apps/<app>/_/tasks/<task_id>``: a plain HTTP client follows a Task it was
given, with no Jupyter token, to its state, result and error; read-only, per app."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
from conftest import AnvilServer


def launch(anvil_server: AnvilServer, name: str, *args: Any) -> str:
    response = anvil_server.post("jobs", "start", {"args": [name, *args]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["objects"][0]["type"] == ["ValueType"]  # a Task, as Anvil encodes one
    return str(body["response"]["id"])


def follow(anvil_server: AnvilServer, task_id: str, app: str = "jobs", **kw: Any) -> httpx.Response:
    return httpx.get(f"{anvil_server.url}anvil/apps/{app}/_/tasks/{task_id}", timeout=30, **kw)


def until_ended(anvil_server: AnvilServer, task_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        response = follow(anvil_server, task_id)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        seen.add(body["response"]["status"])
        if body["response"]["status"] not in ("queued", "running"):
            body["seen"] = seen
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} still running after {timeout}s")


def test_a_client_follows_a_task_to_its_return_value(anvil_server: AnvilServer) -> None:
    task_id = launch(anvil_server, "count_to", 5, 0.2)
    body = until_ended(anvil_server, task_id)
    task = body["response"]
    assert task["id"] == task_id and task["name"] == "count_to"
    assert task["status"] == "completed" and "running" in body["seen"]
    assert task["state"] == {"done": 5, "total": 5}
    assert task["error"] is None
    # special values as in a call reply: null in place, the value in `objects` by its path
    assert task["result"] == {"counted": 5, "day": None}
    descriptors = {tuple(o["path"]): o for o in body["objects"]}
    assert descriptors[("response", "result", "day")]["value"] == "2024-01-02"
    for when in ("launched", "started", "ended"):
        assert task[when] is None and descriptors[("response", when)]["type"] == ["DateTime"]
    assert descriptors[("response", "launched")]["value"] <= descriptors[("response", "ended")]["value"]


def test_a_failed_task_shows_its_error_without_a_traceback(anvil_server: AnvilServer) -> None:
    task = until_ended(anvil_server, launch(anvil_server, "fail"))["response"]
    assert task["status"] == "failed"
    assert task["error"] == {"type": "ValueError", "message": "task failed on purpose"}
    assert "traceback" not in task and "output" not in task


def test_a_media_result_comes_inline(anvil_server: AnvilServer) -> None:
    body = until_ended(anvil_server, launch(anvil_server, "media_result"))
    (media,) = [o for o in body["objects"] if o["path"] == ["response", "result"]]
    assert media["type"][0] == "DataMedia" and media["mime-type"] == "text/plain"
    assert base64.b64decode(media["base64"]) == b"made in a task"


def test_unknown_ids_and_other_apps_tasks_are_404(anvil_server: AnvilServer) -> None:
    task_id = launch(anvil_server, "count_to", 1, 0)
    until_ended(anvil_server, task_id)
    for app, wrong in [("core", task_id), ("no_such_app", task_id), ("jobs", "a" * 25), ("jobs", "not-an-id")]:
        response = follow(anvil_server, wrong, app=app)
        assert response.status_code == 404, (app, wrong, response.text)
        error = response.json()["error"]
        assert error["type"] == "anvil.server.BackgroundTaskNotFound" and error["message"]
    # read-only: no other method is routed
    assert httpx.post(f"{anvil_server.url}anvil/apps/jobs/_/tasks/{task_id}", json={}).status_code == 405
    assert httpx.delete(f"{anvil_server.url}anvil/apps/jobs/_/tasks/{task_id}").status_code == 405


def test_origins_are_checked_as_for_calls(anvil_server: AnvilServer) -> None:
    task_id = launch(anvil_server, "count_to", 1, 0)
    refused = follow(anvil_server, task_id, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "anvil.server.PermissionDenied"
    same = follow(anvil_server, task_id, headers={"Origin": anvil_server.url.rstrip("/")})
    assert same.status_code == 200
