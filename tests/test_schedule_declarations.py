"""Schedules as an app declares them, end to end: ``@server.scheduled`` in server cells (above
and below ``@server.background_task``, several on one task, arguments with a datetime, bad
ones) and Anvil's ``scheduled_tasks`` metadata, loaded by real kernels: the app serves as
before, and what is wrong is listed with the app in ``anvil/api/apps``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AnvilServer, private_server
from jupyter_client.manager import AsyncKernelManager
from notebook_files import write_notebook

from jupyter_anvil import wire
from jupyter_anvil.host.app_kernel import AppKernel
from jupyter_anvil.host.schedules.declared import definitions_for
from jupyter_anvil.host.schedules.launcher import call_arguments
from jupyter_anvil.host.schedules.records import definition_id
from jupyter_anvil.host.schedules.spec import parse_spec

SINCE = dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.timezone.utc)

GOOD_CELL = """
from jupyter_anvil import server
import datetime as dt

@server.scheduled("every day at 09:00", tz="Europe/Paris")
@server.background_task
def morning_report():
    return "report"

@server.background_task
@server.scheduled("*/5 * * * *", args=(dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.timezone.utc),), name="below")
def since(when):
    return when.isoformat()

@server.scheduled("every weekday at 08:00", name="weekdays", args=("short",))
@server.scheduled({"every": "week", "at": {"day": 1, "hour": 10, "minute": 0}}, name="sundays",
                  kwargs={"kind": "full"}, misfire="skip")
@server.background_task
def digest(kind):
    return kind

@server.callable
def ping():
    return "pong"
"""

BAD_CELL = """
@server.scheduled("every blue moon")
@server.background_task
def lunar():
    pass

@server.scheduled("every day at 09:00")
@server.callable
def plain():
    return "still callable"

@server.scheduled("every day at 10:00", misfire="later")
@server.background_task
def late():
    pass

@server.scheduled("every day at 11:00", name="weekdays")
@server.background_task
def clash():
    pass
"""

ENTRIES = [
    {"task_name": "morning_report", "job_id": "QMUPCYEH", "time_spec": {"every": "minute", "n": 10, "at": {}}},
    {"task_name": "nope", "job_id": "YKTLUUWJ", "time_spec": {"every": "day", "n": 5, "at": {"hour": 3, "minute": 0}}},
]

EXAMPLE = '@server.scheduled("every day at 09:00") above @server.background_task'


def write_apps(root: Path) -> None:
    write_notebook(root / "scheduled.ipynb", [GOOD_CELL, BAD_CELL], {"scheduled_tasks": ENTRIES})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "schedules", write_apps) as running:
        running.wait_until_loaded(("scheduled",))
        yield running


def test_an_app_with_schedules_loads_and_serves(server: AnvilServer) -> None:
    app = server.apps()["scheduled"]
    assert app["status"] == "ready" and app["error"] is None
    assert app["functions"] == ["ping", "plain"]
    assert app["background_tasks"] == ["clash", "digest", "late", "lunar", "morning_report", "since"]
    assert server.call("scheduled", "ping") == "pong"
    assert server.call("scheduled", "plain") == "still callable"


def test_its_schedule_problems_are_listed_with_the_app(server: AnvilServer) -> None:
    problems = server.apps()["scheduled"]["schedule_problems"]
    assert problems == [
        f"server cell 2: the schedule 'lunar' of task 'lunar': {spec_error('every blue moon')}",
        "server cell 2: 'plain' is not a @server.background_task, so no schedule can launch it; stack "
        f"@server.scheduled on a background task, e.g. {EXAMPLE} above def plain(): ...",
        "server cell 2: the schedule 'late' of task 'late': misfire is 'skip' or 'run_once', not 'later': "
        'e.g. @server.scheduled("every day at 09:00", misfire="skip")',
        "server cell 2: the schedule 'weekdays' of task 'clash' has the name of the schedule of task 'digest' in "
        "server cell 1: each schedule of an app has its own name, whatever its task, e.g. "
        '@server.scheduled("every day at 09:00", name="morning")',
        "metadata.jupyter_anvil.scheduled_tasks[1] (job_id 'YKTLUUWJ'): task_name 'nope' is not a "
        "@server.background_task of this app (its background tasks: 'clash', 'digest', 'late', 'lunar', "
        "'morning_report', 'since'), so no schedule can launch it; schedule a background task, e.g. "
        '"task_name": "clash"',
    ]
    # the app's log has no error for them: the cells ran as written
    records = server.admin("anvil/api/logs", app="scheduled")["records"]
    assert not [r for r in records if r["stream"] in ("traceback", "stderr")], records


def spec_error(spec: str) -> str:
    try:
        parse_spec(spec, "UTC")
    except ValueError as e:
        return str(e)
    raise AssertionError(f"{spec!r} parsed")


async def test_a_real_kernel_reports_every_declaration_with_its_cell(tmp_path: Path) -> None:
    """The load reply itself, from a real kernel: both decorator orders, the arguments
    encoded (the datetime survives), two schedules on one task, the problems."""
    kernel = AppKernel(
        AsyncKernelManager(kernel_name="python3"),
        "scheduled",
        on_log=lambda call_id, stream, text: None,
        on_nested_call=lambda kernel, request: None,  # type: ignore[arg-type,return-value]
        on_death=lambda kernel: None,
    )
    cells = [{"index": 2, "source": GOOD_CELL}, {"index": 5, "source": BAD_CELL}]
    await kernel.start("scheduled.ipynb", cells, str(tmp_path), 60)
    try:
        declared: dict[Any, Any] = {d["name"]: d for d in kernel.schedules if "problem" not in d}
        declared.update({(d["name"], d["task"]): d for d in kernel.schedules if "problem" not in d})
        problems = [(d["cell"], d["name"], d["problem"]) for d in kernel.schedules if "problem" in d]
        json.dumps(kernel.schedules)
    finally:
        await kernel.shutdown()
    assert declared["morning_report"] == {
        "name": "morning_report",
        "task": "morning_report",
        "spec": "every day at 09:00",
        "tz": "Europe/Paris",
        "misfire": "run_once",
        "args": [],
        "kwargs": {},
        "cell": 2,
    }
    assert declared["below"]["task"] == "since"
    assert [wire.decode_value(v) for v in declared["below"]["args"]] == [SINCE]
    assert declared["sundays"]["spec"] == {"every": "week", "at": {"day": 1, "hour": 10, "minute": 0}}
    assert (declared["sundays"]["misfire"], declared["sundays"]["task"]) == ("skip", "digest")
    assert (declared["weekdays", "digest"]["cell"], declared["weekdays", "digest"]["args"]) == (
        2,
        [{"v": "short", "objects": []}],
    )
    assert {k: wire.decode_value(v) for k, v in declared["sundays"]["kwargs"].items()} == {"kind": "full"}
    assert [(cell, name) for cell, name, _ in problems] == [(5, None), (5, "late")]
    # the spec's grammar and the name clash are the host's to check: the kernel sends them as they are
    assert (declared["lunar"]["spec"], declared["lunar"]["cell"]) == ("every blue moon", 5)
    assert declared["weekdays", "clash"]["cell"] == 5
    # the host's view of the same reply: what runs, and its arguments as a run sends them
    found = definitions_for("scheduled", kernel.schedules, ENTRIES, kernel.registered.background_tasks)
    by_id: dict[str, Any] = {s.id: s for s in found.runnable}
    keys = [("metadata", "QMUPCYEH"), *(("notebook", n) for n in ("below", "morning_report", "sundays", "weekdays"))]
    assert sorted(by_id) == sorted(definition_id("scheduled", source, key) for source, key in keys)  # type: ignore[arg-type]
    assert [(s.name, s.spec) for s in found.broken] == [("lunar", "every blue moon")]
    # a run's call, from the arguments as the kernel encoded them: the datetime back, by the kernel's decoding
    args, kwargs, objects = call_arguments(by_id[definition_id("scheduled", "notebook", "below")].args, {})
    assert wire.decode({"args": args, "kwargs": kwargs}, objects) == {"args": [SINCE], "kwargs": {}}
    assert [p.split(":")[0] for p in found.problems] == [
        "server cell 6",
        "server cell 6",
        "server cell 6",
        "server cell 6",
        "metadata.jupyter_anvil.scheduled_tasks[1] (job_id 'YKTLUUWJ')",
    ]
