"""The schedules admin API (Jupyter auth, like the tasks'): list, make, change, pause,
delete, run now, and page through a schedule's runs. Thin: parse strictly, call one
Scheduler method, answer its record in the shape api_types.py declares.

Bodies are JSON objects of at most ``MAX_BODY_BYTES``, read as they stream in (never
buffered past the bound), parsed by the strict loader the call routes use; a field the
route does not take is refused by name. Refusals are 400 with what was wrong (413 for a
body too big), 404 for an unknown schedule, 409 when other servers kept changing it.
A schedule's arguments are plain JSON here; the scheduler keeps them as encoded values
(schedules/launcher.py), shown back as plain JSON.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import api_types as api
from ..schedules.launcher import encoded_arguments, plain_arguments
from ..schedules.records import (
    ScheduleEvent,
    ScheduleInvalid,
    ScheduleNotFound,
    ScheduleRecord,
    ScheduleRun,
)
from .admin import AdminHandler, JsonBodyHandler
from .base import services

T = TypeVar("T")

#: the fields ``POST anvil/api/schedules`` takes, the first three required
CREATE_FIELDS = ("app", "task", "spec", "tz", "args", "kwargs", "misfire", "name")
CREATE_REQUIRED = ("app", "task", "spec")
#: the fields ``PATCH anvil/api/schedules/<id>`` takes, at least one of them
PATCH_FIELDS = ("spec", "tz", "paused", "misfire")
CREATE_EXAMPLE = '{"app": "shop", "task": "nightly_report", "spec": "every day at 09:00", "tz": "Europe/Paris"}'
RUNS_LIMIT = 50


def schedule_json(record: ScheduleRecord) -> api.ScheduleInfo:
    """A schedule as the admin API shows it: its arguments in plain JSON (readable.py)."""
    args, kwargs = plain_arguments(record.args, record.kwargs)
    return {
        "id": record.id, "app": record.app, "task": record.task, "name": record.name, "spec": record.spec,
        "description": record.description, "tz": record.tz, "misfire": record.misfire, "args": args,
        "kwargs": kwargs, "source": record.source, "paused": record.paused, "next_run": record.next_run,
        "last_run": record.last_run, "last_status": record.last_status, "last_task_id": record.last_task_id,
        "problem": record.problem, "created": record.created, "updated": record.updated,
        "app_loaded": record.app_loaded,
    }  # fmt: skip


def run_json(run: ScheduleRun) -> api.ScheduleRunInfo:
    return {
        "seq": run.seq, "schedule_id": run.schedule_id, "app": run.app, "due": run.due, "at": run.at,
        "task_id": run.task_id, "outcome": run.outcome, "reason": run.reason, "server": run.server,
    }  # fmt: skip


def event_json(event: ScheduleEvent) -> api.ScheduleEvent:
    """A scheduler event as the live feed (``anvil/api/tasks/feed``) carries it."""
    return {
        "type": "schedule",
        "event": event.kind,
        "id": event.schedule_id,
        "app": event.app,
        "schedule": schedule_json(event.schedule) if event.schedule is not None else None,
        "run": run_json(event.run) if event.run is not None else None,
    }


async def answer(work: Awaitable[T]) -> T:
    """What a Scheduler method returns, its refusals as the HTTP errors of this API."""
    try:
        return await work
    except ScheduleNotFound as e:
        raise web.HTTPError(404, str(e)) from None
    except ScheduleInvalid as e:  # ScheduleNotEditable too
        raise web.HTTPError(400, str(e)) from None
    except RuntimeError as e:  # a change other servers kept overtaking: try again
        raise web.HTTPError(409, str(e)) from None


def _listed(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def json_type(value: Any) -> str:
    """What JSON calls a value's type (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def check_fields(body: Any, allowed: tuple[str, ...], required: tuple[str, ...], what: str) -> dict[str, Any]:
    """``body`` as a JSON object of ``allowed`` fields with every ``required`` one; else a 400
    naming what is unknown or missing."""
    if not isinstance(body, dict):
        shown = "an empty body" if body is None else json_type(body)
        raise web.HTTPError(400, f"{what} is a JSON object of {_listed(allowed)}, not {shown}")
    unknown = [key for key in body if key not in allowed]
    if unknown:
        raise web.HTTPError(400, f"{what} has unknown fields {_listed(unknown)}: it takes {_listed(allowed)}")
    missing = [key for key in required if key not in body]
    if missing:
        raise web.HTTPError(400, f"{what} needs {_listed(missing)}")
    return body


def _int_argument(handler: web.RequestHandler, name: str) -> int | None:
    text = handler.get_argument(name, None)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPError(400, f"{name} must be a whole number, not {text[:40]!r}") from None
    if not 0 <= value < 2**63:  # what the database can compare with
        raise web.HTTPError(400, f"{name} must be a whole number from 0, not {text[:40]!r}")
    return value


class _BodyHandler(JsonBodyHandler):
    body_name = "a schedules request"


class SchedulesHandler(_BodyHandler):
    """``GET anvil/api/schedules?app=``: every schedule (of ``app``), by app and name.
    ``POST anvil/api/schedules`` ``{app, task, spec[, tz, args, kwargs, misfire, name]}``:
    a schedule made at run time (source ``api``) of an app served here: 201 and its record."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        records = await answer(services(self).schedules.list(self.get_argument("app", None)))
        listing: api.ScheduleList = {"schedules": [schedule_json(r) for r in records]}
        self.finish(json.dumps(listing))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        what = "a new schedule"
        body = check_fields(self.json_body(None), CREATE_FIELDS, CREATE_REQUIRED, f"{what} (e.g. {CREATE_EXAMPLE})")
        app = body["app"]
        if not isinstance(app, str):
            raise web.HTTPError(400, f"app must be the name of an app (a string), not {json_type(app)}")
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        if not isinstance(args, list):
            raise web.HTTPError(400, f'args must be an array of JSON values (e.g. [1, "a"]), not {json_type(args)}')
        if not isinstance(kwargs, dict):
            raise web.HTTPError(400, f'kwargs must be an object (e.g. {{"n": 1}}), not {json_type(kwargs)}')
        for field in ("tz", "misfire"):
            if field in body and body[field] is None:
                raise web.HTTPError(400, f"{field} cannot be null: leave it out for the default")
        try:
            encoded_args, encoded_kwargs = encoded_arguments(args, kwargs)
        except ScheduleInvalid as e:
            raise web.HTTPError(400, str(e)) from None
        record = await answer(
            services(self).schedules.create(
                app, body["task"], body["spec"], body.get("tz", "UTC"), encoded_args, encoded_kwargs,
                body.get("misfire", "run_once"), name=body.get("name"),
            )
        )  # fmt: skip
        self.set_status(201)
        self.finish(json.dumps(schedule_json(record)))


class ScheduleHandler(_BodyHandler):
    """``GET anvil/api/schedules/<id>``: its record. ``PATCH`` ``{spec, tz, paused,
    misfire}`` (any of them; a notebook's schedule only ``paused``): the record after.
    ``DELETE``: an API-made schedule and its history, 204 (a notebook's: pause it instead)."""

    @web.authenticated
    @authorized
    async def get(self, schedule_id: str) -> None:
        record = await answer(services(self).schedules.get(schedule_id))
        self.finish(json.dumps(schedule_json(record)))

    @web.authenticated
    @authorized
    async def patch(self, schedule_id: str) -> None:
        body = check_fields(self.json_body({}), PATCH_FIELDS, (), "a schedule's change")
        if not body:
            raise web.HTTPError(400, f"a schedule's change names at least one of {_listed(PATCH_FIELDS)}")
        for field, value in body.items():
            if value is None:
                raise web.HTTPError(400, f"{field} cannot be null")
        if "tz" in body and not isinstance(body["tz"], str):
            raise web.HTTPError(400, f"tz must be an IANA zone name such as 'Europe/Paris', not {body['tz']!r}")
        if "spec" in body and not isinstance(body["spec"], (str, dict)):
            raise web.HTTPError(
                400, f"spec must be a string (e.g. 'every day at 09:00') or a time_spec object, not {body['spec']!r}"
            )
        record = await answer(services(self).schedules.update(schedule_id, **body))
        self.finish(json.dumps(schedule_json(record)))

    @web.authenticated
    @authorized
    async def delete(self, schedule_id: str) -> None:
        await answer(services(self).schedules.delete(schedule_id))
        self.set_status(204)
        self.finish()


class ScheduleRunHandler(_BodyHandler):
    """``POST anvil/api/schedules/<id>/run`` (no body, or ``{}``): launch its task now,
    paused or not; the run recorded (``skipped`` while its last run still runs)."""

    @web.authenticated
    @authorized
    async def post(self, schedule_id: str) -> None:
        check_fields(self.json_body({}), (), (), "a run-now request")
        run = await answer(services(self).schedules.run_now(schedule_id))
        self.finish(json.dumps(run_json(run)))


class ScheduleRunsHandler(AdminHandler):
    """``GET anvil/api/schedules/<id>/runs?limit=50&before=<seq>``: its runs, newest first;
    ``next`` is the ``before`` of the following page (null on the last)."""

    @web.authenticated
    @authorized
    async def get(self, schedule_id: str) -> None:
        limit = _int_argument(self, "limit")
        limit = RUNS_LIMIT if limit is None else limit
        before = _int_argument(self, "before")
        runs = await answer(services(self).schedules.runs(schedule_id, limit, before))
        page: api.ScheduleRunPage = {
            "runs": [run_json(r) for r in runs],
            "next": runs[-1].seq if runs and len(runs) == limit else None,
        }
        self.finish(json.dumps(page))
