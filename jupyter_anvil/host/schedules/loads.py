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

Declared schedules have ``records.definition_id`` ids, given by declared.py (a hash of app,
source and name or job id: the same at every load and on every server, distinct across apps,
safe in a URL). Each problem is said once, in declared.py's words: the scheduler's own list of
them would repeat those, so it is not asked for; what only the store can tell (a declared
schedule it did not keep, or a problem declared.py let through) is read from the records
``sync_app`` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .declared import Declared, definitions_for
from .records import ScheduleRecord
from .service import Scheduler

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
        try:
            declared = definitions_for(app, pool.schedules, spec.scheduled_tasks, tasks)
        except Exception as e:  # a fault of ours reading them: the app is served all the same
            log.exception("[jupyter-anvil] could not read the schedules app %s declares", app)
            return [f"its schedules could not be read ({type(e).__name__}: {e}): they stay as the last load left them"]
        try:
            records = await self.scheduler.sync_app(app, [*declared.runnable, *declared.broken], background_tasks=tasks)
        except Exception as e:
            log.exception("[jupyter-anvil] could not update the schedules of app %s", app)
            return [
                *declared.problems,
                f"its schedules could not be updated ({type(e).__name__}: {e}): they stay as the last load left them",
            ]
        return declared.problems + _not_kept(declared, records)

    def unserved(self, app: str) -> None:
        self.scheduler.remove_app(app)


def _not_kept(declared: Declared, records: Iterable[ScheduleRecord]) -> list[str]:
    """What the store tells of the declared schedules that declared.py could not: one not
    kept (a row of another app, or of the API, has its id), or a runnable one stored with
    a problem (a check of the scheduler's that declared.py lacks). A broken one's problem
    is its spec's or zone's, which declared.py said."""
    stored = {r.id: r for r in records if r.source != "api"}
    problems: list[str] = []
    for definition, runnable in [(d, True) for d in declared.runnable] + [(d, False) for d in declared.broken]:
        record, where = stored.get(definition.id), declared.where[definition.id]
        if record is None:
            problems.append(f"{where}: its id {definition.id} is another schedule's; it was not kept")
        elif runnable and record.problem is not None:
            problems.append(f"{where}: {record.problem}")
    return problems
