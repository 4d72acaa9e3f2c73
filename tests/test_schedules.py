"""Scheduled tasks on a real server with real kernels: a schedule made through the admin
API runs on time as a normal background task (its record and ``server.context`` name the
schedule), a task slower than its interval is skipped and not doubled, pause, resume and
run now, bad bodies and unknown ids, and a restart that keeps history and next run.

One server for the module (restarted by the last test); every schedule a test makes is
deleted by it, so the next test's kernels are not busy with it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from test_app_loading import wait_for

from jupyter_anvil.host.schedules.records import definition_id

APP = """
import time
from jupyter_anvil import server

@server.background_task
def tick(label="tick"):
    frames = [[f.type, getattr(f, "schedule_id", None)] for f in server.context.call_stack]
    return {"label": label, "frames": frames, "client": server.context.client.type}

@server.background_task
def slow(seconds):
    time.sleep(seconds)
    return seconds
"""

AUTH = {"Authorization": "token test-token-not-for-apps"}


def write_apps(root: Any) -> None:
    write_notebook(root / "sched.ipynb", [APP], {"kernels": {"min": 1}})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "schedules", write_apps) as running:
        running.wait_until_loaded(("sched",))
        yield running


def api(server: AnvilServer, method: str, path: str, body: Any = None, expect: int = 200, **kw: Any) -> Any:
    """An admin API request; its JSON (None for an empty answer)."""
    response = httpx.request(
        method, f"{server.url}anvil/api/{path}", json=body, headers=AUTH, timeout=30, **kw
    )  # fmt: skip
    assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def create(server: AnvilServer, **fields: Any) -> dict[str, Any]:
    body = {"app": "sched", **fields}
    schedule: dict[str, Any] = api(server, "POST", "schedules", body, 201)
    return schedule


def runs(server: AnvilServer, schedule_id: str, **params: Any) -> list[dict[str, Any]]:
    page = api(server, "GET", f"schedules/{schedule_id}/runs", params=params)
    return list(page["runs"])


def tasks_of(server: AnvilServer, schedule_id: str) -> list[dict[str, Any]]:
    page = api(server, "GET", "tasks", params={"app": "sched", "limit": 500})
    return [t for t in page["tasks"] if t["schedule_id"] == schedule_id]


def wait_ended(server: AnvilServer, task_id: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (r := api(server, "GET", f"tasks/{task_id}"))["status"] not in ("queued", "running") and r,
            what=f"task {task_id} to end",
        )
    )


def test_an_every_2_seconds_schedule_runs_on_time_as_a_task_that_names_it(server: AnvilServer) -> None:
    schedule = create(server, task="tick", spec="every 2 seconds", args=["hello"])
    sid = schedule["id"]
    assert schedule["source"] == "api" and schedule["app_loaded"] is True and schedule["problem"] is None
    assert schedule["description"] and schedule["args"] == ["hello"] and schedule["tz"] == "UTC"
    assert schedule["next_run"] is not None and schedule["next_run"] - time.time() <= 2.1
    launched = wait_for(
        lambda: (
            [r for r in runs(server, sid) if r["outcome"] == "launched"][:3] if len(runs(server, sid)) >= 3 else None
        ),
        timeout=30,
        what="three runs",
    )
    api(server, "DELETE", f"schedules/{sid}", expect=204)
    assert len(launched) == 3, launched  # none skipped: each tick ends long before the next
    dues = sorted(r["due"] for r in launched)
    assert [round(b - a, 3) for a, b in itertools.pairwise(dues)] == [2.0, 2.0]
    for run in launched:
        assert 0 <= run["at"] - run["due"] < 0.5, run  # on time, within a few hundred milliseconds
        assert run["reason"] == "" and run["server"] and run["task_id"]
    records = tasks_of(server, sid)
    assert {r["id"] for r in records} >= {r["task_id"] for r in launched}
    frame = {"type": "scheduled_task", "is_trusted": True, "schedule_id": sid}
    for record in records:
        assert record["name"] == "tick" and record["launched_by"]["call_stack"] == [frame]
    result = wait_ended(server, launched[0]["task_id"])
    assert result["status"] == "completed", result
    # server.context in the task: a background task's session, its call stack begun by the schedule
    assert result["result"] == {
        "label": "hello",
        "frames": [["scheduled_task", sid], ["background_task", None]],
        "client": "background_task",
    }
    api(server, "GET", f"schedules/{sid}", expect=404)


def test_a_task_slower_than_its_interval_is_skipped_not_doubled(server: AnvilServer) -> None:
    schedule = create(server, task="slow", spec="every 2 seconds", args=[5])
    sid = schedule["id"]
    history = wait_for(
        lambda: (found := runs(server, sid)) and any(r["outcome"] == "skipped" for r in found) and len(found) >= 3
        and found,
        timeout=30,
        what="a skipped run",
    )  # fmt: skip
    api(server, "PATCH", f"schedules/{sid}", {"paused": True})
    skipped = [r for r in history if r["outcome"] == "skipped"]
    launched = [r for r in history if r["outcome"] == "launched"]
    assert launched and skipped
    assert skipped[0]["task_id"] is None and skipped[0]["reason"].startswith("previous run ")
    assert skipped[0]["reason"].endswith(" still running")
    first = launched[-1]["task_id"]  # newest first: the last is the first launched
    assert first in skipped[-1]["reason"]
    listed = api(server, "GET", f"schedules/{sid}")
    assert listed["last_status"] in ("skipped", "launched") and listed["paused"] is True
    # never two at once: each launch came after the one before had ended
    ended = [wait_ended(server, r["task_id"]) for r in reversed(launched)]
    for before, after in itertools.pairwise(ended):
        assert after["launched"] >= before["ended"], (before, after)
    api(server, "DELETE", f"schedules/{sid}", expect=204)


def test_pause_resume_and_run_now_through_the_api(server: AnvilServer) -> None:
    schedule = create(server, task="tick", spec="every 2 seconds", kwargs={"label": "paused"}, misfire="skip")
    sid = schedule["id"]
    assert schedule["misfire"] == "skip" and schedule["kwargs"] == {"label": "paused"}
    paused = api(server, "PATCH", f"schedules/{sid}", {"paused": True})
    assert paused["paused"] is True and paused["next_run"] is None
    before = len(runs(server, sid))
    time.sleep(3)
    assert len(runs(server, sid)) == before  # nothing fires while paused
    # run now: paused or not, recorded as one of its runs
    run = api(server, "POST", f"schedules/{sid}/run")
    assert run["outcome"] == "launched" and run["reason"] == "run now, by request" and run["task_id"]
    assert runs(server, sid)[0]["seq"] == run["seq"]
    assert wait_ended(server, run["task_id"])["result"]["label"] == "paused"
    assert api(server, "GET", f"schedules/{sid}")["last_task_id"] == run["task_id"]
    resumed = api(server, "PATCH", f"schedules/{sid}", {"paused": False})
    assert resumed["paused"] is False and resumed["next_run"] > time.time() - 0.5
    wait_for(lambda: any(r["outcome"] == "launched" and r["seq"] > run["seq"] for r in runs(server, sid)),
             timeout=20, what="a run after resuming")  # fmt: skip
    page = api(server, "GET", f"schedules/{sid}/runs", params={"limit": 1})
    assert len(page["runs"]) == 1 and page["next"] == page["runs"][0]["seq"]
    older = api(server, "GET", f"schedules/{sid}/runs", params={"limit": 1000, "before": page["next"]})
    assert all(r["seq"] < page["next"] for r in older["runs"]) and older["next"] is None
    api(server, "DELETE", f"schedules/{sid}", expect=204)


def message(response: httpx.Response) -> str:
    return str(response.json()["message"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "a new schedule (e.g. "),
        ([], "not an array"),
        ({"task": "tick", "spec": "every hour"}, "needs 'app'"),
        ({"app": "sched", "task": "tick"}, "needs 'spec'"),
        ({"app": "sched", "task": "tick", "spec": "every hour", "when": 1, "how": 2}, "unknown fields 'when', 'how'"),
        ({"app": "nope", "task": "tick", "spec": "every hour"}, "no app named 'nope' is loaded"),
        ({"app": 3, "task": "tick", "spec": "every hour"}, "app must be the name of an app"),
        ({"app": "sched", "task": "missing", "spec": "every hour"}, "'missing' is not a background task"),
        ({"app": "sched", "task": "tick", "spec": "every blue moon"}, "every"),
        ({"app": "sched", "task": "tick", "spec": 5}, "spec must be a string"),
        ({"app": "sched", "task": "tick", "spec": "every hour", "tz": "Mars/Olympus"}, "Mars/Olympus"),
        ({"app": "sched", "task": "tick", "spec": "every hour", "tz": None}, "tz cannot be null"),
        ({"app": "sched", "task": "tick", "spec": "every hour", "misfire": "burst"}, "misfire must be"),
        ({"app": "sched", "task": "tick", "spec": "every hour", "args": {"a": 1}}, "args must be an array"),
        ({"app": "sched", "task": "tick", "spec": "every hour", "kwargs": [1]}, "kwargs must be an object"),
    ],
)
def test_a_bad_new_schedule_is_refused_with_what_was_wrong(server: AnvilServer, body: Any, expected: str) -> None:
    response = httpx.post(f"{server.url}anvil/api/schedules", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 400, response.text
    assert expected in message(response), message(response)


def test_bad_changes_bodies_and_unknown_ids(server: AnvilServer) -> None:
    def send(method: str, path: str, expect: int, **kw: Any) -> str:
        response = httpx.request(method, f"{server.url}anvil/api/{path}", headers=AUTH, timeout=30, **kw)
        assert response.status_code == expect, response.text
        return message(response)

    assert "not valid JSON" in send("POST", "schedules", 400, content=b'{"app": ')
    assert "NaN" in send("POST", "schedules", 400, content=b'{"app": NaN}')
    assert "at most 65536 bytes" in send("POST", "schedules", 413, json={"app": "x" * 70000})
    sid = create(server, task="tick", spec="every day at 03:00", tz="Europe/Paris")["id"]
    try:
        assert "at least one of" in send("PATCH", f"schedules/{sid}", 400, json={})
        assert "unknown fields 'task'" in send("PATCH", f"schedules/{sid}", 400, json={"task": "slow"})
        assert "paused cannot be null" in send("PATCH", f"schedules/{sid}", 400, json={"paused": None})
        assert "paused must be true or false" in send("PATCH", f"schedules/{sid}", 400, json={"paused": "yes"})
        assert "Nowhere/City" in send("PATCH", f"schedules/{sid}", 400, json={"tz": "Nowhere/City"})
        assert "misfire must be" in send("PATCH", f"schedules/{sid}", 400, json={"misfire": 1})
        assert "unknown fields 'now'" in send("POST", f"schedules/{sid}/run", 400, json={"now": True})
        assert "limit must be a whole number" in send("GET", f"schedules/{sid}/runs?limit=x", 400)
        assert "limit must be a whole number from 1 to 1000" in send("GET", f"schedules/{sid}/runs?limit=0", 400)
        assert "before must be a whole number from 0" in send("GET", f"schedules/{sid}/runs?before={2**64}", 400)
        # nothing of it changed by the refusals
        kept = api(server, "GET", f"schedules/{sid}")
        assert (kept["spec"], kept["tz"], kept["task"], kept["paused"]) == (
            "every day at 03:00", "Europe/Paris", "tick", False,
        )  # fmt: skip
        changed = api(server, "PATCH", f"schedules/{sid}", {"spec": "every monday at 08:30", "tz": "UTC"})
        assert changed["spec"] == "every monday at 08:30" and changed["next_run"] > time.time()
        assert time.gmtime(changed["next_run"]).tm_wday == 0
    finally:
        api(server, "DELETE", f"schedules/{sid}", expect=204)
    unknown = "a" * 20
    for method, path, body in [
        ("GET", f"schedules/{unknown}", None),
        ("PATCH", f"schedules/{unknown}", {"paused": True}),
        ("DELETE", f"schedules/{unknown}", None),
        ("POST", f"schedules/{unknown}/run", None),
        ("GET", f"schedules/{unknown}/runs", None),
    ]:
        assert f"no schedule has the id '{unknown}'" in send(method, path, 404, json=body)
    listing = api(server, "GET", "schedules", params={"app": "sched"})
    assert all(s["id"] != sid for s in listing["schedules"])
    for method in ("GET", "POST"):  # no token (and no XSRF cookie): refused
        response = httpx.request(method, f"{server.url}anvil/api/schedules", json={}, timeout=30)
        assert response.status_code == 403, response.text


def test_a_removed_notebook_stops_its_schedules_which_are_kept_for_its_return(server: AnvilServer) -> None:
    notebook = write_notebook(server.root / "other.ipynb", [APP], {"kernels": {"min": 1}})
    wait_for(lambda: server.apps().get("other", {}).get("status") == "ready", timeout=120, what="app 'other'")
    sid = api(server, "POST", "schedules", {"app": "other", "task": "tick", "spec": "every 2 seconds"}, 201)["id"]
    wait_for(lambda: runs(server, sid), timeout=20, what="a first run")
    notebook.unlink()
    gone = wait_for(
        lambda: "other" not in server.apps() and (s := api(server, "GET", f"schedules/{sid}"))["app_loaded"] is False
        and s,
        what="the app's removal",
    )  # fmt: skip
    assert gone["problem"] is None and gone["source"] == "api"  # kept as it was, not fired here
    count = len(runs(server, sid))
    time.sleep(3)
    assert len(runs(server, sid)) == count
    assert "no app named 'other' is loaded" in str(
        api(server, "POST", "schedules", {"app": "other", "task": "tick", "spec": "every hour"}, 400)["message"]
    )
    write_notebook(notebook, [APP], {"kernels": {"min": 1}})
    wait_for(lambda: api(server, "GET", f"schedules/{sid}")["app_loaded"], timeout=120, what="the app's return")
    wait_for(lambda: len(runs(server, sid)) > count, timeout=20, what="a run after the app's return")
    api(server, "DELETE", f"schedules/{sid}", expect=204)
    notebook.unlink()


DECLARED = """
@server.scheduled({spec!r}, tz="Europe/Paris", name="morning", args=("declared",))
@server.background_task
def morning(label):
    frames = [[f.type, getattr(f, "schedule_id", None)] for f in server.context.call_stack]
    return {{"label": label, "frames": frames}}
"""


def test_a_notebook_save_changes_its_schedules(server: AnvilServer) -> None:
    sid = definition_id("sched", "notebook", "morning")

    def saved(spec: str | None, until: Any, what: str) -> Any:
        cells = [APP] if spec is None else [APP, DECLARED.format(spec=spec)]
        write_notebook(server.root / "sched.ipynb", cells, {"kernels": {"min": 1}})
        return wait_for(until, timeout=120, what=what)

    def schedule() -> Any:
        response = httpx.get(f"{server.url}anvil/api/schedules/{sid}", headers=AUTH, timeout=30)
        return response.json() if response.status_code == 200 else None

    daily = saved("every day at 09:00", schedule, "the schedule's first load")
    assert (daily["source"], daily["task"], daily["tz"], daily["args"]) == ("notebook", "morning", "Europe/Paris",
                                                                            ["declared"])  # fmt: skip
    assert daily["next_run"] > time.time() + 2 and daily["problem"] is None
    # changed in the notebook only: the API pauses it, runs it, and says where the rest is changed
    for change in ({"spec": "every hour"}, {"tz": "UTC"}, {"misfire": "skip"}):
        refused = api(server, "PATCH", f"schedules/{sid}", change, 400)
        assert "declared in the app's notebook" in refused["message"]
    assert "remove it there" in api(server, "DELETE", f"schedules/{sid}", expect=400)["message"]
    assert api(server, "PATCH", f"schedules/{sid}", {"paused": True})["paused"] is True
    api(server, "PATCH", f"schedules/{sid}", {"paused": False})
    # a save that changes the spec recomputes the next run; the schedule keeps its id
    fast = saved("every 2 seconds", lambda: (s := schedule())["spec"] == "every 2 seconds" and s, "the new spec")
    assert fast["next_run"] <= time.time() + 2.5 and fast["created"] == daily["created"]
    run = wait_for(lambda: [r for r in runs(server, sid) if r["outcome"] == "launched"], timeout=20, what="a run")[-1]
    result = wait_ended(server, run["task_id"])
    assert result["result"] == {"label": "declared", "frames": [["scheduled_task", sid], ["background_task", None]]}
    # a spec broken by a save: listed with its problem (and with the app's), kept with its history, not run
    broken = saved("every blue moon", lambda: (s := schedule())["problem"] and s, "the broken spec")
    assert broken["next_run"] is None and "every blue moon" in broken["problem"]
    (problem,) = server.apps()["sched"]["schedule_problems"]
    assert problem.startswith("server cell 2: the schedule 'morning' of task 'morning': ")
    assert server.apps()["sched"]["error"] is None  # the app itself is well
    assert run["seq"] in [r["seq"] for r in runs(server, sid)]
    # gone from the notebook: gone
    saved(None, lambda: schedule() is None, "its removal")
    assert server.apps()["sched"]["schedule_problems"] == []


def test_a_restart_keeps_history_and_next_run(server: AnvilServer) -> None:
    hourly = create(server, task="tick", spec="every hour at :15", name="hourly")
    paused = create(server, task="tick", spec="every 2 seconds", name="paused")
    api(server, "PATCH", f"schedules/{paused['id']}", {"paused": True})
    run = api(server, "POST", f"schedules/{hourly['id']}/run")
    wait_ended(server, run["task_id"])
    before = {s["id"]: s for s in api(server, "GET", "schedules", params={"app": "sched"})["schedules"]}
    history = runs(server, hourly["id"])
    server.stop()
    server.start(wait_for=("sched",))
    after = {s["id"]: s for s in api(server, "GET", "schedules", params={"app": "sched"})["schedules"]}
    assert after.keys() == before.keys() == {hourly["id"], paused["id"]}
    for sid in after:
        for key in ("next_run", "last_run", "last_status", "last_task_id", "paused", "spec", "created"):
            assert after[sid][key] == before[sid][key], (sid, key)
    assert after[hourly["id"]]["next_run"] > time.time() and after[paused["id"]]["paused"] is True
    assert runs(server, hourly["id"]) == history and history[0]["task_id"] == run["task_id"]
    assert api(server, "GET", f"tasks/{run['task_id']}")["schedule_id"] == hourly["id"]
    for sid in after:
        api(server, "DELETE", f"schedules/{sid}", expect=204)
