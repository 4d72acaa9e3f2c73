"""Background tasks followed from a real browser (Chromium via Playwright).

A server function of the ``jobs`` test app launches a task and returns its ``Task``; the
page gets a client ``Task`` and follows it (state, completion, return value, error) over
the transport of the ``AnvilServer`` it came from. The calls go from hello's console page
(which only loads the client) to ``jobs`` through ``new AnvilServer({app: "jobs"})``; the
last test drives the hello page's own progress bar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import NEEDS_CHROMIUM, TIMEZONE, record_page
from test_browser import app_server  # noqa: F401 (fixture)

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = NEEDS_CHROMIUM

TRANSPORTS = pytest.mark.parametrize("transport", ["websocket", "http"])
TASK_TYPE = "anvil.private.BackgroundTask"
KILLED = {
    "type": "anvil.server.BackgroundTaskKilled",
    "message": "The background task was killed.",
    "isAnvilError": True,
}
FAILED = {"type": "ValueError", "message": "task failed on purpose", "isAnvilError": True}


class Tab:
    """A page of the hello app; `run` gives scripts the client's exports and `jobs`, an
    AnvilServer for the jobs app (made by `open_jobs`)."""

    def __init__(self, context: Any, url: str) -> None:
        self.page = context.new_page()
        self.requests, self.sockets, self.errors = record_page(self.page)
        response = self.page.goto(url)
        assert response is not None and response.status == 200, f"GET {url}: {response and response.status}"
        self.client_url = url.split("/anvil/apps/")[0] + "/anvil/client.js"

    def run(self, body: str, arg: Any = None) -> Any:
        """Run `body` (an async function body) with the client's exports in scope, `jobs`,
        `tasks` (an object that keeps Tasks between runs), `sleep(ms)` and
        `outcome(promise)`: {ok: value} or {type, message, isAnvilError}."""
        script = f"""async (arg) => {{
            const client = await import({json.dumps(self.client_url)});
            const {{server, AnvilError, AnvilServer, Task, isAnvilDate, portableTypeName}} = client;
            const jobs = window.jobs;
            const tasks = (window.tasks ??= {{}});
            const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
            const outcome = async (promise) => {{
                try {{ return {{ok: await promise}}; }}
                catch (e) {{ return {{type: e.type, message: e.message, isAnvilError: e instanceof AnvilError}}; }}
            }};
            {body}
        }}"""
        return self.page.evaluate(script, arg)

    def open_jobs(self, transport: str) -> None:
        self.run('window.jobs = new AnvilServer({app: "jobs", transport: arg});', transport)

    def start(self, key: str, name: str, *args: Any) -> dict[str, Any]:
        """Launch task `name` through jobs' `start`; keep the Task as `tasks[key]`."""
        return self.run(
            """
            const task = await jobs.call("start", arg.name, ...arg.args);
            tasks[arg.key] = task;
            return {isTask: task instanceof Task, id: task.getId(), name: task.getTaskName(),
                    typeName: portableTypeName(task), json: JSON.parse(JSON.stringify(task))};
            """,
            {"key": key, "name": name, "args": list(args)},
        )

    def wait_ended(self, key: str, timeout_ms: int = 60_000) -> str:
        """Wait (polling from the page) until tasks[key] has ended; its termination status."""
        return self.run(
            """
            const deadline = Date.now() + arg.timeout;
            while (Date.now() < deadline) {
                const status = await tasks[arg.key].getTerminationStatus();
                if (status !== null) return status;
                await sleep(100);
            }
            throw new Error("the task did not end in time");
            """,
            {"key": key, "timeout": timeout_ms},
        )

    def went_over(self, transport: str) -> None:
        """Every call of `jobs` went over `transport`."""
        stats = self.run("return {...jobs.stats};")
        other = "http" if transport == "websocket" else "websocket"
        assert stats[transport] > 0 and stats[other] == 0, stats
        if transport == "http":
            assert self.sockets == []


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(timezone_id=TIMEZONE, locale="en-US")
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def tab(app_server: Any, context: Any) -> Tab:  # noqa: F811
    """hello's console page (only the client), with no `jobs` yet."""
    return Tab(context, f"{app_server.url}anvil/apps/hello/console.html")


# -- following a task ------------------------------------------------------------------


@TRANSPORTS
def test_progress_is_seen_mid_run_and_the_result_at_the_end(tab: Tab, transport: str) -> None:
    tab.open_jobs(transport)
    started = tab.start("count", "count_to", 12, 0.25)
    assert started["isTask"] is True and len(started["id"]) == 25 and started["name"] == "count_to"
    assert started["typeName"] == TASK_TYPE
    assert started["json"] == {"id": started["id"], "name": "count_to"}

    # Poll as a page drawing a progress bar would, until the task has completed.
    seen = tab.run("""
        const task = tasks.count;
        const seen = [];
        const deadline = Date.now() + 60000;
        while (!(await task.isCompleted())) {
            if (Date.now() > deadline) throw new Error("not completed in time");
            const [state, status, running, ended] = await Promise.all(
                [task.getState(), task.getStatus(), task.isRunning(), task.getTerminationStatus()]);
            seen.push({done: state.done ?? null, total: state.total ?? null, status, running, ended});
            await sleep(100);
        }
        return seen;
    """)
    mid = [s for s in seen if s["status"] == "running" and s["done"] is not None and 0 < s["done"] < 12]
    assert len({s["done"] for s in mid}) >= 3, seen  # several steps seen while it ran
    assert all(s["total"] == 12 and s["running"] is True and s["ended"] is None for s in mid), seen
    dones = [s["done"] for s in seen if s["done"] is not None]
    assert dones == sorted(dones), seen  # never goes backwards
    assert {s["status"] for s in seen} <= {"queued", "running", "completed"}

    done = tab.run("""
        const task = tasks.count;
        const value = await task.getReturnValue();
        const started = await task.getStartTime();
        return {
            state: await task.getState(), status: await task.getStatus(),
            ended: await task.getTerminationStatus(), running: await task.isRunning(),
            completed: await task.isCompleted(), error: await task.getError(),
            counted: value.counted, dayIsDate: isAnvilDate(value.day),
            day: [value.day.getFullYear(), value.day.getMonth() + 1, value.day.getDate()],
            startedIsDate: started instanceof Date, startedAgo: Date.now() - started.getTime(),
            // The Task goes back to a server function as the Task it came as.
            completedOnServer: await jobs.call("completed", task),
            valueOnServer: (await jobs.call("value_of", task)).counted,
        };
    """)
    assert done.pop("startedAgo") < 120_000
    assert done == {
        "state": {"done": 12, "total": 12},
        "status": "completed",
        "ended": "completed",
        "running": False,
        "completed": True,
        "error": None,
        "counted": 12,
        "dayIsDate": True,
        "day": [2024, 1, 2],
        "startedIsDate": True,
        "completedOnServer": True,
        "valueOnServer": 12,
    }
    tab.went_over(transport)
    assert tab.errors == []


@TRANSPORTS
def test_a_media_return_value_arrives_as_a_file(tab: Tab, transport: str) -> None:
    tab.open_jobs(transport)
    tab.start("media", "media_result")
    assert tab.wait_ended("media") == "completed"
    got = tab.run("""
        const file = await tasks.media.getReturnValue();
        return {isFile: file instanceof File, isBlob: file instanceof Blob, name: file.name,
                type: file.type, text: await file.text()};
    """)
    assert got == {"isFile": True, "isBlob": True, "name": "t.txt", "type": "text/plain", "text": "made in a task"}
    tab.went_over(transport)


@TRANSPORTS
def test_a_failing_task_rejects_with_its_own_error(tab: Tab, transport: str) -> None:
    tab.open_jobs(transport)
    tab.start("fail", "fail")
    assert tab.wait_ended("fail") == "failed"
    got = tab.run("""
        const task = tasks.fail;
        return {
            completed: await outcome(task.isCompleted()),
            error: await outcome(task.getError()),
            value: await outcome(task.getReturnValue()),
            running: await task.isRunning(),
            status: await task.getStatus(),
        };
    """)
    assert got == {"completed": FAILED, "error": FAILED, "value": FAILED, "running": False, "status": "failed"}
    tab.went_over(transport)


@TRANSPORTS
def test_a_task_killed_by_a_server_function_is_seen_as_killed(tab: Tab, transport: str) -> None:
    tab.open_jobs(transport)
    tab.start("forever", "forever")
    ticks = tab.run("""
        const deadline = Date.now() + 60000;
        for (;;) {
            const state = await tasks.forever.getState();
            if ((state.ticks ?? 0) > 3) return {phase: state.phase, running: await tasks.forever.isRunning(),
                                               completed: await tasks.forever.isCompleted()};
            if (Date.now() > deadline) throw new Error("no ticks in time");
            await sleep(100);
        }
    """)
    assert ticks == {"phase": "looping", "running": True, "completed": False}
    # The browser hands the Task to a server function, which may kill it.
    got = tab.run("""
        const task = tasks.forever;
        const killed = await jobs.call("kill", task);
        const state = await task.getState();
        return {
            killed, status: await task.getTerminationStatus(), running: await task.isRunning(),
            completed: await outcome(task.isCompleted()), error: await task.getError(),
            value: await task.getReturnValue(), phase: state.phase, ticks: state.ticks,
        };
    """)
    assert got.pop("ticks") > 3  # the last state is kept
    assert got == {
        "killed": "killed",
        "status": "killed",
        "running": False,
        "completed": KILLED,
        "error": None,
        "value": None,
        "phase": "looping",
    }
    tab.went_over(transport)


@TRANSPORTS
def test_the_browser_can_neither_kill_nor_launch(tab: Tab, transport: str) -> None:
    tab.open_jobs(transport)
    tab.start("count", "count_to", 4, 0.25)
    calls_before = tab.run("return {...jobs.stats};")
    posts_before = len([r for r in tab.requests if r.method == "POST"])
    got = tab.run("""
        return {
            kill: await outcome(tasks.count.kill()),
            launch: await outcome(jobs.launchBackgroundTask("count_to", 1)),
            launchHere: await outcome(server.launchBackgroundTask("count_to", 1)),
        };
    """)
    refused = {"type": "anvil.server.BackgroundTaskError", "isAnvilError": True}
    assert got == {
        "kill": {**refused, "message": "Can't kill background tasks from the client"},
        "launch": {**refused, "message": "Can't launch background tasks from the client."},
        "launchHere": {**refused, "message": "Can't launch background tasks from the client."},
    }
    # Refused in the page: nothing was sent.
    assert tab.run("return {...jobs.stats};") == calls_before
    assert len([r for r in tab.requests if r.method == "POST"]) == posts_before
    # The server refuses them too, however they are asked for.
    direct = tab.run("""
        const id = tasks.count.getId();
        return {
            kill: await outcome(jobs.call("anvil.private.background_tasks.kill", id)),
            launch: await outcome(jobs.call("anvil.private.background_tasks.launch", "count_to", 1)),
        };
    """)
    assert direct == {"kill": got["kill"], "launch": got["launch"]}
    # ... and the task goes on to complete.
    assert tab.wait_ended("count") == "completed"
    assert tab.run("return await tasks.count.getState();") == {"done": 4, "total": 4}
    tab.went_over(transport)


def test_queued_and_missing_tasks_as_the_client_reads_them(tab: Tab) -> None:
    # A task is queued only while the app is at its limit, and missing only after a server
    # restart; here a stand-in connection gives the Task those records, to check what the
    # client makes of them (and what it asks for).
    got = tab.run("""
        const asked = [];
        const record = (status) => ({id: "a".repeat(25), name: "job", status, launched: new Date(),
                                     started: null, ended: null, error: null, state: {n: 1}, result: null});
        const connection = (status) => ({call: async (...args) => { asked.push(args); return record(status); }});
        const read = async (status) => {
            const task = new Task("a".repeat(25), "job", connection(status));
            return {
                running: await task.isRunning(), ended: await task.getTerminationStatus(),
                completed: await outcome(task.isCompleted()), error: await outcome(task.getError()),
                value: await outcome(task.getReturnValue()), state: await task.getState(),
            };
        };
        return {queued: await read("queued"), missing: await read("missing"), asked: asked[0]};
    """)
    assert got["asked"] == ["anvil.private.background_tasks.record", "a" * 25]
    assert got["queued"] == {
        "running": True,
        "ended": None,
        "completed": {"ok": False},
        "error": {"ok": None},
        "value": {"ok": None},
        "state": {"n": 1},
    }
    mia = {"type": "anvil.server.InternalError", "message": "The background task failed (mia).", "isAnvilError": True}
    assert got["missing"] == {
        "running": False,
        "ended": "missing",
        "completed": mia,
        "error": {"ok": None},
        "value": {"ok": None},
        "state": {"n": 1},
    }


# -- the hello page --------------------------------------------------------------------


def test_the_hello_page_draws_a_progress_bar_to_the_end(app_server: Any, context: Any) -> None:  # noqa: F811
    hello = Tab(context, f"{app_server.url}anvil/apps/hello/")
    page = hello.page
    # Record every value the bar takes (the page sets it about three times a second).
    page.evaluate("""() => {
        window.bar = [];
        const progress = document.getElementById("progress");
        new MutationObserver(() => window.bar.push([progress.value, progress.max]))
            .observe(progress, {attributes: true, attributeFilter: ["value", "max"]});
    }""")
    words = page.input_value("#words").split()
    page.click("#count")
    sync_api.expect(page.locator("#count")).to_be_disabled()
    result = page.locator("#task-result")
    sync_api.expect(result).to_contain_text(f"{len(words)} words", timeout=60_000)
    sync_api.expect(result).to_contain_text("most used: it (4), to (3)")
    sync_api.expect(result).to_contain_text("done at ")
    sync_api.expect(page.locator("#task-status")).to_have_text(f"{len(words)} of {len(words)} words")
    sync_api.expect(page.locator("#count")).to_be_enabled()
    assert page.evaluate(
        "() => [document.getElementById('progress').value, document.getElementById('progress').max]"
    ) == [
        len(words),
        len(words),
    ]
    bar = page.evaluate("() => window.bar")
    partway = {value for value, top in bar if top == len(words) and 0 < value < len(words)}
    assert len(partway) >= 3, bar  # it moved in steps on the way
    values = [value for value, top in bar if top == len(words)]
    assert values == sorted(values), bar
    sync_api.expect(page.locator("#task-error")).to_have_text("")
    assert hello.errors == []
