"""How an app declares schedules: ``@server.scheduled`` in the kernel (what the load reply
carries), and the host's ``definitions_for`` (declarations and metadata entries checked into
schedules and problems, with stable ids)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from notebook_files import write_notebook

from jupyter_anvil import server, wire
from jupyter_anvil.host.app_kernel import schedule_declarations
from jupyter_anvil.host.notebooks import AppSpec, read_app
from jupyter_anvil.kernel import registry
from jupyter_anvil.media import BlobMedia
from jupyter_anvil.protocol import ScheduleDeclaration


@pytest.fixture
def cells() -> Iterator[None]:
    """A clean registry, as if the runtime were running server cell 3 (restored after)."""
    saved = {kind: dict(names) for kind, names in registry.registrations.items()}
    saved_schedules = list(registry.schedules)
    for names in registry.registrations.values():
        names.clear()
    registry.schedules.clear()
    registry.loading_cell = 3
    try:
        yield
    finally:
        registry.loading_cell = None
        for kind, names in registry.registrations.items():
            names.clear()
            names.update(saved[kind])
        registry.schedules[:] = saved_schedules


def listing() -> list[dict[str, Any]]:
    declared = registry.schedule_listing()
    json.dumps(declared, allow_nan=False)  # it travels in the load reply, as JSON
    return [dict(d) for d in declared]


def decoded(values: list[Any] | dict[str, Any]) -> Any:
    if isinstance(values, list):
        return [wire.decode_value(v) for v in values]
    return {k: wire.decode_value(v) for k, v in values.items()}


# -- the kernel: @server.scheduled -----------------------------------------------------------


def test_stacked_above_a_background_task(cells: None) -> None:
    @server.scheduled("every day at 09:00", tz="Europe/Paris")
    @server.background_task
    def morning_report() -> None: ...

    assert callable(morning_report) and morning_report.__name__ == "morning_report"
    assert listing() == [
        {
            "name": "morning_report",
            "task": "morning_report",
            "spec": "every day at 09:00",
            "tz": "Europe/Paris",
            "misfire": "run_once",
            "args": [],
            "kwargs": {},
            "cell": 3,
        }
    ]


def test_below_a_background_task_and_under_an_explicit_task_name(cells: None) -> None:
    @server.background_task("nightly")
    @server.scheduled({"every": "day", "at": {"hour": 3, "minute": 0}}, misfire="skip")
    def nightly_job() -> None: ...

    [declared] = listing()
    assert declared["task"] == declared["name"] == "nightly"
    assert declared["spec"] == {"every": "day", "at": {"hour": 3, "minute": 0}}
    assert declared["misfire"] == "skip" and "problem" not in declared


def test_two_schedules_of_one_task_with_their_arguments(cells: None) -> None:
    since = dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.timezone.utc)

    @server.scheduled("every weekday at 08:00", name="weekdays", args=("short", since))
    @server.scheduled("0 10 * * sun", name="sundays", kwargs={"kind": "full", "day": dt.date(2024, 1, 7)})
    @server.background_task
    def digest(*args: Any, **kwargs: Any) -> None: ...

    sundays, weekdays = listing()
    assert (sundays["name"], weekdays["name"]) == ("sundays", "weekdays")
    assert sundays["task"] == weekdays["task"] == "digest"
    assert decoded(weekdays["args"]) == ["short", since]
    assert decoded(sundays["kwargs"]) == {"kind": "full", "day": dt.date(2024, 1, 7)}
    assert weekdays["args"][1]["objects"] == [
        {"type": ["DateTime"], "path": ["v"], "value": wire.format_datetime(since)}
    ]


def test_a_plain_function_is_a_problem_not_an_error(cells: None) -> None:
    @server.scheduled("every day at 09:00")
    def plain() -> int:
        return 1

    @server.scheduled("every day at 09:00")
    @server.callable
    def a_callable() -> int:
        return 2

    assert plain() == 1 and a_callable() == 2
    first, second = listing()
    assert first["task"] is None and first["cell"] == 3
    assert first["problem"] == (
        "'plain' is not a @server.background_task, so no schedule can launch it; stack @server.scheduled on a "
        "background task, "
        'e.g. @server.scheduled("every day at 09:00") above @server.background_task above def plain(): ...'
    )
    assert second["problem"].startswith("'a_callable' is not a @server.background_task")


def test_a_bare_decorator_leaves_the_function_alone(cells: None) -> None:
    @server.scheduled  # type: ignore[arg-type]
    @server.background_task
    def forgot_the_spec() -> str:
        return "still a function"

    assert forgot_the_spec() == "still a function"
    assert "forgot_the_spec" in registry.registrations[server._BACKGROUND_TASK]
    [declared] = listing()
    assert declared["problem"] == (
        "@server.scheduled needs a schedule: write it with its spec, "
        'e.g. @server.scheduled("every day at 09:00") above @server.background_task'
    )


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"spec": 5},
            "a schedule is a phrase or cron expression (str) or an Anvil time_spec dict, not int 5: "
            'e.g. @server.scheduled("every day at 09:00") or @server.scheduled("0 9 * * mon-fri")',
        ),
        (
            {"spec": {"every": "day", "at": {"hour": float("nan")}}},
            "an Anvil time_spec dict holds JSON values only (Out of range float values are not JSON compliant",
        ),
        (
            {"spec": {"every": dt.date(2024, 1, 1)}},
            "an Anvil time_spec dict holds JSON values only (Object of type date is not JSON serializable): "
            "e.g. {'every': 'day', 'n': 1, 'at': {'hour': 9, 'minute': 0}}",
        ),
        (
            {"tz": 1},
            'tz is an IANA time zone name (str), not int 1: e.g. @server.scheduled("every day at 09:00", '
            'tz="Europe/Paris")',
        ),
        (
            {"misfire": "never"},
            "misfire is 'skip' or 'run_once', not 'never': e.g. @server.scheduled(\"every day at 09:00\", "
            'misfire="skip")',
        ),
        (
            {"name": ""},
            "name is a non-empty str that tells a task's schedules apart, not '': "
            'e.g. @server.scheduled("every day at 09:00", name="morning")',
        ),
        (
            {"args": "daily"},
            "args is a tuple or list of the task's arguments, not str 'daily': "
            'e.g. @server.scheduled("every day at 09:00", args=("daily", 10))',
        ),
        (
            {"kwargs": {1: "a"}},
            "kwargs is a dict of the task's keyword arguments with str keys, not {1: 'a'}: "
            'e.g. @server.scheduled("every day at 09:00", kwargs={"limit": 10})',
        ),
        (
            {"args": (b"bytes",)},
            "the task's arguments must be portable values (no Media: they are kept with the schedule): "
            "Cannot serialize binary data (bytes) at msg['args'][0]: wrap it in a BlobMedia: "
            'e.g. @server.scheduled("every day at 09:00", args=("daily", 10))',
        ),
        (
            {"kwargs": {"report": BlobMedia("text/plain", b"x", name="r.txt")}},
            "the task's arguments must be portable values (no Media: they are kept with the schedule): "
            "Cannot keep Media at msg['kwargs']['report']: "
            'e.g. @server.scheduled("every day at 09:00", args=("daily", 10))',
        ),
    ],
)
def test_wrong_types_are_problems_naming_the_cell(cells: None, options: dict[str, Any], problem: str) -> None:
    spec = options.pop("spec", "every day at 09:00")

    @server.scheduled(spec, **options)
    @server.background_task
    def job() -> None: ...

    [declared] = listing()
    assert declared["cell"] == 3 and declared["task"] == "job"
    assert declared["problem"].startswith(problem)
    assert declared["spec"] is None and declared["args"] == [] and declared["kwargs"] == {}


def test_a_non_function_target_is_a_problem(cells: None) -> None:
    server.scheduled("every day at 09:00")(42)  # type: ignore[type-var]
    [declared] = listing()
    assert declared["problem"] == (
        "@server.scheduled(...) decorates a background task function, not 42: "
        'e.g. @server.scheduled("every day at 09:00") above @server.background_task'
    )


def test_a_cell_run_again_replaces_its_schedules_but_a_repeat_is_kept(cells: None) -> None:
    def define() -> Any:
        @server.scheduled("every day at 09:00")
        @server.background_task
        def report() -> None: ...

        return report

    define()
    report = define()  # the cell run again, in the notebook being edited: a new function
    assert len(registry.schedules) == 1 and registry.schedules[0].target is report
    server.scheduled("every day at 10:00")(report)  # the same function, the same name: a clash, for the host
    assert [d["spec"] for d in listing()] == ["every day at 09:00", "every day at 10:00"]


def test_outside_an_app_kernel_problems_are_printed(cells: None, capsys: pytest.CaptureFixture[str]) -> None:
    server.scheduled("every day", misfire="later")(lambda: None)  # type: ignore[arg-type]
    assert "Warning: @server.scheduled: misfire is 'skip' or 'run_once', not 'later'" in capsys.readouterr().err


def test_in_an_app_kernel_after_the_load_a_schedule_is_ignored_and_said_so(
    cells: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(server._runtime, "active", lambda: object())
    server.scheduled("every day at 09:00", misfire="later")(lambda: None)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""  # while the cells load: reported with the load reply
    assert len(registry.schedules) == 1
    registry.loading_cell = None  # the load is over: now a server call runs it
    server.scheduled("every day at 09:00")(lambda: None)
    assert "has an effect only in the server cells, as the app loads" in capsys.readouterr().err
    assert len(registry.schedules) == 1


# -- the host: the declarations travel with the app's version ------------------------------------

DECLARED: ScheduleDeclaration = {
    "name": "job",
    "task": "job",
    "spec": "every day at 09:00",
    "tz": "UTC",
    "misfire": "run_once",
    "args": [],
    "kwargs": {},
    "cell": 0,
}


def test_a_load_reply_s_schedules_are_read_as_they_came() -> None:
    assert schedule_declarations(None) == ()  # a kernel from before schedules
    assert schedule_declarations({"name": "job"}) == ()
    assert schedule_declarations([DECLARED, "junk", 3, {"odd": True}]) == (DECLARED, {"odd": True})


async def test_the_pool_keeps_its_first_kernel_s_schedules(make_pool: Any, settle: Any) -> None:
    pool, starter = make_pool(min=1, max=1)
    starter.prepare = lambda kernel: setattr(kernel, "schedules", (DECLARED,))
    assert pool.schedules == ()
    await pool.start()
    assert pool.schedules == (DECLARED,)
    # a replacement kernel that declares something else does not change the version's schedules
    starter.prepare = lambda kernel: setattr(kernel, "schedules", ())
    dead = pool.kernels[0]
    dead.dead = True
    pool.kernel_died(dead)
    await settle(lambda: len(pool.kernels) == 1 and pool.kernels[0] is not dead)
    assert pool.schedules == (DECLARED,)


@pytest.mark.parametrize(
    "entries",
    [
        [{"task_name": "job", "job_id": "NIGHTLY1", "time_spec": {"every": "day", "at": {"hour": 3}}}],
        [{"task_name": "job"}, "not an entry", {"time_spec": "every now and then"}],
        {"not": "a list"},
    ],
)
def test_metadata_schedules_are_kept_as_written_and_never_fail_the_notebook(tmp_path: Path, entries: Any) -> None:
    path = write_notebook(tmp_path / "ported.ipynb", ["x = 1"], {"scheduled_tasks": entries})
    spec = read_app(tmp_path, path)
    assert isinstance(spec, AppSpec)
    assert spec.scheduled_tasks == entries
    unscheduled = read_app(tmp_path, write_notebook(tmp_path / "plain.ipynb", ["x = 1"]))
    assert isinstance(unscheduled, AppSpec) and unscheduled.scheduled_tasks is None
    # a changed list is a new version of the app: it reloads, and its schedules with it
    changed = read_app(tmp_path, write_notebook(tmp_path / "ported.ipynb", ["x = 1"], {"scheduled_tasks": []}))
    assert isinstance(changed, AppSpec) and changed.fingerprint != spec.fingerprint
