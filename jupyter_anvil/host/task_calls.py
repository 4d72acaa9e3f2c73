"""The reserved functions behind ``server.launch_background_task`` and the ``Task``
methods, answered by the host itself: entries of its host services table
(:mod:`.host_services`).

Server code may use them all; a browser may only read a task whose id it was given (a
``Task`` a server function returned): it cannot launch, list, look up or kill tasks.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from .. import errors, wire
from ..protocol import BACKGROUND_TASKS_PREFIX, TASK_TYPE, TaskRecordReply
from .host_services import HostCall, HostService, browser_readable, server_only
from .messages import CallReply, CallRequest
from .store import TaskRecord, TaskSummary
from .tasks import TaskService

LAUNCH, GET, LIST, RECORD, KILL = (f"{BACKGROUND_TASKS_PREFIX}{n}" for n in ("launch", "get", "list", "record", "kill"))
MANAGE_REFUSED = "Can't manage background tasks from the client"


def host_services(tasks: TaskService) -> list[HostService]:
    """The five background task functions, as entries of the host services table."""

    async def launch(call: HostCall) -> CallReply:
        return await _launch(tasks, call.app, call.request, call.caller_context)

    async def get(call: HostCall) -> CallReply:
        _, record = await _own_record(tasks, call.app, call.request)
        return task_values(record)

    async def list_tasks(call: HostCall) -> CallReply:
        return task_values(await tasks.list(app=call.app, limit=10000))

    async def record(call: HostCall) -> CallReply:
        _, record = await _own_record(tasks, call.app, call.request)
        return record_reply(record)

    async def kill(call: HostCall) -> CallReply:
        task_id, _ = await _own_record(tasks, call.app, call.request)
        await tasks.kill(task_id)
        return CallReply(response=None)

    refused = errors.BackgroundTaskError
    return [
        server_only(LAUNCH, launch, refused, "Can't launch background tasks from the client."),
        server_only(GET, get, refused, MANAGE_REFUSED),
        server_only(LIST, list_tasks, refused, MANAGE_REFUSED),
        server_only(KILL, kill, refused, "Can't kill background tasks from the client"),
        # a browser may read a task whose id it was given (a Task a server function returned)
        browser_readable(RECORD, record),
    ]


async def _own_record(tasks: TaskService, app: str, request: CallRequest) -> tuple[str, TaskRecord]:
    """The id and record of the task the call names (its first argument), if it is the app's."""
    args = request.args if isinstance(request.args, list) else []
    task_id = args[0] if args else None
    if not isinstance(task_id, str):
        raise errors.BackgroundTaskNotFound(f"Background Task not found: {task_id}")
    record = await tasks.get(task_id)
    if record.app != app:
        raise errors.BackgroundTaskNotFound(f"Background Task not found: {task_id}")
    return task_id, record


async def _launch(tasks: TaskService, app: str, request: CallRequest, launched_by: dict[str, Any]) -> CallReply:
    args = request.args if isinstance(request.args, list) else []
    name = args[0] if args else None
    if not isinstance(name, str):
        raise errors.BackgroundTaskError("launch_background_task() needs the name of a background task")
    # the task's arguments are the launch's, less the name: shift their descriptors
    objects = []
    for descriptor in request.objects:
        path = list(descriptor.get("path") or [])
        if path[:1] == ["args"] and len(path) > 1 and isinstance(path[1], int):
            path[1] -= 1
        objects.append({**descriptor, "path": path})
    task_request = CallRequest(command="", args=args[1:], kwargs=request.kwargs, objects=objects, media=request.media)
    record = await tasks.launch(app, name, task_request, launched_by)
    return task_values(record)


def task_values(records: TaskSummary | list[TaskSummary]) -> CallReply:
    """A ``Task`` (or a list of them), as the portable value server code and browsers know."""
    many = isinstance(records, list)
    items = records if isinstance(records, list) else [records]
    objects = [
        {"type": ["ValueType"], "path": ["response", i] if many else ["response"], "typeName": TASK_TYPE}
        for i in range(len(items))
    ]
    values = [{"id": r.id, "name": r.name} for r in items]
    return CallReply(response=values if many else values[0], objects=objects)


def record_reply(record: TaskRecord) -> CallReply:
    """What a ``Task`` needs to answer any of its methods, in one reply."""

    def when(stamp: float | None) -> dt.datetime | None:
        return dt.datetime.fromtimestamp(stamp, dt.timezone.utc) if stamp else None

    response: TaskRecordReply = {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "launched": when(record.launched),
        "started": when(record.started),
        "ended": when(record.ended),
        "error": record.error,
        "state": None,
        "result": None,
    }
    plain = wire.encode({"response": response})
    objects = plain.objects
    wire.embed(plain.message, objects, ["response", "state"], record.state)
    result = record.result
    wire.embed(plain.message, objects, ["response", "result"], result)
    media = {k: base64.b64decode(v) for k, v in (result or {}).get("media", {}).items()}
    return CallReply(response=plain.message["response"], objects=objects, media=media)
