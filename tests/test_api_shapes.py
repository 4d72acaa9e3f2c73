"""Every admin API route answers exactly the shape its type in
jupyter_anvil/host/api_types.py declares (the panel's TypeScript types are written from
those): no key missing, none extra, each value of its declared type. On a real server,
with apps that load, fail and are refused, and tasks that complete, fail and are killed.

The checker itself (tests/shapes.py) is tested first, on values made to be wrong."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, Literal, TypedDict

import httpx
import pytest
import websockets
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from shapes import assert_fits, problems
from wheels import make_wheel

from jupyter_anvil.host import api_types as api

APP = """
import time
from jupyter_anvil import server
from jupyter_anvil.media import BlobMedia

@server.background_task
def report(pause):
    server.task_state["step"] = 1
    print("working")
    time.sleep(pause)
    return {"csv": BlobMedia("text/csv", b"a,b\\n", name="r.csv"), "big": 2**70}

@server.background_task
def broken():
    raise ValueError("no good")

@server.callable
def start(name, *args):
    return server.launch_background_task(name, *args).get_id()

@server.callable
def mail(subject):
    from jupyter_anvil import email
    logo = BlobMedia("image/png", b"png", name="logo.png")
    csv = BlobMedia("text/csv", b"a,b", name="r.csv")
    sent = email.send(to="a@example.com", subject=subject, text="t", html="<img src='cid:logo'>",
                      attachments=[csv], inline_attachments={"logo": logo})
    return sent.message_id
"""

AUTH = {"Authorization": "token test-token-not-for-apps"}


# -- the checker ------------------------------------------------------------------------------------


class Inner(TypedDict):
    kind: Literal["a", "b"]
    size: int | None


class Outer(TypedDict):
    name: str
    when: float
    flag: bool
    inner: Inner
    items: list[Inner]
    extra: dict[str, Any]


class Partial(TypedDict, total=False):
    maybe: str


GOOD: dict[str, Any] = {
    "name": "x",
    "when": 1,  # JSON has one number type: an int is a fine float
    "flag": False,
    "inner": {"kind": "a", "size": None},
    "items": [{"kind": "b", "size": 3}],
    "extra": {"anything": [1, None]},
}


def test_the_checker_accepts_what_fits() -> None:
    assert problems(GOOD, Outer) == []
    assert problems({}, Partial) == [] and problems({"maybe": "yes"}, Partial) == []
    assert (
        problems({"__type__": "Media", "content_type": None, "name": "n", "size": 3, "url": None}, api.MediaLink) == []
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda v: v.pop("flag"), "$: Outer needs 'flag'"),
        (lambda v: v.update(surplus=1), "$: Outer has no 'surplus'"),
        (lambda v: v.update(name=3), "$.name: 3 is not a str"),
        (lambda v: v.update(when="soon"), "$.when: 'soon' is not a float"),
        (lambda v: v.update(flag=0), "$.flag: 0 is not a bool"),
        (lambda v: v["inner"].update(kind="c"), "$.inner.kind: 'c' is not one of ('a', 'b')"),
        (lambda v: v["inner"].update(size=True), "$.inner.size: True fits none of"),  # a bool is not an int
        (lambda v: v["inner"].pop("size"), "$.inner: Inner needs 'size'"),
        (lambda v: v["items"].append("x"), "$.items[1]: str is not an object (Inner)"),
        (lambda v: v.update(items={}), "$.items: dict is not a list"),
        (lambda v: v.update(extra=[]), "$.extra: list is not an object"),
        (lambda v: v.update(inner=None), "$.inner: NoneType is not an object (Inner)"),
    ],
)
def test_the_checker_refuses_what_does_not_fit(change: Any, expected: str) -> None:
    value = json.loads(json.dumps(GOOD))
    change(value)
    found = problems(value, Outer)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_checker_refuses_a_literal_of_another_type_and_unknown_types() -> None:
    assert problems(0, Literal[False]) and problems(False, Literal[False]) == []
    assert problems({"maybe": None}, Partial) == ["$.maybe: None is not a str"]
    with pytest.raises(TypeError):
        problems(1, complex)


# -- every route, on a real server -------------------------------------------------------------------


def write_apps(root: Any) -> None:
    write_notebook(root / "shapes.ipynb", [APP], {"kernels": {"min": 1}})
    write_notebook(root / "bad_meta.ipynb", [APP], {"kernels": {"min": 3, "max": 1}})
    (root / "not_json.ipynb").write_text('{"cells": [{"metadata": {"tags": ["server"]}')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "shapes", write_apps) as running:
        running.wait_until_loaded(("shapes", "bad_meta"))
        yield running


def get(server: AnvilServer, path: str, expect: int = 200, **params: Any) -> Any:
    response = httpx.get(server.url + path, params=params, headers=AUTH, timeout=30)
    assert response.status_code == expect, response.text
    return response.json()


def wait_for_end(server: AnvilServer, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record: dict[str, Any] = get(server, f"anvil/api/tasks/{task_id}")
        if record["status"] not in ("queued", "running"):
            return record
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not end")


def test_apps_and_problems(server: AnvilServer) -> None:
    listing = get(server, "anvil/api/apps")
    assert_fits(listing, api.AppsList)
    apps = {a["name"]: a for a in listing["apps"]}
    assert apps["shapes"]["status"] == "ready" and apps["shapes"]["pool"] is not None
    assert apps["bad_meta"]["status"] == "error" and apps["bad_meta"]["pool"] is None  # the None arms too
    assert {p["app"] for p in listing["problems"]} == {"bad_meta", None}


def test_logs(server: AnvilServer) -> None:
    page = get(server, "anvil/api/logs", app="shapes")
    assert_fits(page, api.LogPage)
    assert page["records"] and {"system"} <= {r["stream"] for r in page["records"]}
    assert_fits(get(server, "anvil/api/logs", 400, since="x"), api.AdminError)


def test_tasks_their_records_output_media_kill_and_feed(server: AnvilServer) -> None:
    events: list[Any] = []

    async def follow() -> tuple[str, str, str]:
        async with websockets.connect(
            f"ws://127.0.0.1:{server.port}/anvil/api/tasks/feed", additional_headers=AUTH
        ) as feed:
            done = await asyncio.to_thread(server.call, "shapes", "start", "report", 0.5)
            failed = await asyncio.to_thread(server.call, "shapes", "start", "broken")
            killed = await asyncio.to_thread(server.call, "shapes", "start", "report", 60)
            ended: set[str] = set()
            while ended != {done, failed}:
                event = json.loads(await asyncio.wait_for(feed.recv(), 60))
                events.append(event)
                if event["task"]["status"] in ("completed", "failed"):
                    ended.add(event["task"]["id"])
            return done, failed, killed

    done, failed, killed = asyncio.run(follow())
    for event in events:
        assert_fits(event, api.TaskEvent)
    assert {e["task"]["status"] for e in events} >= {"queued", "running", "completed", "failed"}

    page = get(server, "anvil/api/tasks", app="shapes", limit=2)
    assert_fits(page, api.TaskPage)
    assert len(page["tasks"]) == 2 and page["next"] is not None
    last = get(server, "anvil/api/tasks", app="shapes", before=page["next"])
    assert_fits(last, api.TaskPage)
    assert last["next"] is None

    running = get(server, f"anvil/api/tasks/{killed}")  # a live record, as shown while it runs
    assert_fits(running, api.TaskDetail)
    output = get(server, f"anvil/api/tasks/{killed}/output")
    assert_fits(output, api.TaskOutput)
    kill = httpx.post(f"{server.url}anvil/api/tasks/{killed}/kill", headers=AUTH, timeout=30)
    assert kill.status_code == 200, kill.text
    assert_fits(kill.json(), api.TaskSummary)
    assert kill.json()["status"] == "killed" and kill.json()["error"]["type"] == "anvil.server.BackgroundTaskKilled"

    record = wait_for_end(server, done)
    assert_fits(record, api.TaskDetail)
    assert_fits(record["result"]["csv"], api.MediaLink)
    media = httpx.get(server.url + record["result"]["csv"]["url"].lstrip("/"), headers=AUTH, timeout=30)
    assert media.status_code == 200 and media.content == b"a,b\n"
    broke = wait_for_end(server, failed)
    assert_fits(broke, api.TaskDetail)
    assert broke["error"]["type"] == "ValueError" and broke["traceback"]
    assert_fits(get(server, f"anvil/api/tasks/{done}/output", offset=3), api.TaskOutput)

    assert_fits(get(server, "anvil/api/tasks", 400, status="done"), api.AdminError)
    assert_fits(get(server, f"anvil/api/tasks/{'c' * 25}", 404), api.AdminError)
    assert_fits(get(server, f"anvil/api/tasks/{done}/output", 400, offset="x"), api.AdminError)


def test_schedules_their_runs_and_the_feeds_schedule_events(server: AnvilServer) -> None:
    events: list[Any] = []

    def send(method: str, path: str, expect: int, body: Any = None) -> Any:
        response = httpx.request(method, server.url + path, json=body, headers=AUTH, timeout=30)
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    async def follow() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with websockets.connect(
            f"ws://127.0.0.1:{server.port}/anvil/api/tasks/feed", additional_headers=AUTH
        ) as feed:
            body = {"app": "shapes", "task": "report", "spec": "every day at 09:00", "tz": "Europe/Paris",
                    "args": [0.1], "kwargs": {}, "misfire": "skip", "name": "daily"}  # fmt: skip
            made = await asyncio.to_thread(send, "POST", "anvil/api/schedules", 201, body)
            run = await asyncio.to_thread(send, "POST", f"anvil/api/schedules/{made['id']}/run", 200)
            failed = await asyncio.to_thread(
                send, "POST", "anvil/api/schedules", 201, {"app": "shapes", "task": "broken", "spec": "0 9 * * mon"}
            )
            await asyncio.to_thread(send, "PATCH", f"anvil/api/schedules/{failed['id']}", 200, {"paused": True})
            await asyncio.to_thread(send, "DELETE", f"anvil/api/schedules/{failed['id']}", 204)
            while not any(e.get("type") == "schedule" and e["event"] == "deleted" for e in events):
                events.append(json.loads(await asyncio.wait_for(feed.recv(), 60)))
            return made, run, failed

    made, run, _ = asyncio.run(follow())
    assert_fits(made, api.ScheduleInfo)
    assert made["args"] == [0.1] and made["misfire"] == "skip" and made["next_run"] is not None
    assert_fits(run, api.ScheduleRunInfo)
    assert run["outcome"] == "launched" and run["task_id"]
    schedule_events = [e for e in events if e["type"] == "schedule"]
    for event in schedule_events:
        assert_fits(event, api.ScheduleEvent)
    assert {e["event"] for e in schedule_events} == {"changed", "run", "deleted"}
    for event in events:
        assert_fits(event, api.FeedEvent)

    listing = get(server, "anvil/api/schedules", app="shapes")
    assert_fits(listing, api.ScheduleList)
    assert [s["id"] for s in listing["schedules"]] == [made["id"]]
    shown = get(server, f"anvil/api/schedules/{made['id']}")
    assert_fits(shown, api.ScheduleInfo)
    assert shown["last_status"] == "launched" and shown["last_task_id"] == run["task_id"]
    paused = send("PATCH", f"anvil/api/schedules/{made['id']}", 200, {"paused": True})
    assert_fits(paused, api.ScheduleInfo)
    assert paused["next_run"] is None  # the None arms too
    page = get(server, f"anvil/api/schedules/{made['id']}/runs", limit=1)
    assert_fits(page, api.ScheduleRunPage)
    assert page["next"] == run["seq"]
    assert_fits(get(server, f"anvil/api/schedules/{made['id']}/runs", before=run["seq"]), api.ScheduleRunPage)
    wait_for_end(server, run["task_id"])
    assert get(server, f"anvil/api/tasks/{run['task_id']}")["schedule_id"] == made["id"]

    assert_fits(send("POST", "anvil/api/schedules", 400, {"app": "shapes"}), api.AdminError)
    assert_fits(send("PATCH", f"anvil/api/schedules/{made['id']}", 400, {"spec": 1}), api.AdminError)
    assert_fits(get(server, "anvil/api/schedules/nope", 404), api.AdminError)
    assert_fits(get(server, f"anvil/api/schedules/{made['id']}/runs", 400, limit="x"), api.AdminError)
    assert send("DELETE", f"anvil/api/schedules/{made['id']}", 204) is None
    assert get(server, "anvil/api/schedules", app="shapes") == {"schedules": []}


def test_mail_its_messages_parts_and_the_feeds_mail_events(server: AnvilServer) -> None:
    async def follow() -> list[Any]:
        async with websockets.connect(
            f"ws://127.0.0.1:{server.port}/anvil/api/tasks/feed", additional_headers=AUTH
        ) as feed:
            for subject in ("one", "two"):
                await asyncio.to_thread(server.call, "shapes", "mail", subject)
            events = [json.loads(await asyncio.wait_for(feed.recv(), 60)) for _ in range(2)]
            mail_id = events[0]["mail"]["id"]
            deleted = await asyncio.to_thread(
                httpx.delete, f"{server.url}anvil/api/mail/{mail_id}", headers=AUTH, timeout=30
            )
            assert deleted.status_code == 204
            events.append(json.loads(await asyncio.wait_for(feed.recv(), 60)))
            return events

    events = asyncio.run(follow())
    for event in events[:2]:
        assert_fits(event, api.MailEvent)
    assert_fits(events[2], api.MailDeletedEvent)
    for event in events:
        assert_fits(event, api.FeedEvent)
    page = get(server, "anvil/api/mail", app="shapes", limit=1)
    assert_fits(page, api.MailPage)
    assert page["next"] is not None
    assert_fits(get(server, "anvil/api/mail", box="outbox", before=page["next"]), api.MailPage)
    detail = get(server, f"anvil/api/mail/{page['messages'][0]['id']}")
    assert_fits(detail, api.MailDetail)
    assert {p["inline"] for p in detail["parts"]} == {True, False}  # content_id's None and str arms
    assert_fits(get(server, "anvil/api/mail", 400, box="spam"), api.AdminError)
    assert_fits(get(server, f"anvil/api/mail/{'b' * 26}", 404), api.AdminError)


def test_apps_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    with private_server(tmp_path_factory, "shapes-off", lambda root: None, "--AnvilApp.serve_apps=False") as off:
        assert_fits(get(off, "anvil/api/apps"), api.AppsOff)
        # the routes on one app: nothing to act on, said as the admin API says errors
        for method, path in (("POST", "anvil/api/apps/hello/reload"), ("POST", "anvil/api/apps/hello/requirements")):
            response = httpx.request(method, off.url + path, headers={"Authorization": f"token {off.token}"}, json={})
            assert response.status_code == 404, (path, response.text)
            assert "serve_apps=False" in response.json()["message"]
        refused = httpx.post(off.url + "anvil/api/apps/hello/reload")
        assert refused.status_code in (401, 403)


def test_envs_requirements_and_the_feeds_env_events(server: AnvilServer, tmp_path: Any) -> None:
    """An app given a requirement (a local wheel: no index is needed) through the
    requirements route: its environment, its build's log and the feed's env events."""
    wheel = make_wheel(tmp_path, "anvil_shapes_pkg", "1.0")
    write_notebook(
        server.root / "shapes_env.ipynb", ["from jupyter_anvil import server\nx = 1\nserver.callable(print)"]
    )
    deadline = time.monotonic() + 120
    while server.apps().get("shapes_env", {}).get("status") != "ready" and time.monotonic() < deadline:
        time.sleep(0.2)
    events: list[Any] = []

    def env_ready() -> dict[str, Any]:
        while time.monotonic() < deadline + 240:
            app = server.apps()["shapes_env"]
            if app["env"] is not None and app["env"]["status"] != "building" and app["requirements"]:
                return app
            time.sleep(0.2)
        raise AssertionError(server.log_tail())

    async def follow() -> tuple[httpx.Response, dict[str, Any]]:
        async with websockets.connect(
            f"ws://127.0.0.1:{server.port}/anvil/api/tasks/feed", additional_headers=AUTH
        ) as feed:

            async def read() -> None:
                while True:
                    events.append(json.loads(await feed.recv()))

            reader = asyncio.ensure_future(read())
            body = {"add": [str(wheel)]}
            response = await asyncio.to_thread(
                httpx.post, f"{server.url}anvil/api/apps/shapes_env/requirements", json=body, headers=AUTH
            )
            app = await asyncio.to_thread(env_ready)
            await asyncio.sleep(0.3)
            reader.cancel()
            return response, app

    response, app = asyncio.run(follow())
    try:
        assert response.status_code == 200, response.text
        assert_fits(response.json(), api.RequirementsList)
        assert app["env"]["status"] == "ready", app
        assert_fits(server.admin("anvil/api/apps"), api.AppsList)
        env_events = [e for e in events if e["type"] in ("env", "env_output")]
        assert {e["type"] for e in env_events} == {"env", "env_output"}, events
        for event in env_events:
            assert_fits(event, api.EnvEvent if event["type"] == "env" else api.EnvOutputEvent)
            assert_fits(event, api.FeedEvent)
        listing = get(server, "anvil/api/envs")
        assert_fits(listing, api.EnvList)
        assert_fits(get(server, f"anvil/api/envs/{app['env']['id']}/log", offset=2), api.EnvLog)
        for event in env_events:  # each chunk's offset is the log's after it: no repeat after a fetch
            if event["type"] == "env_output" and "[more output" not in event["text"]:
                start = event["offset"] - len(event["text"].encode())
                assert get(server, f"anvil/api/envs/{event['id']}/log", offset=start)["text"].startswith(event["text"])
        assert_fits(get(server, "anvil/api/envs/0123456789abcdef/log", 404), api.AdminError)
        assert_fits(get(server, f"anvil/api/envs/{app['env']['id']}/log", 400, offset="x"), api.AdminError)
        bad = httpx.post(f"{server.url}anvil/api/apps/shapes_env/requirements", json={"add": 1}, headers=AUTH)
        assert bad.status_code == 400
        assert_fits(bad.json(), api.AdminError)
    finally:
        (server.root / "shapes_env.ipynb").unlink()
