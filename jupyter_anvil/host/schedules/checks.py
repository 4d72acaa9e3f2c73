"""The checks a schedule's fields pass (all but its spec and zone, which spec.py parses):
each problem in words, with what would be right."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .records import DEFAULT_MISFIRE, MISFIRE_POLICIES, ScheduleDefinition, ScheduleInvalid, SpecText

log = logging.getLogger(__name__)

#: the longest task name, schedule name and zone name the store keeps
_NAME_LENGTH = 255
_ZONE_LENGTH = 64


def parse_problem(error: Exception) -> str:
    """What a spec parser's exception says about the spec: its message for a bad spec or
    zone (a ValueError, as spec.ScheduleSpecError is); anything else is a bug, logged."""
    if isinstance(error, ValueError):
        return str(error) or "the schedule's spec or zone is not valid"
    log.error("[jupyter-anvil] the schedule parser failed", exc_info=error)
    return f"the schedule could not be read ({type(error).__name__}: {error})"


def task_problem(task: str, tasks: Collection[str]) -> str:
    known = ", ".join(sorted(tasks)) or "none"
    return (
        f"'{task}' is not a background task of this app: a schedule runs a function decorated with"
        f" @server.background_task (this app's background tasks: {known})"
    )


def _json_problem(what: str, value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        return f"{what} must be JSON values (numbers, strings, true/false/null, lists and dicts): {e}"
    return None


def check_definition(definition: ScheduleDefinition, tasks: Collection[str] | None) -> tuple[dict[str, Any], list[str]]:
    """The values to store for a definition (fit for the store even when wrong), and what is
    wrong with it, its spec and zone aside. ``tasks``: the app's background tasks, if known."""
    problems: list[str] = []
    task = definition.task
    if not isinstance(task, str) or not 0 < len(task) <= _NAME_LENGTH:
        problems.append(f"the task must be the name of a background task, not {task!r}")
        task = str(task)[:_NAME_LENGTH]
    elif tasks is not None and task not in tasks:
        problems.append(task_problem(task, tasks))
    name = definition.name
    if not isinstance(name, str) or not 0 < len(name) <= _NAME_LENGTH:
        problems.append(f"the name must be a string of 1 to {_NAME_LENGTH} characters, not {name!r}")
        name = task
    tz = definition.tz
    if not isinstance(tz, str) or len(tz) > _ZONE_LENGTH:
        tz = str(tz)[:_ZONE_LENGTH]  # the parser says what is wrong with it
    misfire = definition.misfire
    if misfire not in MISFIRE_POLICIES:
        problems.append(f"misfire must be 'skip' or 'run_once' (e.g. misfire=\"skip\"), not {misfire!r}")
        misfire = DEFAULT_MISFIRE
    args: Any = definition.args
    if isinstance(args, tuple):
        args = list(args)
    if not isinstance(args, list):
        problems.append(f"args must be a list (e.g. args=[1, 'a']), not {type(args).__name__}")
        args = []
    elif (problem := _json_problem("args", args)) is not None:
        problems.append(problem)
        args = []
    kwargs: Any = definition.kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        problems.append(f"kwargs must be a dict with string keys (e.g. kwargs={{'n': 1}}), not {kwargs!r}")
        kwargs = {}
    elif (problem := _json_problem("kwargs", dict(kwargs))) is not None:
        problems.append(problem)
        kwargs = {}
    values = {
        "task": task, "name": name, "spec": storable_spec(definition.spec), "tz": tz, "misfire": misfire,
        "args": args, "kwargs": dict(kwargs),
    }  # fmt: skip
    return values, problems


def storable_spec(spec: Any) -> SpecText:
    """The spec as written, if the store can keep it (a string, or a dict of JSON values);
    else its repr, so the schedule is listed with what was written and its problem."""
    if isinstance(spec, str) or (isinstance(spec, dict) and _json_problem("spec", spec) is None):
        return spec
    return repr(spec)


def api_fields(
    task: Any,
    spec: Any,
    tz: Any,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    misfire: Any,
    name: Any,
    tasks: Collection[str] | None,
) -> dict[str, Any]:
    """The fields of a schedule the API makes, checked: ScheduleInvalid says what is wrong."""
    if not isinstance(spec, (str, dict)):
        raise ScheduleInvalid(
            "spec must be a string (e.g. 'every day at 09:00' or '0 9 * * mon-fri') or a time_spec dict"
            f" (e.g. {{'every': 'day', 'at': {{'hour': 9, 'minute': 0}}}}), not {type(spec).__name__}"
        )
    if not isinstance(tz, str):
        raise ScheduleInvalid(f"tz must be an IANA zone name such as 'Europe/Paris', not {tz!r}")
    definition = ScheduleDefinition(
        id="-", app="-", task=task, name=name if name is not None else task, spec=spec, tz=tz, misfire=misfire,
        args=[] if args is None else args, kwargs={} if kwargs is None else kwargs, source="api",  # type: ignore[arg-type]
    )  # fmt: skip
    values, problems = check_definition(definition, tasks)
    if problems:
        raise ScheduleInvalid("; ".join(problems))
    return values
