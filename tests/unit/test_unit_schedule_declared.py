"""How an app declares schedules: ``@server.scheduled`` in the kernel (what the load reply
carries), and the host's ``definitions_for`` (declarations and metadata entries checked into
schedules, runnable or broken, and problems, with records.definition_id ids)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from notebook_files import write_notebook

from jupyter_anvil import server, wire
from jupyter_anvil.host.app_kernel import schedule_declarations
from jupyter_anvil.host.notebooks import AppSpec, read_app
from jupyter_anvil.host.schedules.declared import NAME_LENGTH, Declared, definitions_for
from jupyter_anvil.host.schedules.records import MAX_ID_LENGTH, ScheduleDefinition, definition_id
from jupyter_anvil.host.schedules.service import Scheduler
from jupyter_anvil.host.schedules.spec import ScheduleSpecError, parse_spec
from jupyter_anvil.host.store import Store
from jupyter_anvil.kernel import registry
from jupyter_anvil.media import BlobMedia
from jupyter_anvil.protocol import ScheduleDeclaration


@pytest.fixture
def cells() -> Iterator[None]:
    """A clean registry, as if the runtime were running the cell at index 3 (restored after)."""
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


# -- the host: definitions_for -------------------------------------------------------------------

TASKS = ("job", "other")
ENTRY_EXAMPLE = json.dumps(
    {
        "task_name": "nightly",
        "job_id": "NIGHTLY1",
        "time_spec": {"every": "day", "n": 1, "at": {"hour": 3, "minute": 0}},
    }
)
NOT_A_TASK = (
    "is not a @server.background_task of this app (its background tasks: 'job', 'other'), so no schedule can "
    "launch it; schedule a background task, e.g. "
)
SAME_VERSION = "install the same jupyter-anvil version in the kernel's environment as in the server's"


def declared(**fields: Any) -> dict[str, Any]:
    return {**DECLARED, "cell": 2, **fields}


def problems_of(declarations: list[Any] = (), entries: Any = None) -> list[str]:  # type: ignore[assignment]
    return definitions_for("shop", declarations, entries, TASKS).problems


def spec_error(spec: Any, tz: str = "UTC") -> str:
    with pytest.raises(ScheduleSpecError) as caught:
        parse_spec(spec, tz)
    return str(caught.value)


def test_good_declarations_become_schedules() -> None:
    when = wire.encode_value(dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.timezone.utc), "args")
    declarations = [
        declared(name="paris", spec="every day at 09:00", tz="Europe/Paris", misfire="skip", args=[when]),
        declared(name=None, task="other", spec="*/5 * * * *", kwargs={"n": {"v": 1, "objects": []}}, cell=4),
    ]
    entries = [{"task_name": "job", "job_id": "QMUPCYEH", "time_spec": {"every": "minute", "n": 10, "at": {}}}]
    found = definitions_for("shop", declarations, entries, TASKS)
    assert found.problems == [] and found.broken == []
    assert found.runnable == [
        ScheduleDefinition(
            id=definition_id("shop", "notebook", "paris"), app="shop", task="job", name="paris",
            spec="every day at 09:00", tz="Europe/Paris", misfire="skip", args=[when], kwargs={}, source="notebook",
        ),
        ScheduleDefinition(
            id=definition_id("shop", "notebook", "other"), app="shop", task="other", name="other",
            spec="*/5 * * * *", tz="UTC", misfire="run_once", args=[], kwargs={"n": {"v": 1, "objects": []}},
            source="notebook",
        ),
        ScheduleDefinition(
            id=definition_id("shop", "metadata", "QMUPCYEH"), app="shop", task="job", name="QMUPCYEH",
            spec={"every": "minute", "n": 10, "at": {}}, tz="UTC", misfire="run_once", args=[], kwargs={},
            source="metadata",
        ),
    ]  # fmt: skip
    assert found.where == {
        definition_id("shop", "notebook", "paris"): "server cell 3: the schedule 'paris' of task 'job'",
        definition_id("shop", "notebook", "other"): "server cell 5: the schedule 'other' of task 'other'",
        definition_id("shop", "metadata", "QMUPCYEH"): "metadata.jupyter_anvil.scheduled_tasks[0] (job_id 'QMUPCYEH'), "
        "task 'job'",
    }


def test_problems_the_kernel_found_name_their_cell_and_schedule() -> None:
    assert problems_of(
        [
            declared(name="job", problem="misfire is 'skip' or 'run_once', not 'x': e.g. misfire=\"skip\"", cell=4),
            declared(name=None, task=None, problem="'plain' is not a @server.background_task, so ...", cell=None),
            declared(problem=["odd"]),
        ]
    ) == [
        "server cell 5: the schedule 'job' of task 'job': misfire is 'skip' or 'run_once', not 'x': "
        'e.g. misfire="skip"',
        "a server cell: 'plain' is not a @server.background_task, so ...",
        "server cell 3: the schedule 'job' of task 'job': ['odd']",
    ]


def test_problems_the_host_finds_in_declarations() -> None:
    assert problems_of(
        [
            "junk",
            declared(task="nope"),
            declared(task=None, name=None),
            declared(name=""),
            declared(name="n" * (NAME_LENGTH + 1)),
            declared(name="dup"),
            declared(name="dup", cell=5),
            declared(name="dup", task="other", cell=6),
            declared(name="s1", spec=5),
            declared(name="s2", tz=5),
            declared(name="s3", misfire="never"),
            declared(name="s4", args=[1]),
            declared(name="s5", kwargs={"a": 1}),
            declared(name="s6", args=[{"v": 1, "objects": [], "extra": 2}]),
        ]
    ) == [
        f"schedule 0 of the load reply is 'junk', not a declaration: {SAME_VERSION}",
        f"server cell 3: 'nope' {NOT_A_TASK}"
        '@server.scheduled("every day at 09:00") above @server.background_task above def nope(): ...',
        f"server cell 3: None {NOT_A_TASK}"
        '@server.scheduled("every day at 09:00") above @server.background_task above def report(): ...',
        "server cell 3: the schedule of task 'job' has the name '': a name is a str of 1 to 255 characters, "
        'e.g. @server.scheduled("every day at 09:00", name="morning")',
        f"server cell 3: the schedule of task 'job' has the name '{'n' * 76}...: a name is a str of 1 to 255 "
        'characters, e.g. @server.scheduled("every day at 09:00", name="morning")',
        "server cell 6: the schedule 'dup' of task 'job' has the name of the schedule of task 'job' in server cell 3: "
        'each schedule of an app has its own name, whatever its task, e.g. @server.scheduled("every day at 09:00", '
        'name="morning")',
        "server cell 7: the schedule 'dup' of task 'other' has the name of the schedule of task 'job' in server cell "
        '3: each schedule of an app has its own name, whatever its task, e.g. @server.scheduled("every day at 09:00", '
        'name="morning")',
        "server cell 3: the schedule 's1' of task 'job': a schedule is a str or an Anvil time_spec dict, not 5, "
        'e.g. @server.scheduled("every day at 09:00")',
        "server cell 3: the schedule 's2' of task 'job': tz is a zone name, not 5: e.g. tz=\"Europe/Paris\"",
        "server cell 3: the schedule 's3' of task 'job': misfire is \"skip\" or \"run_once\", not 'never': "
        'e.g. misfire="skip"',
        f"server cell 3: the schedule 's4' of task 'job': its args are not encoded values ([1]): {SAME_VERSION}",
        f"server cell 3: the schedule 's5' of task 'job': its kwargs are not encoded values ({{'a': 1}}): "
        f"{SAME_VERSION}",
        # what launcher.call_arguments would refuse at every run is refused here, at the load
        f"server cell 3: the schedule 's6' of task 'job': its args are not encoded values "
        f"([{{'v': 1, 'objects': [], 'extra': 2}}]): {SAME_VERSION}",
    ]


@pytest.mark.parametrize(
    ("spec", "tz"),
    [
        ("every blue moon", "UTC"),
        ("61 * * * *", "UTC"),
        ({"every": "fortnight"}, "UTC"),
        ("every day at 09:00", "Europe/Pariss"),
        ("every day at 09:00", "europe/paris"),
    ],
)
def test_specs_and_zones_are_checked_by_parse_spec(spec: Any, tz: str) -> None:
    found = definitions_for("shop", [declared(name="bad", spec=spec, tz=tz)], None, TASKS)
    assert found.problems == [f"server cell 3: the schedule 'bad' of task 'job': {spec_error(spec, tz)}"]
    # whole but for its spec or zone: broken, kept (with its problem) by the store, never run
    assert found.runnable == [] and found.broken == [
        ScheduleDefinition(definition_id("shop", "notebook", "bad"), "shop", "job", "bad", spec, tz)
    ]
    assert "e.g." in spec_error(spec, tz) or "Example" in spec_error(spec, tz) or "such as" in spec_error(spec, tz)


def test_problems_in_metadata_entries() -> None:
    day = {"every": "day"}
    assert problems_of(
        entries=[
            "junk",
            {"task_name": "job", "time_spec": day},
            {"task_name": "job", "job_id": 5, "time_spec": day},
            {"task_name": "job", "job_id": "A", "time_spec": day},
            {"task_name": "job", "job_id": "A", "time_spec": day},
            {"job_id": "B", "time_spec": day},
            {"task_name": "nope", "job_id": "C", "time_spec": day},
            {"task_name": "job", "job_id": "D"},
            {"task_name": "job", "job_id": "E", "time_spec": 5},
            {"task_name": "job", "job_id": "F", "time_spec": {"every": "fortnight"}},
            {"task_name": "job", "job_id": "G", "time_spec": day, "tz": "Europe/Paris"},
        ]
    ) == [
        f"metadata.jupyter_anvil.scheduled_tasks[0] is an object with task_name, job_id and time_spec, not 'junk': "
        f"e.g. {ENTRY_EXAMPLE}",
        "metadata.jupyter_anvil.scheduled_tasks[1] has no job_id: a job_id is a str of 1 to 255 characters naming "
        f'the schedule for good (its runs are kept under it), e.g. "job_id": "NIGHTLY1" in {ENTRY_EXAMPLE}',
        "metadata.jupyter_anvil.scheduled_tasks[2] has the job_id 5: a job_id is a str of 1 to 255 characters "
        f'naming the schedule for good (its runs are kept under it), e.g. "job_id": "NIGHTLY1" in {ENTRY_EXAMPLE}',
        "metadata.jupyter_anvil.scheduled_tasks[4] (job_id 'A') has the same job_id as "
        'metadata.jupyter_anvil.scheduled_tasks[3]: give each entry its own job_id, e.g. "job_id": "NIGHTLY2"',
        "metadata.jupyter_anvil.scheduled_tasks[5] (job_id 'B') has no task_name: name a background task, "
        f'e.g. "task_name": "nightly" in {ENTRY_EXAMPLE}',
        f"metadata.jupyter_anvil.scheduled_tasks[6] (job_id 'C'): task_name 'nope' {NOT_A_TASK}\"task_name\": \"job\"",
        f"metadata.jupyter_anvil.scheduled_tasks[7] (job_id 'D') has no time_spec: e.g. {ENTRY_EXAMPLE}",
        "metadata.jupyter_anvil.scheduled_tasks[8] (job_id 'E'): time_spec is an Anvil time_spec object, not 5: "
        f"e.g. {ENTRY_EXAMPLE}",
        "metadata.jupyter_anvil.scheduled_tasks[9] (job_id 'F'), task 'job': " + spec_error({"every": "fortnight"}),
        "metadata.jupyter_anvil.scheduled_tasks[10] (job_id 'G'): 'tz' ignored: an entry has task_name, job_id and "
        "time_spec, and runs in UTC as in Anvil (for a time zone or arguments, write "
        '@server.scheduled("every day at 09:00", tz="Europe/Paris") in a server cell)',
    ]
    assert problems_of(entries={"a": 1}) == [
        "metadata.jupyter_anvil.scheduled_tasks is a list of {task_name, job_id, time_spec} entries as in Anvil's "
        f"anvil.yaml, not {{'a': 1}}: e.g. [{ENTRY_EXAMPLE}]"
    ]


def test_a_bad_entry_stops_nothing_else() -> None:
    entries = [
        {"task_name": "job", "job_id": "G", "time_spec": {"every": "day", "at": {"hour": 3}}, "tz": "Europe/Paris"},
        {"task_name": "job", "job_id": "H", "time_spec": "every blue moon"},
        {"task_name": "other", "job_id": "I", "time_spec": {"every": "hour"}},
    ]
    found = definitions_for("shop", [declared(spec="every now"), declared(name="fine")], entries, TASKS)
    ids = {key: definition_id("shop", "metadata" if len(key) == 1 else "notebook", key) for key in "GHI"}
    ids.update((key, definition_id("shop", "notebook", key)) for key in ("job", "fine"))
    assert [s.id for s in found.runnable] == [ids["fine"], ids["G"], ids["I"]]
    assert [s.id for s in found.broken] == [ids["job"], ids["H"]]
    assert all(s.tz == "UTC" and s.args == [] and s.kwargs == {} for s in found.runnable if s.source == "metadata")
    assert len(found.problems) == 3
    # a declaration wrong in more than its spec is no schedule at all, not a broken one
    worse = definitions_for("shop", [declared(spec="every now", misfire="never")], None, TASKS)
    assert (worse.runnable, worse.broken, len(worse.problems)) == ([], [], 1)


def test_a_cell_s_name_equal_to_a_job_id_is_another_schedule() -> None:
    """Their ids differ (a cell's and the metadata's); a job id or a name used twice is a clash
    (test_problems_in_metadata_entries, test_problems_the_host_finds_in_declarations)."""
    entries = [{"task_name": "job", "job_id": "nightly", "time_spec": {"every": "day"}}]
    found = definitions_for("shop", [declared(name="nightly")], entries, TASKS)
    assert found.problems == [] and found.broken == []
    assert [(s.source, s.id) for s in found.runnable] == [
        ("notebook", definition_id("shop", "notebook", "nightly")),
        ("metadata", definition_id("shop", "metadata", "nightly")),
    ]


def test_a_lone_surrogate_is_a_problem_not_a_failed_sync() -> None:
    """JSON's "\\ud800" escape decodes to a str no store can write: a schedule holding one,
    in a server cell or the metadata, would fail its whole app's sync, so it is left out (said
    where, with no surrogate in the message) and the others stay."""
    not_text = (
        "holds a lone surrogate (a \\ud800 escape with no pair), text the store cannot keep: write its names, "
        "spec and arguments in plain Unicode"
    )
    entries = [
        {"task_name": "job", "job_id": "J\ud800", "time_spec": {"every": "day"}},
        {"task_name": "job", "job_id": "K", "time_spec": "every \udc00 day"},
        {"task_name": "job", "job_id": "L", "time_spec": {"every": "day"}},
    ]
    declarations = [
        declared(name="\ud800"),
        declared(name="spec", spec="every \ud800"),
        declared(name="tz", tz="Europe/\ud800"),
        declared(name="args", args=[{"v": "\ud800", "objects": []}], cell=3),
        declared(name="fine"),
    ]
    found = definitions_for("shop", declarations, entries, TASKS)
    assert found.problems == [
        *[f"server cell 3: a schedule {not_text}"] * 3,
        f"server cell 4: a schedule {not_text}",
        f"metadata.jupyter_anvil.scheduled_tasks[0] {not_text}",
        f"metadata.jupyter_anvil.scheduled_tasks[1] {not_text}",
    ]
    assert [s.name for s in found.runnable] == ["fine", "L"] and found.broken == []
    assert all(p.encode() for p in found.problems)


def test_an_app_without_background_tasks_says_so() -> None:
    assert definitions_for("shop", [declared()], None, []).problems == [
        "server cell 3: 'job' is not a @server.background_task of this app (it has none), so no schedule can launch "
        'it; schedule a background task, e.g. @server.scheduled("every day at 09:00") above @server.background_task '
        "above def job(): ..."
    ]


def test_ids_are_stable_safe_and_bounded() -> None:
    odd = ["morning_report", "a b", "a:b", "é" * 3, "x" * NAME_LENGTH, "../../etc", "🕘"]
    found = definitions_for("shop", [declared(name=name) for name in odd], None, TASKS)
    assert found.problems == []
    ids = [s.id for s in found.runnable]
    assert ids == [definition_id("shop", "notebook", name) for name in odd]
    assert len(set(ids)) == len(ids)  # different names, different ids
    for schedule in ids:
        assert len(schedule) <= MAX_ID_LENGTH and re.fullmatch(r"[0-9a-f]+", schedule), schedule
    # the same at every load, in every process (a hash of the text, not Python's hash()), and
    # not the same name's in another app
    script = (
        "from jupyter_anvil.host.schedules.declared import definitions_for as d; "
        "print(*[s.id for s in d('shop', [{'name': 'a b', 'task': 'job', 'spec': '@daily'}], "
        "[{'task_name': 'job', 'job_id': 'J', 'time_spec': '@daily'}], ['job']).runnable])"
    )
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert again == [definition_id("shop", "notebook", "a b"), definition_id("shop", "metadata", "J")]
    elsewhere = definitions_for("shop2", [declared(name="a b")], None, TASKS).runnable
    assert elsewhere[0].id not in ids


class NoLauncher:
    async def launch(self, app: str, task: str, args: list[Any], kwargs: dict[str, Any], schedule_id: str) -> str:
        raise AssertionError("nothing is due in this test")

    async def is_running(self, task_id: str) -> bool:
        return False


async def test_the_scheduler_takes_the_definitions_as_they_are(store: Store) -> None:
    """What ``definitions_for`` makes is what ``Scheduler.sync_app`` takes: stored as they are,
    the runnable ones with no problem of the scheduler's own, the broken one with its spec's."""
    when = wire.encode_value(dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.timezone.utc), "args")
    declarations = [
        declared(name="paris", tz="Europe/Paris", args=[when]),
        declared(name="a b", spec={"every": "week", "at": {"day": 1, "hour": 10}}),
        declared(name="bad", spec="every blue moon"),
    ]
    entries = [{"task_name": "job", "job_id": "QMUPCYEH", "time_spec": {"every": "minute", "n": 10, "at": {}}}]
    found = definitions_for("shop", declarations, entries, TASKS)
    assert isinstance(found, Declared) and [d.name for d in found.broken] == ["bad"]
    scheduler = Scheduler(store, NoLauncher(), parse_spec=parse_spec)
    try:
        records = await scheduler.sync_app("shop", [*found.runnable, *found.broken], background_tasks=TASKS)
    finally:
        await scheduler.stop()
    assert len(found.problems) == 1 and found.problems[0].startswith("server cell 3: the schedule 'bad'")
    assert {r.id: (r.source, r.problem) for r in records} == {
        definition_id("shop", "notebook", "paris"): ("notebook", None),
        definition_id("shop", "notebook", "a b"): ("notebook", None),
        definition_id("shop", "notebook", "bad"): ("notebook", spec_error("every blue moon")),
        definition_id("shop", "metadata", "QMUPCYEH"): ("metadata", None),
    }
    paris = next(r for r in records if r.name == "paris")
    assert (paris.description, paris.args) == ("every day at 09:00 Europe/Paris", [when])
