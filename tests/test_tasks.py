"""Background tasks on their own kernels: live state, return values, errors, kill,
crashes, timeouts, a concurrency limit, durable records, the admin API and its feed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from apps import write_jobs_app
from conftest import AnvilServer, private_server
from test_app_loading import wait_for

TASKS = "anvil.private.background_tasks."


def launch(server: AnvilServer, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Launch through a server function, as a page does; returns the Task as sent."""
    body = server.post("jobs", "start", {"args": [name, *args], "kwargs": kwargs}).json()
    assert body["objects"] == [
        {"type": ["ValueType"], "path": ["response"], "typeName": "anvil.private.BackgroundTask"}
    ]
    return body["response"]


def as_arg(task: dict[str, Any]) -> dict[str, Any]:
    """A Task handed back to a server function (or queried by a browser)."""
    return {
        "args": [task],
        "objects": [{"type": ["ValueType"], "path": ["args", 0], "typeName": "anvil.private.BackgroundTask"}],
    }


def record(server: AnvilServer, task: dict[str, Any]) -> dict[str, Any]:
    """What a browser sees of a task it was given (no token, no Jupyter auth)."""
    body = server.post("jobs", f"{TASKS}record", {"args": [task["id"]]}).json()
    assert "response" in body, body
    return body


def status(server: AnvilServer, task: dict[str, Any]) -> str:
    return str(record(server, task)["response"]["status"])


def wait_status(server: AnvilServer, task: dict[str, Any], wanted: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: record(server, task) if status(server, task) == wanted else None, timeout, f"task {wanted}")


def test_progress_is_seen_mid_run_and_the_result_at_the_end(anvil_server: AnvilServer) -> None:
    task = launch(anvil_server, "count_to", 15, 0.2)
    assert len(task["id"]) == 25 and task["name"] == "count_to"
    mid = wait_for(
        lambda: (r := record(anvil_server, task)["response"])["state"] and 0 < r["state"]["done"] < 15 and r,
        what="progress",
    )
    assert mid["status"] == "running" and mid["state"]["total"] == 15
    admin = anvil_server.admin(f"anvil/api/tasks/{task['id']}")
    assert admin["status"] == "running" and 0 < admin["state"]["done"] <= 15  # plain JSON, not wire form
    described = anvil_server.call("jobs", "describe", task["id"])
    assert described["running"] is True and described["status"] is None and described["name"] == "count_to"
    done = wait_status(anvil_server, task, "completed")
    assert done["response"]["state"] == {"done": 15, "total": 15}
    assert done["response"]["result"] == {"counted": 15, "day": None}
    assert {"type": ["Date"], "path": ["response", "result", "day"], "value": "2024-01-02"} in done["objects"]
    assert anvil_server.post("jobs", "completed", as_arg(task)).json()["response"] is True
    value = anvil_server.post("jobs", "value_of", as_arg(task)).json()
    assert value["response"]["counted"] == 15
    output = anvil_server.admin(f"anvil/api/tasks/{task['id']}/output")
    assert output["text"].splitlines() == [f"step {i}" for i in range(1, 16)] and output["running"] is False
    assert anvil_server.admin(f"anvil/api/tasks/{task['id']}/output", offset=output["offset"])["text"] == ""


def test_named_tasks_and_media_results(anvil_server: AnvilServer) -> None:
    renamed = launch(anvil_server, "renamed_task")
    assert wait_status(anvil_server, renamed, "completed")["response"]["result"] == "renamed"
    media = launch(anvil_server, "media_result")
    done = wait_status(anvil_server, media, "completed")
    (descriptor,) = [o for o in done["objects"] if o["type"] == ["DataMedia"]]
    assert descriptor["name"] == "t.txt" and descriptor["path"] == ["response", "result"]
    import base64

    assert base64.b64decode(descriptor["base64"]) == b"made in a task"
    refused = launch(anvil_server, "media_state")
    message = wait_status(anvil_server, refused, "completed")["response"]["result"]
    assert message.startswith("SerializationError: Illegal value in a anvil.server.task_state") and "Media" in message


def test_a_failing_task_keeps_its_error(anvil_server: AnvilServer) -> None:
    task = launch(anvil_server, "fail")
    done = wait_status(anvil_server, task, "failed")
    assert done["response"]["error"]["type"] == "ValueError"
    assert done["response"]["error"]["message"] == "task failed on purpose"
    for function in ("completed", "error_of", "value_of"):
        error = anvil_server.post("jobs", function, as_arg(task)).json()["error"]
        assert error["type"] == "ValueError" and error["message"] == "task failed on purpose", function
    admin = anvil_server.admin(f"anvil/api/tasks/{task['id']}")
    assert "Traceback" in admin["traceback"] and "task failed on purpose" in admin["traceback"]
    assert "about to fail" in anvil_server.admin(f"anvil/api/tasks/{task['id']}/output")["text"]


def test_kill_keeps_the_last_state(anvil_server: AnvilServer) -> None:
    task = launch(anvil_server, "forever")
    wait_for(lambda: (record(anvil_server, task)["response"]["state"] or {}).get("ticks", 0) > 3, what="ticks")
    assert anvil_server.post("jobs", "kill", as_arg(task)).json()["response"] == "killed"
    done = record(anvil_server, task)["response"]
    assert done["status"] == "killed" and done["state"]["phase"] == "looping" and done["state"]["ticks"] > 3
    error = anvil_server.post("jobs", "completed", as_arg(task)).json()["error"]
    assert error == {**error, "type": "anvil.server.BackgroundTaskKilled", "message": "The background task was killed."}


def test_a_crashing_task_kernel_fails_the_task(anvil_server: AnvilServer) -> None:
    task = launch(anvil_server, "crash")
    done = wait_status(anvil_server, task, "failed")["response"]
    assert done["error"]["type"] == "anvil.server.ExecutionTerminatedError"
    assert "exit code 9" in done["error"]["message"]
    assert anvil_server.call("jobs", "pid")  # the app still answers


def test_tasks_run_in_their_own_session_and_kernel(anvil_server: AnvilServer) -> None:
    launcher = anvil_server.post("jobs", "my_session")
    task = launch(anvil_server, "whoami")
    done = wait_status(anvil_server, task, "completed")["response"]["result"]
    assert done["client"] == "background_task" and done["task"] == task["id"] and done["caller"] == "background_task"
    assert done["session"] != launcher.json()["response"]
    assert done["pid"] != anvil_server.call("jobs", "pid")
    launched_by = anvil_server.admin(f"anvil/api/tasks/{task['id']}")["launched_by"]
    assert launched_by["client"]["type"] == "http"


def test_falsy_return_values_are_returned_as_they_are(anvil_server: AnvilServer) -> None:
    task = launch(anvil_server, "tight_loop", 0)
    wait_status(anvil_server, task, "completed")
    assert anvil_server.post("jobs", "value_of", as_arg(task)).json()["response"] == 0


def test_a_tight_loop_cannot_flood_the_state_channel(anvil_server: AnvilServer) -> None:
    events: list[dict[str, Any]] = []

    async def follow(task_id_holder: dict[str, str]) -> None:
        url = anvil_server.ws_url("x").replace("/anvil/apps/x/_/ws", "/anvil/api/tasks/feed")
        headers = {"Authorization": f"token {anvil_server.token}"}
        async with websockets.connect(url, additional_headers=headers) as feed:
            started = time.monotonic()
            launched = await asyncio.to_thread(launch, anvil_server, "tight_loop", 300000)
            task_id_holder["id"] = launched["id"]
            while time.monotonic() - started < 60:
                message = json.loads(await asyncio.wait_for(feed.recv(), 60))
                if message["task"]["id"] == launched["id"]:
                    events.append(message["task"])
                    if message["task"]["status"] in ("completed", "failed"):
                        return

    holder: dict[str, str] = {}
    asyncio.run(follow(holder))
    assert events[-1]["status"] == "completed"
    assert [e["status"] for e in events][:2] == ["queued", "running"]
    state_events = [e for e in events if e["status"] == "running" and e.get("state")]
    elapsed = events[-1]["ended"] - events[0]["launched"]
    assert len(state_events) <= 4 * elapsed + 4  # at most four a second, however fast the loop


def test_task_state_outside_a_task_and_launching_from_a_browser(anvil_server: AnvilServer) -> None:
    error = anvil_server.post("jobs", "state_outside").json()["error"]
    assert error["message"] == "Cannot access anvil.server.task_state outside a background task"
    for function, message in (
        ("launch", "Can't launch background tasks from the client."),
        ("list", "Can't manage background tasks from the client"),
        ("kill", "Can't kill background tasks from the client"),
    ):
        response = anvil_server.post("jobs", f"{TASKS}{function}", {"args": ["count_to"]})
        assert response.json()["error"]["type"] == "anvil.server.BackgroundTaskError", function
        assert response.json()["error"]["message"] == message
    assert anvil_server.post("jobs", "task:count_to", {"args": [1]}).status_code == 403
    unknown = anvil_server.post("jobs", f"{TASKS}record", {"args": ["a" * 25]}).json()["error"]
    assert unknown["type"] == "anvil.server.BackgroundTaskNotFound"
    missing_name = anvil_server.post("jobs", "start", {"args": ["no_such_task"]}).json()["error"]
    assert missing_name["type"] == "anvil.server.NoServerFunctionError"


def test_the_admin_api_lists_filters_pages_and_needs_auth(anvil_server: AnvilServer) -> None:
    first = launch(anvil_server, "renamed_task")
    wait_status(anvil_server, first, "completed")
    listing = anvil_server.admin("anvil/api/tasks", app="jobs", status="completed", limit=2)
    assert 1 <= len(listing["tasks"]) <= 2 and all(t["status"] == "completed" for t in listing["tasks"])
    assert "output" not in listing["tasks"][0]
    if listing["next"] is not None:
        older = anvil_server.admin("anvil/api/tasks", app="jobs", status="completed", limit=2, before=listing["next"])
        assert all(t["launched"] < listing["next"] for t in older["tasks"])
    named = anvil_server.admin("anvil/api/tasks", name="renamed_task")["tasks"]
    assert named and all(t["name"] == "renamed_task" for t in named)
    assert first["id"] in anvil_server.call("jobs", "listing")
    for path in ("anvil/api/tasks", f"anvil/api/tasks/{first['id']}", f"anvil/api/tasks/{first['id']}/output"):
        assert httpx.get(anvil_server.url + path).status_code in (401, 403), path
    assert httpx.post(f"{anvil_server.url}anvil/api/tasks/{first['id']}/kill").status_code in (401, 403)
    with pytest.raises(httpx.HTTPStatusError):
        anvil_server.admin("anvil/api/tasks/" + "b" * 25)
    with pytest.raises(httpx.HTTPStatusError):
        anvil_server.admin("anvil/api/tasks", status="bogus")


def test_the_admin_api_kills(anvil_server: AnvilServer) -> None:
    task = launch(anvil_server, "forever")
    wait_status(anvil_server, task, "running")
    response = httpx.post(
        f"{anvil_server.url}anvil/api/tasks/{task['id']}/kill", headers={"Authorization": f"token {anvil_server.token}"}
    )
    assert response.status_code == 200 and response.json()["status"] == "killed"


# -- a server of our own: a concurrency limit of 2, a timeout, and restarts ------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    options = ("--AnvilApp.task_concurrency=2", "--AnvilApp.task_timeout=4", "--AnvilApp.task_output_limit=200")
    with private_server(
        tmp_path_factory, "tasks", lambda root: write_jobs_app(root / "jobs.ipynb"), *options
    ) as server:
        yield server


def test_twenty_tasks_over_a_limit_of_two_run_in_launch_order(limited: AnvilServer) -> None:
    tasks = [launch(limited, "ordered", i) for i in range(20)]
    assert status(limited, tasks[-1]) == "queued"  # waiting its turn, and saying so
    results = [wait_status(limited, t, "completed", timeout=120)["response"] for t in tasks]
    assert [r["result"] for r in results] == list(range(20))
    records = [limited.admin(f"anvil/api/tasks/{t['id']}") for t in tasks]
    starts = [r["started"] for r in records]
    assert starts == sorted(starts)  # in launch order
    for r in records:  # never more than two at once
        at_start = [o for o in records if o["started"] <= r["started"] < o["ended"]]
        assert len(at_start) <= 2


def test_calls_are_answered_while_tasks_run(limited: AnvilServer) -> None:
    running = [launch(limited, "forever") for _ in range(2)]
    for task in running:
        wait_status(limited, task, "running")
    assert isinstance(limited.call("jobs", "pid"), int)
    for task in running:
        limited.post("jobs", "kill", as_arg(task))


def test_a_task_over_its_timeout_fails(limited: AnvilServer) -> None:
    task = launch(limited, "forever")
    done = wait_status(limited, task, "failed", timeout=30)["response"]
    assert done["error"]["type"] == "anvil.server.TimeoutError"
    assert done["state"]["phase"] == "looping"


def test_output_is_kept_up_to_a_limit_with_a_marker_where_it_was_cut(limited: AnvilServer) -> None:
    task = launch(limited, "count_to", 80, 0.005)
    wait_status(limited, task, "completed")
    output = limited.admin(f"anvil/api/tasks/{task['id']}/output")
    kept, marker = output["text"][:200], output["text"][200:]
    assert kept.startswith("step 1\nstep 2\n") and "output cut here" in marker
    assert output["dropped"] == sum(len(f"step {i}\n") for i in range(1, 81)) - 200


def test_tasks_running_when_the_server_stops_are_missing_after(limited: AnvilServer) -> None:
    task = launch(limited, "count_to", 100, 0.1)
    wait_status(limited, task, "running")
    wait_for(lambda: "step 1" in limited.admin(f"anvil/api/tasks/{task['id']}/output")["text"], what="output")
    launch(limited, "renamed_task")  # its replacement spare is still warming up as the server stops
    assert limited.kernel_processes()  # the kernels are seen while the server runs
    limited.stop()
    # none is left behind (an orphan would only notice its parent is gone seconds later)
    assert not limited.kernel_processes()
    limited.start()
    assert status(limited, task) == "missing"
    # the app log is in the store too: what the task printed before the stop is still there
    logged = limited.admin("anvil/api/logs", app="jobs", limit=10000)["records"]
    assert any(r["function"] == "task:count_to" and r["text"] == "step 1\n" for r in logged), logged[-5:]
    error = limited.post("jobs", "completed", as_arg(task)).json()["error"]
    assert error["type"] == "anvil.server.InternalError" and "mia" in error["message"]
