"""The tasks admin API (Jupyter auth): list, one task, its output, its Media, kill (the
live feed: feed.py). States and return values are shown as plain JSON (readable.py), not in
wire form."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from ... import errors
from ...errors import WireError
from ...protocol import TASK_STATUSES, is_finished
from .. import api_types as api
from ..readable import plain_value
from ..store import TaskRecord, TaskSummary
from .admin import AUTH_RESOURCE, AdminHandler
from .base import send_download, services


def summary_json(task: TaskSummary) -> api.TaskSummary:
    """A task's summary as people read it: its state in plain JSON (readable.py)."""
    return {
        "id": task.id,
        "app": task.app,
        "name": task.name,
        "status": task.status,
        "launched": task.launched,
        "started": task.started,
        "ended": task.ended,
        "error": _error(task.error),
        "launched_by": task.launched_by,
        "output_dropped": task.output_dropped,
        "owner": task.owner,
        "schedule_id": task.schedule_id,
        "state": plain_value(task.state),
    }


def _error(error: WireError | None) -> api.TaskError | None:
    # a task's end stores its error's type, message and trace, nothing else (tasks.py)
    return cast("api.TaskError | None", error)


def record_json(record: TaskRecord, base_url: str) -> api.TaskDetail:
    """A whole record as people read it: state and return value in plain JSON, Media in
    the return value as download links, the traceback; the output has a route of its own."""

    def media_url(media_id: str) -> str:
        return f"{base_url}anvil/api/tasks/{record.id}/media/{media_id}"

    return {
        **summary_json(record),
        "traceback": record.traceback,
        "result": plain_value(record.result, media_url),
    }


class TasksHandler(AdminHandler):
    """``GET anvil/api/tasks?app=&status=&name=&limit=50&before=<launched>``: newest
    first; ``next`` is the ``before`` of the following page (null on the last)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = self.get_argument("status", None)
        if status is not None and status not in TASK_STATUSES:
            raise web.HTTPError(400, f"status must be one of {', '.join(TASK_STATUSES)}")
        try:
            limit = max(1, min(int(self.get_argument("limit", "50")), 500))
            before_arg = self.get_argument("before", None)
            before = float(before_arg) if before_arg is not None else None
        except ValueError:
            raise web.HTTPError(400, "limit must be an integer and before a launch time") from None
        records = await services(self).tasks.list(
            app=self.get_argument("app", None), status=status, name=self.get_argument("name", None),
            before=before, limit=limit,
        )  # fmt: skip
        page: api.TaskPage = {
            "tasks": [summary_json(r) for r in records],
            "next": records[-1].launched if len(records) == limit else None,
        }
        self.finish(json.dumps(page, default=str))


class TaskHandler(AdminHandler):
    """``GET anvil/api/tasks/<id>``: the whole record (with traceback and return value)."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        record = await find(self, task_id)
        self.finish(json.dumps(record_json(record, self.base_url), default=str))


class TaskMediaHandler(JupyterHandler):  # type: ignore[misc]
    """``GET anvil/api/tasks/<id>/media/<media_id>``: a Media the task returned, as a
    download with its content type and name. Never shown inline: a task's Media may hold
    what a page's user uploaded, and this is the Jupyter server's own origin."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self, task_id: str, media_id: str) -> None:
        record = await find(self, task_id)
        result: dict[str, Any] = record.result if isinstance(record.result, dict) else {}
        encoded = (result.get("media") or {}).get(media_id)
        descriptor = next(
            (o for o in result.get("objects") or [] if o.get("type") == ["DataMedia"] and str(o.get("id")) == media_id),
            None,
        )
        if not isinstance(encoded, str) or descriptor is None:
            raise web.HTTPError(404, f"task {task_id} returned no Media {media_id}")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise web.HTTPError(404, f"task {task_id} returned no Media {media_id}") from None
        name = str(descriptor.get("name") or f"media-{media_id}")
        send_download(self, data, str(descriptor.get("mime-type") or ""), name)


class TaskOutputHandler(AdminHandler):
    """``GET anvil/api/tasks/<id>/output?offset=N``: printed output from ``offset`` on;
    pass the returned ``offset`` back to tail it."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        try:
            offset = max(0, int(self.get_argument("offset", "0")))
        except ValueError:
            raise web.HTTPError(400, "offset must be an integer") from None
        record = await find(self, task_id)
        output = record.output
        answer: api.TaskOutput = {
            "text": output[offset:],
            "offset": len(output),
            "dropped": record.output_dropped,
            "running": not is_finished(record.status),
        }
        self.finish(dict(answer))


class TaskKillHandler(AdminHandler):
    """``POST anvil/api/tasks/<id>/kill``: the record after the kill: 200 once it is over,
    202 if it still runs (another server runs it and has not acted on the kill yet: it will
    at its next look at the store, or the task goes ``missing`` with that server)."""

    @web.authenticated
    @authorized
    async def post(self, task_id: str) -> None:
        await find(self, task_id)
        record = await services(self).tasks.kill(task_id)
        if not is_finished(record.status):
            self.set_status(202)
        self.finish(json.dumps(summary_json(record), default=str))


async def find(handler: JupyterHandler, task_id: str) -> TaskRecord:
    try:
        return await services(handler).tasks.get(task_id)
    except errors.BackgroundTaskNotFound:
        raise web.HTTPError(404, f"no background task {task_id}") from None
