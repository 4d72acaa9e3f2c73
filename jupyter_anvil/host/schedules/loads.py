"""What an app's loads do to its schedules: the app manager (apps.py) calls ``served`` each
time a version of an app is served (its first load, each save's reload) and ``unserved``
when no version is (its notebook removed or broken).

* ``served`` makes the app's stored schedules what that version declares
  (``Scheduler.sync_app``), checks its API-made schedules against its background tasks,
  and returns the problems to list with the app's load problems. From then on this server
  fires the app's schedules.
* ``unserved``: this server stops firing them (``Scheduler.remove_app``). Their rows stay,
  with their history and paused flags; a run that came due meanwhile follows its misfire
  policy when the app is served again. An app whose load fails is never served, so its
  schedules do not fire (nothing is recorded for them) until a version loads.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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
        problems: list[str] = []
        try:
            await self.scheduler.sync_app(app, [], problems, background_tasks=pool.background_tasks)
        except Exception as e:
            log.exception("[jupyter-anvil] could not update the schedules of app %s", app)
            problems.append(
                f"its schedules could not be updated ({type(e).__name__}: {e}): they stay as the last load left them"
            )
        return problems

    def unserved(self, app: str) -> None:
        self.scheduler.remove_app(app)
