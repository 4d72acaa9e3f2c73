"""What an app's loads do to its schedules: the app manager (apps.py) calls ``served`` each
time a version of an app is served (its first load, each save's reload) and ``unserved``
when no version is (its notebook removed or broken).

* ``served`` makes the app's stored schedules what that version declares: its server
  cells' ``@server.scheduled`` and its notebook's ``scheduled_tasks`` metadata, checked by
  declared.py, synced by ``Scheduler.sync_app`` (added, changed, removed; a changed spec
  recomputes the next run). Its API-made schedules are checked against its background
  tasks. It returns the problems, listed with the app (``anvil/api/apps``) and written to
  its log. From then on this server fires the app's schedules.
* A declared schedule whose spec or zone does not parse stays stored, with its problem: it
  does not run, but keeps its history and paused flag, and is listed with what is wrong
  until a save fixes it. One that is gone from the notebook (or no longer names a
  background task) is removed, history and all.
* ``unserved``: this server stops firing them (``Scheduler.remove_app``). Their rows stay,
  with their history and paused flags; a run that came due meanwhile follows its misfire
  policy when the app is served again. An app whose load fails is never served, so its
  schedules do not fire (nothing is recorded for them) until a version loads; a failed
  reload leaves the version before serving, and its schedules running.

Declared schedules get ``records.definition_id`` ids (a hash of app, source and name or job
id: the same at every load and on every server, distinct across apps, safe in a URL).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from .declared import NAME_LENGTH, definitions_for
from .records import MISFIRE_POLICIES, ScheduleDefinition, definition_id
from .service import Scheduler
from .spec import ScheduleSpecError, parse_spec

if TYPE_CHECKING:
    from ..notebooks import AppSpec
    from ..pool import KernelPool

log = logging.getLogger(__name__)


class AppSchedules:
    """The scheduler's side of app loads (see the module's docstring)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def served(self, app: str, spec: AppSpec, pool: KernelPool) -> list[str]:
        """Sync the app's schedules with the version ``pool`` serves; the problems with them.
        Never raises: a store that fails is one more problem (and logged)."""
        tasks = pool.background_tasks
        declared, problems = definitions_for(app, pool.schedules, spec.scheduled_tasks, tasks)
        definitions = [dataclasses.replace(d, id=definition_id(app, d.source, d.name)) for d in declared]
        unparsed = unparsed_definitions(app, pool.schedules, spec.scheduled_tasks, tasks, definitions)
        # declared.py said what is wrong with these, with where: the scheduler's words are not repeated
        said = tuple(f"schedule '{d.name}' ({d.task}): " for d in unparsed)
        found: list[str] = []
        try:
            await self.scheduler.sync_app(app, [*definitions, *unparsed], found, background_tasks=tasks)
        except Exception as e:
            log.exception("[jupyter-anvil] could not update the schedules of app %s", app)
            found.append(
                f"its schedules could not be updated ({type(e).__name__}: {e}): they stay as the last load left them"
            )
        return problems + [p for p in found if not p.startswith(said)]

    def unserved(self, app: str) -> None:
        self.scheduler.remove_app(app)


def unparsed_definitions(
    app: str,
    declarations: Iterable[Any],
    entries: object,
    tasks: Collection[str],
    kept: Iterable[ScheduleDefinition],
) -> list[ScheduleDefinition]:
    """The declared schedules that are whole but for a spec or zone that does not parse, as
    definitions (``sync_app`` stores them with that problem); declared.py left them out of
    ``kept``, the ones that can run. Anything else wrong leaves a declaration out: it has
    no schedule (its problem is declared.py's to tell)."""
    ids = {d.id for d in kept}
    found: dict[str, ScheduleDefinition] = {}

    def add(definition: ScheduleDefinition) -> None:
        if definition.id in ids or definition.id in found:
            return
        try:
            parse_spec(definition.spec, definition.tz, seed=definition.id)
        except ScheduleSpecError:
            found[definition.id] = definition

    for declaration in declarations:
        if not isinstance(declaration, Mapping) or "problem" in declaration:
            continue
        task, name = declaration.get("task"), declaration.get("name")
        name = task if name is None else name
        spec, tz = declaration.get("spec"), declaration.get("tz", "UTC")
        misfire = declaration.get("misfire", "run_once")
        args, kwargs = declaration.get("args", []), declaration.get("kwargs", {})
        if (
            _named(task) and task in tasks and _named(name) and isinstance(spec, (str, dict)) and isinstance(tz, str)
            and misfire in MISFIRE_POLICIES and isinstance(args, list) and isinstance(kwargs, dict)
        ):  # fmt: skip
            add(
                ScheduleDefinition(
                    definition_id(app, "notebook", name), app, task, name, spec, tz, misfire, args, kwargs, "notebook"
                )
            )
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        task, job_id, spec = entry.get("task_name"), entry.get("job_id"), entry.get("time_spec")
        if _named(task) and task in tasks and _named(job_id) and isinstance(spec, (str, dict)):
            add(ScheduleDefinition(definition_id(app, "metadata", job_id), app, task, job_id, spec, source="metadata"))
    return list(found.values())


def _named(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= NAME_LENGTH
