"""The scheduler: each app's schedules kept in the store, the admin API's operations on
them, and the loop that fires them (firing.py).

A server fires only the schedules of the apps it has loaded (``sync_app``). The rows of an
app that goes away (``remove_app``) are kept, with their history and paused flags, for
when it comes back; until then a server without the app does not fire them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

from .checks import api_fields, check_definition, task_problem
from .firing import Clock, FiringLoop, Launcher, Spec, SpecParser, SystemClock
from .records import (
    DECLARED_SOURCES,
    MAX_ID_LENGTH,
    MISFIRE_POLICIES,
    MisfirePolicy,
    RunOutcome,
    ScheduleDefinition,
    ScheduleError,
    ScheduleEvent,
    ScheduleInvalid,
    ScheduleNotEditable,
    ScheduleNotFound,
    ScheduleRecord,
    ScheduleRun,
    ScheduleSource,
    SpecText,
    new_schedule_id,
)
from .store import Delete, Insert, ScheduleRow, Update, Write, spec_json

__all__ = [
    "Clock",
    "Launcher",
    "MisfirePolicy",
    "RunOutcome",
    "ScheduleDefinition",
    "ScheduleError",
    "ScheduleEvent",
    "ScheduleInvalid",
    "ScheduleNotEditable",
    "ScheduleNotFound",
    "ScheduleRecord",
    "ScheduleRun",
    "ScheduleSource",
    "Scheduler",
    "Spec",
    "SpecParser",
    "SystemClock",
]

#: how many times a change is recomputed while other servers keep changing the same rows
ATTEMPTS = 5


class Scheduler(FiringLoop):
    """Keeps each app's schedules and fires them (see the module's and firing.py's docstrings).

    ``store``: the Store (or a ScheduleStore over it); ``launcher``: launches a run's task;
    ``clock``: the time (tests drive it); ``parse_spec``: spec.parse_spec unless given;
    ``refresh_seconds``: how often the store is read for other servers' changes;
    ``grace_seconds``: how far back a missed run may be for ``run_once`` to run it;
    ``misfire_after``: how late a run may fire before it counts as missed;
    ``history_limit``: the runs kept per schedule; ``on_event``: told of every change and
    run (the live feed); ``server_id``: this server's instance id, kept with each run.
    """

    async def get(self, schedule_id: str) -> ScheduleRecord:
        row = await self.store.get(schedule_id) if isinstance(schedule_id, str) else None
        if row is None:
            raise ScheduleNotFound(f"no schedule has the id {schedule_id!r}")
        return self._record_of(row)

    async def runs(self, schedule_id: str, limit: int = 50, before: int | None = None) -> list[ScheduleRun]:
        """The schedule's runs, newest first; ``before`` (a run's ``seq``) pages back."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ScheduleInvalid(f"limit must be a whole number from 1 to 1000, not {limit!r}")
        if before is not None and (not isinstance(before, int) or isinstance(before, bool)):
            raise ScheduleInvalid(f"before must be a run's seq (a whole number), not {before!r}")
        await self.get(schedule_id)
        return await self.store.runs(schedule_id, limit, before)

    # -- an app's declared schedules ----------------------------------------------------------------
    async def sync_app(
        self,
        app: str,
        definitions: Sequence[ScheduleDefinition],
        problems: list[str] | None = None,
        *,
        background_tasks: Collection[str] | None = None,
    ) -> list[ScheduleRecord]:
        """Make the app's stored schedules what its load declared, and fire them from now on.

        Call it at every load and reload. Declared schedules (sources ``notebook`` and
        ``metadata``) are added, changed or removed; the API's are kept. A changed spec or
        zone recomputes the next run; otherwise next run, last run and paused flag stay.
        A definition that cannot run (a spec or zone that does not parse, a bad misfire or
        argument, a task not among ``background_tasks`` when given) is stored with its
        ``problem`` and never fires; each problem is also appended to ``problems`` (the
        app's load problems). The API's schedules of a task that is gone get a problem too.
        Returns the app's schedules."""
        tasks = frozenset(background_tasks) if background_tasks is not None else None
        checked: dict[str, tuple[ScheduleDefinition, dict[str, Any], Spec | None]] = {}
        for definition in definitions:
            if definition.app != app or definition.source not in DECLARED_SOURCES:
                raise ValueError(f"a definition of app {app!r} must be of it, from the notebook or metadata")
            if not isinstance(definition.id, str) or not 0 < len(definition.id) <= MAX_ID_LENGTH:
                raise ValueError(f"a schedule id is 1 to {MAX_ID_LENGTH} characters, not {definition.id!r}")
            values, problem_list = check_definition(definition, tasks)
            spec, spec_problem = self._parse(definition.id, definition.spec, values["tz"])
            if spec_problem is not None:
                problem_list.insert(0, spec_problem)
            if definition.id in checked:
                if problems is not None:
                    problems.append(
                        f"schedule '{definition.name}' ({definition.task}): two schedules of this app have the id"
                        f" {definition.id} (the same name): give each its own name"
                    )
                continue
            values["problem"] = "; ".join(problem_list) or None
            checked[definition.id] = (definition, values, spec if not problem_list else None)
        for _attempt in range(ATTEMPTS):
            now = self.clock.now()
            existing = {row.id: row for row in await self.store.rows(app)}
            taken = {row.id: row for row in await self.store.find([i for i in checked if i not in existing])}
            taken.update((i, row) for i, row in existing.items() if i in checked and row.source == "api")
            writes = self._plan_sync(app, checked, existing, taken, tasks, now)
            if await self.store.apply(writes, now):
                break
        else:
            raise RuntimeError(f"the schedules of app {app!r} kept changing while they were synced")
        self._apps[app] = tasks
        for write in writes:
            if isinstance(write, Delete):
                self._known.pop(write.schedule_id, None)
                self._emit(ScheduleEvent("deleted", write.schedule_id, app))
        written = {w.row.id if isinstance(w, Insert) else w.schedule_id for w in writes}
        rows = await self.store.rows(app) if writes else sorted(existing.values(), key=_listed_order)
        for row in rows:
            if self._remember(row) and row.id in written:
                self._emit_changed(row)
        self._wake_up()
        if problems is not None:
            for sid, (definition, values, _) in checked.items():
                where = f"schedule '{definition.name}' ({definition.task})"
                if sid in taken:
                    problems.append(f"{where}: its id {sid} is another schedule's; it was not kept")
                elif values["problem"] is not None:
                    problems.append(f"{where}: {values['problem']}")
        return [self._record_of(row) for row in rows]

    def _plan_sync(
        self,
        app: str,
        checked: Mapping[str, tuple[ScheduleDefinition, dict[str, Any], Spec | None]],
        existing: Mapping[str, ScheduleRow],
        taken: Mapping[str, ScheduleRow],
        tasks: frozenset[str] | None,
        now: float,
    ) -> list[Write]:
        writes: list[Write] = []
        for sid, (definition, values, spec) in checked.items():
            if sid in taken:
                continue  # another app's, or the API's: reported, not stored
            old = existing.get(sid)
            if old is None:
                next_run = self._next(spec, now) if spec is not None else None
                row = ScheduleRow(
                    id=sid, app=app, source=definition.source, paused=False, next_run=next_run, last_run=None,
                    last_status=None, last_task_id=None, created=now, updated=now, version=1, **values,
                )  # fmt: skip
                writes.append(Insert(row))
                continue
            writes.extend(self._changes(old, values, spec, now))
        for old in existing.values():
            if old.source in DECLARED_SOURCES and old.id not in checked:
                writes.append(Delete(old.id, old.version))
            elif old.source == "api" and tasks is not None:
                spec, problem = self._parse(old.id, old.spec, old.tz)
                if problem is None and old.task not in tasks:
                    problem = task_problem(old.task, tasks)
                writes.extend(self._changes(old, {"problem": problem}, spec, now))
        return writes

    def _changes(self, old: ScheduleRow, values: Mapping[str, Any], spec: Spec | None, now: float) -> list[Write]:
        """The update that gives ``old`` these values (fields of the row). The next run is
        None while the schedule cannot run (paused, a problem); recomputed from now if its
        spec or zone changed or it can run again (resumed, a problem gone); else kept."""
        changed = {k: v for k, v in values.items() if k != "spec" and getattr(old, k) != v}
        if "spec" in values and spec_json(values["spec"]) != spec_json(old.spec):
            changed["spec"] = values["spec"]
        problem = values.get("problem", old.problem)
        paused = values.get("paused", old.paused)
        if problem is not None or paused or spec is None:
            next_run = None
        elif "spec" in changed or "tz" in changed or old.next_run is None:
            next_run = self._next(spec, now)
        else:
            next_run = old.next_run
        if next_run != old.next_run:
            changed["next_run"] = next_run
        return [Update(old.id, old.version, changed)] if changed else []

    def remove_app(self, app: str) -> None:
        """The app went away (its notebook deleted): stop firing its schedules here. Their
        rows stay, history and paused flags with them, for when it comes back; its next
        ``sync_app`` then removes what it no longer declares."""
        self._apps.pop(app, None)
        for sid in [sid for sid, k in self._known.items() if k.row.app == app]:
            del self._known[sid]

    # -- the admin API ----------------------------------------------------------------------------
    async def list(self, app: str | None = None) -> list[ScheduleRecord]:
        return [self._record_of(row) for row in await self.store.rows(app)]

    async def create(
        self,
        app: str,
        task: str,
        spec: SpecText,
        tz: str = "UTC",
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        misfire: MisfirePolicy = "run_once",
        *,
        name: str | None = None,
    ) -> ScheduleRecord:
        """A schedule made at run time (source ``api``), of an app loaded here; ScheduleInvalid
        says what is wrong with a field."""
        if not isinstance(app, str) or app not in self._apps:
            raise ScheduleInvalid(f"no app named {app!r} is loaded on this server")
        values = api_fields(task, spec, tz, args, kwargs, misfire, name, self._apps[app])
        sid = new_schedule_id()
        parsed = self._parse_or_invalid(sid, spec, tz)
        now = self.clock.now()
        row = ScheduleRow(
            id=sid, app=app, source="api", paused=False, next_run=self._next(parsed, now), last_run=None,
            last_status=None, last_task_id=None, problem=None, created=now, updated=now, version=1, **values,
        )  # fmt: skip
        if not await self.store.apply([Insert(row)], now):
            raise RuntimeError("a new schedule's random id was taken; try again")
        return self._record_of(await self._reload(sid))

    def _parse_or_invalid(self, schedule_id: str, spec: Any, tz: Any) -> Spec:
        parsed, problem = self._parse(schedule_id, spec, tz)
        if parsed is None:
            raise ScheduleInvalid(problem)
        return parsed

    async def update(
        self,
        schedule_id: str,
        *,
        spec: SpecText | None = None,
        tz: str | None = None,
        paused: bool | None = None,
        misfire: MisfirePolicy | None = None,
    ) -> ScheduleRecord:
        """Change what is given. Resuming, or a new spec or zone, sets the next run to the
        first time after now (no catch-up). A notebook's schedule can only be paused or
        resumed (ScheduleNotEditable): its notebook says the rest."""
        if paused is not None and not isinstance(paused, bool):
            raise ScheduleInvalid(f"paused must be true or false, not {paused!r}")
        if misfire is not None and misfire not in MISFIRE_POLICIES:
            raise ScheduleInvalid(f"misfire must be 'skip' or 'run_once' (e.g. \"misfire\": \"skip\"), not {misfire!r}")
        for _attempt in range(ATTEMPTS):
            old = await self._row(schedule_id)
            if old.source != "api" and (spec is not None or tz is not None or misfire is not None):
                raise ScheduleNotEditable(
                    f"schedule '{old.name}' of app '{old.app}' is declared in the app's notebook: change it there;"
                    " through the API it can be paused, resumed or run now"
                )
            values: dict[str, Any] = {}
            if spec is not None or tz is not None:
                values["spec"] = spec if spec is not None else old.spec
                values["tz"] = tz if tz is not None else old.tz
                parsed: Spec | None = self._parse_or_invalid(old.id, values["spec"], values["tz"])
            else:
                parsed = self._parse(old.id, old.spec, old.tz)[0]
            if misfire is not None:
                values["misfire"] = misfire
            if paused is not None:
                values["paused"] = paused
            writes = self._changes(old, values, parsed, self.clock.now())
            if not writes or await self.store.apply(writes, self.clock.now()):
                return self._record_of(await self._reload(old.id))
        raise RuntimeError(f"schedule {schedule_id} kept changing while it was updated")

    async def delete(self, schedule_id: str) -> None:
        for _attempt in range(ATTEMPTS):
            old = await self._row(schedule_id)
            if old.source != "api":
                raise ScheduleNotEditable(
                    f"schedule '{old.name}' of app '{old.app}' is declared in the app's notebook: remove it there,"
                    " or pause it through the API"
                )
            if await self.store.apply([Delete(old.id, old.version)], self.clock.now()):
                self._known.pop(old.id, None)
                self._emit(ScheduleEvent("deleted", old.id, old.app))
                return
        raise RuntimeError(f"schedule {schedule_id} kept changing while it was deleted")

    async def run_now(self, schedule_id: str) -> ScheduleRun:
        """Launch the schedule's task now (paused or not), and record it as one of its runs;
        the no-overlap rule holds: a run while the last one is still going is skipped."""
        row = await self._row(schedule_id)
        if row.problem is not None:
            raise ScheduleInvalid(f"schedule '{row.name}' cannot run: {row.problem}")
        run = await asyncio.shield(self._start_fire(row, self.clock.now(), "manual"))
        if run is None:
            raise ScheduleNotFound(f"schedule {schedule_id!r} was deleted while it was run")
        return cast(ScheduleRun, run)

    async def _row(self, schedule_id: str) -> ScheduleRow:
        row = await self.store.get(schedule_id) if isinstance(schedule_id, str) else None
        if row is None:
            raise ScheduleNotFound(f"no schedule has the id {schedule_id!r}")
        return row


def _listed_order(row: ScheduleRow) -> tuple[str, str, str]:
    """The order ScheduleStore.rows lists in."""
    return row.app, row.name, row.id
