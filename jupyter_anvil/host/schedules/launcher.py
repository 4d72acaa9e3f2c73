"""A schedule's runs launched as background tasks: the scheduler's ``Launcher`` over the
task service, and the form a schedule's arguments are kept in.

Arguments are kept as encoded values, each ``{"v": json, "objects": [...]}`` (as
``wire.encode_value`` makes them, and as a server cell's ``@server.scheduled(args=...)``
reaches the host), so a datetime or a portable class instance keeps its type. The host
never decodes them (it may not know their classes): a run's call message is built from
them with ``wire.embed``, and the kernel decodes them next to the classes they name. The
admin API takes and shows plain JSON (``encoded_arguments``, ``plain_arguments``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ... import errors, wire
from ...protocol import BACKGROUND_TASK, UNFINISHED_TASK_STATUSES, log_name
from ..logs import AppLog
from ..messages import CallRequest, scheduled_context
from ..readable import plain_value
from ..tasks import TaskService
from .records import ScheduleInvalid


class LaunchFailed(Exception):
    """A run's task could not be launched; the message says why (the run is recorded
    ``failed`` with it)."""


def is_encoded(value: object) -> bool:
    """Whether ``value`` is an encoded value: ``{"v": json, "objects": [descriptor, ...]}``."""
    return (
        isinstance(value, dict)
        and "v" in value
        and set(value) <= {"v", "objects"}
        and isinstance(value.get("objects", []), list)
        and all(isinstance(d, dict) for d in value.get("objects", []))
    )


def encoded_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Plain JSON arguments (the admin API's) in the form a schedule keeps them;
    ScheduleInvalid if they are not JSON values."""
    try:
        return (
            [wire.encode_value(v, "a schedule's arguments") for v in args],
            {k: wire.encode_value(v, "a schedule's arguments") for k, v in kwargs.items()},
        )
    except (errors.SerializationError, TypeError, ValueError) as e:
        raise ScheduleInvalid(f"args and kwargs must be JSON values: {e}") from None


def plain_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A schedule's kept arguments as people read them (readable.py): a datetime as its
    ISO text, a portable class instance as its data with ``__type__``..."""
    return [plain_value(v) for v in args], {k: plain_value(v) for k, v in kwargs.items()}


def call_arguments(
    args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any], list[dict[str, Any]]]:
    """A run's ``args``, ``kwargs`` and ``objects``, as a call message carries them, built
    from the kept encoded values without decoding them; LaunchFailed for a value that is
    not one (a schedule's row edited by hand)."""
    message: dict[str, Any] = {"args": [None] * len(args), "kwargs": {}}
    objects: list[dict[str, Any]] = []
    places: list[tuple[list[Any], Any]] = [(["args", i], v) for i, v in enumerate(args)]
    places += [(["kwargs", k], v) for k, v in kwargs.items()]
    for path, value in places:
        if not is_encoded(value):
            where = f"argument {path[1]}" if path[0] == "args" else f"keyword argument {path[1]!r}"
            raise LaunchFailed(f"the schedule's {where} is not kept as an encoded value ({{'v': ..., 'objects': []}})")
        if path[0] == "kwargs":
            message["kwargs"][path[1]] = None
        wire.embed(message, objects, path, value)
    return message["args"], message["kwargs"], objects


class TaskLauncher:
    """Launches a schedule's task as a normal background task of its app: its record
    names the schedule (``schedule_id``), its ``launched_by`` and its
    ``server.context.call_stack`` start with the schedule's ``scheduled_task`` frame.

    A launch that fails (the app not served here, the task not one of its background
    tasks, the server stopping) raises LaunchFailed with the reason, and the reason is
    written to the app log, as Anvil logs a scheduled task that cannot launch."""

    def __init__(self, tasks: TaskService, app_log: AppLog) -> None:
        self.tasks = tasks
        self.app_log = app_log

    async def launch(self, app: str, task: str, args: list[Any], kwargs: dict[str, Any], schedule_id: str) -> str:
        try:
            call_args, call_kwargs, objects = call_arguments(args, kwargs)
            request = CallRequest(command=task, args=call_args, kwargs=call_kwargs, objects=objects, from_client=False)
            launched_by = scheduled_context(schedule_id)
            record = await self.tasks.launch(app, task, request, launched_by, schedule_id=schedule_id)
        except (errors.AnvilError, LaunchFailed) as e:
            reason = f"could not launch background task '{task}': {e}"
            self.app_log.write(
                app, log_name(BACKGROUND_TASK, task), "", "system", f"scheduled run (schedule {schedule_id}): {reason}"
            )
            raise LaunchFailed(reason) from None
        return record.id

    async def is_running(self, task_id: str) -> bool:
        """Whether the task is queued or running (here, or on another server sharing the store)."""
        live = self.tasks.live.get(task_id)
        if live is not None:
            return live.record.status in UNFINISHED_TASK_STATUSES
        record = await self.tasks.store.get(task_id)
        return record is not None and record.status in UNFINISHED_TASK_STATUSES
