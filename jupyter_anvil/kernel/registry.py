"""What the server cells registered, by kind (callables, background tasks...), and who may
call them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import errors, wire
from ..protocol import BACKGROUND_TASK, CALLABLE, KINDS, EncodedValue, Kind, ScheduleDeclaration
from ..protocol import Registration as WireRegistration


@dataclass
class Registration:
    name: str
    function: Callable[..., Any]
    require_user: Any = None
    kind: Kind = CALLABLE


#: each kind has its own names: a background task and a callable may share one
registrations: dict[Kind, dict[str, Registration]] = {kind: {} for kind in KINDS}
#: the callables, by name
functions = registrations[CALLABLE]


def register(name: str, function: Callable[..., Any], require_user: Any = None, kind: Kind = CALLABLE) -> None:
    """Register ``function`` under ``name``; the last registration of a name wins, as in Anvil."""
    registered = registrations[kind]
    previous = registered.get(name)
    # a wrapper (the email handler's) stands for the function it wraps: the same one again is no news
    if previous is not None and _unwrapped(previous.function) is not _unwrapped(function):
        what = "callable" if kind == CALLABLE else kind.replace("_", " ")
        print(
            f"Warning: {'an' if what[0] in 'aeiou' else 'a'} {what} with the name {name!r} has "
            f"already been registered (previously by {_qualname(previous.function)} now by {_qualname(function)}).",
            file=sys.stderr,
        )
    registered[name] = Registration(name, function, require_user, kind)
    if require_user:
        print(
            f"Warning: server function {name!r} is registered with require_user, but this server has no users "
            "service yet: every call to it will be refused with anvil.server.PermissionDenied.",
            file=sys.stderr,
        )


def lookup(kind: Kind, name: str) -> Registration | None:
    return registrations[kind].get(name)


def listing() -> list[WireRegistration]:
    """Everything registered, as the load reply tells the host."""
    return [{"name": name, "kind": kind} for kind in KINDS for name in sorted(registrations[kind])]


def check_caller(registration: Registration) -> None:
    """The one place a caller is checked against ``require_user``, for every call
    (browser, HTTP, nested ``server.call``).

    There is no users service yet, so no caller is ever logged in: a function that
    requires a user (``True``, or a callable deciding on the user) refuses every call
    rather than run for anonymous callers. A users service changes only this function.
    """
    if not registration.require_user:
        return
    raise errors.PermissionDenied(
        f"You must be logged in to call server function {registration.name!r}, and this server has no users "
        "service yet: functions registered with require_user refuse every call"
    )


def _unwrapped(function: Callable[..., Any]) -> Any:
    return getattr(function, "__wrapped__", function)


def _qualname(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


# -- schedules (``@server.scheduled``) -------------------------------------------------------
#: the misfire policies a schedule may name (the host's scheduler applies them)
MISFIRE_POLICIES = ("skip", "run_once")
#: the server cell running now, while the runtime loads the server cells (else None)
loading_cell: int | None = None


@dataclass
class ScheduleEntry:
    """One use of ``@server.scheduled``, as the cell ran it. The task it launches is found
    by the function's identity once every cell has run, so the decorator may sit above or
    below ``@server.background_task``."""

    target: Any  # what was decorated (a function, if used right)
    name: str | None  # the explicit ``name=``
    spec: str | dict[str, Any] | None
    tz: str
    misfire: str
    args: list[EncodedValue]
    kwargs: dict[str, EncodedValue]
    cell: int | None
    problem: str | None = None


#: every use of ``@server.scheduled``, in the order the cells ran them
schedules: list[ScheduleEntry] = []

_SCHEDULE_EXAMPLE = '@server.scheduled("every day at 09:00")'


def schedule(
    target: Any,
    spec: Any,
    *,
    tz: Any = "UTC",
    misfire: Any = "run_once",
    args: Any = (),
    kwargs: Any = None,
    name: Any = None,
) -> ScheduleEntry:
    """Record one ``@server.scheduled``: never raises, whatever the author passed. What is
    wrong in its types becomes the entry's ``problem`` (with a valid example); the spec's
    grammar and the zone are checked by the host, in one place."""
    entry = ScheduleEntry(
        target, name if isinstance(name, str) else None, None, "UTC", "run_once", [], {}, loading_cell
    )
    entry.problem = _check_schedule(entry, spec, tz, misfire, args, kwargs, name)
    _add_schedule(entry)
    return entry


def _check_schedule(
    entry: ScheduleEntry, spec: Any, tz: Any, misfire: Any, args: Any, kwargs: Any, name: Any
) -> str | None:
    if spec is entry.target:
        return (
            "@server.scheduled needs a schedule: write it with its spec, "
            f"e.g. {_SCHEDULE_EXAMPLE} above @server.background_task"
        )
    if not callable(entry.target):
        return (
            f"@server.scheduled(...) decorates a background task function, not {_shown(entry.target)}: "
            f"e.g. {_SCHEDULE_EXAMPLE} above @server.background_task"
        )
    if isinstance(spec, str):
        entry.spec = spec
    elif isinstance(spec, Mapping):
        try:  # JSON values only: it is stored, and read by the host
            entry.spec = json.loads(json.dumps(dict(spec), allow_nan=False))
        except (TypeError, ValueError) as e:
            return (
                f"an Anvil time_spec dict holds JSON values only ({e}): "
                "e.g. {'every': 'day', 'n': 1, 'at': {'hour': 9, 'minute': 0}}"
            )
    else:
        return (
            f"a schedule is a phrase or cron expression (str) or an Anvil time_spec dict, not "
            f"{type(spec).__name__} {_shown(spec)}: e.g. {_SCHEDULE_EXAMPLE} or "
            '@server.scheduled("0 9 * * mon-fri")'
        )
    if not isinstance(tz, str):
        return (
            f"tz is an IANA time zone name (str), not {type(tz).__name__} {_shown(tz)}: "
            """e.g. @server.scheduled("every day at 09:00", tz="Europe/Paris")"""
        )
    entry.tz = tz
    if misfire not in MISFIRE_POLICIES:
        return (
            f"misfire is 'skip' or 'run_once', not {_shown(misfire)}: "
            """e.g. @server.scheduled("every day at 09:00", misfire="skip")"""
        )
    entry.misfire = misfire
    if name is not None and (not isinstance(name, str) or not name.strip()):
        return (
            f"name is a non-empty str that tells a task's schedules apart, not {_shown(name)}: "
            """e.g. @server.scheduled("every day at 09:00", name="morning")"""
        )
    if not isinstance(args, (list, tuple)):
        return (
            f"args is a tuple or list of the task's arguments, not {type(args).__name__} {_shown(args)}: "
            """e.g. @server.scheduled("every day at 09:00", args=("daily", 10))"""
        )
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        return (
            f"kwargs is a dict of the task's keyword arguments with str keys, not {_shown(kwargs)}: "
            """e.g. @server.scheduled("every day at 09:00", kwargs={"limit": 10})"""
        )
    try:
        entry.args, entry.kwargs = encode_arguments(list(args), dict(kwargs))
    except errors.SerializationError as e:
        return (
            f"the task's arguments must be portable values (no Media: they are kept with the schedule): {e}: "
            """e.g. @server.scheduled("every day at 09:00", args=("daily", 10))"""
        )
    return None


def encode_arguments(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[EncodedValue], dict[str, EncodedValue]]:
    """A schedule's arguments encoded as a call's are (datetimes, portable classes...
    survive), one ``{"v", "objects"}`` per argument. Raises SerializationError naming the
    argument (``msg['args'][0]``); Media is refused, as a schedule keeps its arguments."""
    encoded = wire.encode({"args": args, "kwargs": kwargs})
    for descriptor in encoded.objects:
        if encoded.media and descriptor.get("type") == ["DataMedia"]:
            raise errors.SerializationError(f"Cannot keep Media at {wire.describe_path(descriptor['path'])}")
    out_args: list[EncodedValue] = [{"v": v, "objects": []} for v in encoded.message["args"]]
    out_kwargs: dict[str, EncodedValue] = {k: {"v": v, "objects": []} for k, v in encoded.message["kwargs"].items()}
    for descriptor in encoded.objects:  # in order: re-rooted under each argument's "v"
        top, key, *rest = descriptor["path"]
        target = out_args[key] if top == "args" else out_kwargs[key]
        target["objects"].append({**descriptor, "path": ["v", *rest]})
    return out_args, out_kwargs


def _add_schedule(entry: ScheduleEntry) -> None:
    # a cell run again (in the notebook being edited) defines a new function of the same
    # name: its schedules replace those of the function it replaces. The same function
    # scheduled twice under one name is a clash, which the host reports.
    qualname = _attribute(entry.target, "__qualname__")
    module = _attribute(entry.target, "__module__")
    if qualname is not None:
        schedules[:] = [
            e
            for e in schedules
            if e.target is entry.target
            or e.name != entry.name
            or _attribute(e.target, "__qualname__") != qualname
            or _attribute(e.target, "__module__") != module
        ]
    schedules.append(entry)


def schedule_listing() -> list[ScheduleDeclaration]:
    """Every ``@server.scheduled`` the cells ran, for the load reply: each names its task,
    found by the function's identity among the background tasks now registered."""
    tasks: dict[int, list[str]] = {}
    for task_name, registration in registrations[BACKGROUND_TASK].items():
        tasks.setdefault(id(registration.function), []).append(task_name)
    listing: list[ScheduleDeclaration] = []
    for entry in schedules:
        problem = entry.problem
        names = tasks.get(id(entry.target), [])
        function_name = _attribute(entry.target, "__name__")
        task = function_name if function_name in names else (names[0] if names else None)
        if problem is None and task is None:
            shown = function_name if function_name is not None else _shown(entry.target)
            example = function_name if function_name is not None and function_name.isidentifier() else "report"
            problem = (
                f"{shown!r} is not a @server.background_task, so no schedule can launch it; stack "
                f"@server.scheduled on a background task, e.g. {_SCHEDULE_EXAMPLE} above "
                f"@server.background_task above def {example}(): ..."
            )
        declaration: ScheduleDeclaration = {
            "name": entry.name if entry.name is not None else task,
            "task": task,
            "spec": entry.spec if problem is None else None,
            "tz": entry.tz,
            "misfire": entry.misfire,
            "args": entry.args if problem is None else [],
            "kwargs": entry.kwargs if problem is None else {},
            "cell": entry.cell,
        }
        if problem is not None:
            declaration["problem"] = problem
        listing.append(declaration)
    return listing


def _attribute(target: Any, name: str) -> str | None:
    """A str attribute of what was decorated, if it has one (whatever its getattr does)."""
    try:
        value = getattr(target, name, None)
    except Exception:  # noqa: BLE001 - an author's object may raise anything
        return None
    return value if isinstance(value, str) else None


def _shown(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - an author's __repr__ may raise: the type says enough
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
