"""The schedules and their runs in the store, and the claims that make each run fire once.

Several servers may share the store, so nothing here trusts what a server read before:

* a fire is claimed by a conditional update (``next_run`` moves on only if it still is the
  time the server found due): of two servers, one updates the row and fires, the other
  finds nothing to update;
* every other change is written only if the row's ``version`` is still the one it was
  computed from (``apply``); a change computed from a stale read is refused, and the
  caller reads again and recomputes.

Like the rest of the store, every method runs its blocking work on the store's thread.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..store import Store
from ..store.numbering import numbered_in_commit_order
from ..store.tables import schedule_runs, schedules
from .records import ScheduleRun, ScheduleState, SpecText

T = TypeVar("T")
#: ids per ``IN (...)``, below the bound old SQLite builds put on a statement's parameters
_CHUNK = 500


def spec_json(spec: SpecText) -> str:
    """A spec as the store keeps it: JSON, keys sorted, so one spec is always one text and
    a change is told from a reload by comparing texts."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, kw_only=True)
class ScheduleRow(ScheduleState):
    """A row of ``anvil_schedules``, its JSON columns decoded."""

    #: bumped by every write: a change is written only over the version it was computed from
    version: int


_JSON_FIELDS = ("spec", "args", "kwargs")
_ROW_FIELDS = tuple(f.name for f in fields(ScheduleRow))


def _encode(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (spec_json(v) if k == "spec" else json.dumps(v)) if k in _JSON_FIELDS else v for k, v in values.items()}


def _row(mapping: Any) -> ScheduleRow:
    values = {name: mapping[name] for name in _ROW_FIELDS}
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name])
    values["paused"] = bool(values["paused"])
    return ScheduleRow(**values)


def _run(mapping: Any) -> ScheduleRun:
    return ScheduleRun(**{f.name: mapping[f.name] for f in fields(ScheduleRun)})


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# -- what ``apply`` writes, all or nothing ------------------------------------------------------
@dataclass(frozen=True)
class Insert:
    row: ScheduleRow


@dataclass(frozen=True)
class Update:
    """Set ``values`` (fields of ScheduleRow) if the row is still at ``version``."""

    schedule_id: str
    version: int
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    """Remove the schedule and its runs, if the row is still at ``version``."""

    schedule_id: str
    version: int


Write = Insert | Update | Delete


class _Conflict(Exception):
    """A row changed (or appeared) since it was read: roll back."""


@dataclass(frozen=True)
class Claim:
    """Take the run due at ``due``: the row moves on to ``next_run``; ``last_run`` is set
    unless None (a missed run that is skipped ran nothing)."""

    schedule_id: str
    due: float
    next_run: float
    last_run: float | None


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    won: bool
    #: the row after the claim, won or not (None: deleted meanwhile)
    row: ScheduleRow | None


class ScheduleStore:
    """The schedules (``anvil_schedules``) and the history of their runs (``anvil_schedule_runs``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading ----------------------------------------------------------------------------
    async def get(self, schedule_id: str) -> ScheduleRow | None:
        def work() -> ScheduleRow | None:
            with self.store.engine.begin() as db:
                row = db.execute(sa.select(schedules).where(schedules.c.id == schedule_id)).mappings().first()
                return _row(row) if row is not None else None

        return await self.store.run(work)

    async def rows(self, app: str | None = None) -> list[ScheduleRow]:
        """Every schedule (of ``app``), by app, name and id."""

        def work() -> list[ScheduleRow]:
            query = sa.select(schedules).order_by(schedules.c.app, schedules.c.name, schedules.c.id)
            if app is not None:
                query = query.where(schedules.c.app == app)
            with self.store.engine.begin() as db:
                return [_row(row) for row in db.execute(query).mappings()]

        return await self.store.run(work)

    async def changes(self, apps: Collection[str], known: Mapping[str, int]) -> tuple[list[ScheduleRow], set[str]]:
        """What changed in the schedules of ``apps`` since the versions in ``known`` (id ->
        version): the rows that are new or changed, and the ids of all there are now (so
        the caller sees which were deleted). Reads versions first and whole rows only
        where they differ, so an idle refresh is one light query."""
        wanted = set(apps)

        def work() -> tuple[list[ScheduleRow], set[str]]:
            with self.store.engine.begin() as db:
                present = {
                    row.id: row.version
                    for row in db.execute(sa.select(schedules.c.id, schedules.c.app, schedules.c.version))
                    if row.app in wanted
                }
                stale = [sid for sid, version in present.items() if known.get(sid) != version]
                return _read_rows(db, stale), set(present)

        return await self.store.run(work)

    async def find(self, ids: Collection[str]) -> list[ScheduleRow]:
        """The schedules with these ids, whichever apps they belong to."""

        def work() -> list[ScheduleRow]:
            with self.store.engine.begin() as db:
                return _read_rows(db, sorted(ids))

        return await self.store.run(work)

    async def runs(self, schedule_id: str, limit: int = 50, before: int | None = None) -> list[ScheduleRun]:
        """The schedule's runs, newest first; ``before`` (a ``seq``) pages back."""

        def work() -> list[ScheduleRun]:
            query = (
                sa.select(schedule_runs)
                .where(schedule_runs.c.schedule_id == schedule_id)
                .order_by(schedule_runs.c.seq.desc())
                .limit(limit)
            )
            if before is not None:  # BIGINT, as the column (migration 0006): a huge number is no error
                query = query.where(schedule_runs.c.seq < sa.literal(before, sa.BigInteger))
            with self.store.engine.begin() as db:
                return [_run(row) for row in db.execute(query).mappings()]

        return await self.store.run(work)

    # -- changing -----------------------------------------------------------------------------
    async def apply(self, writes: Sequence[Write], now: float) -> bool:
        """Write all of ``writes`` in one transaction, or none of them if any row changed
        since it was read (an Update or Delete whose version is not the row's, an Insert
        whose id is taken): then False, and the caller reads again. Each write bumps the
        row's version and sets ``updated`` to ``now``."""

        def work() -> bool:
            new = [w.row for w in writes if isinstance(w, Insert)]
            inserts = [_encode({**_fields(row), "updated": now, "version": 1}) for row in new]
            try:
                with self.store.engine.begin() as db:
                    if inserts:  # many at a load: checked in one query and written in one statement
                        if _read_rows(db, [row["id"] for row in inserts]):
                            raise _Conflict
                        db.execute(schedules.insert(), inserts)
                    for write in writes:
                        if not isinstance(write, Insert):
                            _apply_one(db, write, now)
            except (_Conflict, sa.exc.IntegrityError):  # the latter: an insert another server won
                return False
            return True

        return await self.store.run(work)

    async def claim(self, claims: Sequence[Claim], now: float) -> list[ClaimResult]:
        """Claim due runs, in one transaction: each claim is won by the one server whose
        update finds the row still due at ``claim.due``, not paused and without a problem."""

        def work() -> list[ClaimResult]:
            results = []
            with self.store.engine.begin() as db:
                for claim in claims:
                    values: dict[str, Any] = {
                        "next_run": claim.next_run,
                        "updated": now,
                        "version": schedules.c.version + 1,
                    }
                    if claim.last_run is not None:
                        values["last_run"] = claim.last_run
                    won = db.execute(
                        schedules.update()
                        .where(
                            schedules.c.id == claim.schedule_id,
                            schedules.c.next_run == claim.due,
                            schedules.c.paused == sa.false(),
                            schedules.c.problem.is_(None),
                        )
                        .values(values)
                    ).rowcount
                    row = db.execute(sa.select(schedules).where(schedules.c.id == claim.schedule_id)).mappings().first()
                    results.append(ClaimResult(claim, won == 1, _row(row) if row is not None else None))
            return results

        return await self.store.run(work)

    async def record_run(
        self,
        run: ScheduleRun,
        *,
        last_run: float | None,
        history_limit: int,
        now: float,
    ) -> tuple[ScheduleRun | None, ScheduleRow | None]:
        """Keep ``run`` (its ``seq`` is ignored: the database numbers it) as the schedule's
        latest: its ``last_status``, its ``last_task_id`` if it launched a task, and
        ``last_run`` if given; then drop the schedule's runs beyond the newest
        ``history_limit``. Returns the stored run and the row, or (None, None) if the
        schedule was deleted meanwhile (nothing is kept of it)."""

        def work() -> tuple[ScheduleRun | None, ScheduleRow | None]:
            by_id = schedules.c.id == run.schedule_id
            values: dict[str, Any] = {"last_status": run.outcome, "updated": now, "version": schedules.c.version + 1}
            if run.task_id is not None and run.outcome == "launched":
                values["last_task_id"] = run.task_id
            if last_run is not None:
                values["last_run"] = last_run
            with self.store.engine.begin() as db:
                numbered_in_commit_order(db, schedule_runs)  # pages by seq miss none (store/numbering.py)
                if not db.execute(schedules.update().where(by_id).values(values)).rowcount:
                    return None, None
                row = {f.name: getattr(run, f.name) for f in fields(ScheduleRun) if f.name != "seq"}
                inserted = db.execute(schedule_runs.insert().values(row)).inserted_primary_key
                assert inserted is not None
                seq = inserted[0]
                _prune(db, run.schedule_id, history_limit)
                stored = db.execute(sa.select(schedules).where(by_id)).mappings().one()
            return ScheduleRun(**{**row, "seq": int(seq)}), _row(stored)

        return await self.store.run(work)


def _read_rows(db: Connection, ids: Sequence[str]) -> list[ScheduleRow]:
    rows: list[ScheduleRow] = []
    for chunk in _chunks(ids):
        rows.extend(_row(row) for row in db.execute(sa.select(schedules).where(schedules.c.id.in_(chunk))).mappings())
    return rows


def _fields(row: ScheduleRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _ROW_FIELDS}


def _apply_one(db: Connection, write: Update | Delete, now: float) -> None:
    current = schedules.c.id == write.schedule_id, schedules.c.version == write.version
    if isinstance(write, Update):
        values = _encode(write.values)
        values.update(updated=now, version=schedules.c.version + 1)
        if not db.execute(schedules.update().where(*current).values(values)).rowcount:
            raise _Conflict
        return
    if not db.execute(schedules.delete().where(*current)).rowcount:
        raise _Conflict
    db.execute(schedule_runs.delete().where(schedule_runs.c.schedule_id == write.schedule_id))


def _prune(db: Connection, schedule_id: str, keep: int) -> None:
    """Drop the schedule's runs beyond the newest ``keep``."""
    own = schedule_runs.c.schedule_id == schedule_id
    newest = sa.select(schedule_runs.c.seq).where(own).order_by(schedule_runs.c.seq.desc())
    cutoff = db.execute(newest.offset(max(keep, 1) - 1).limit(1)).scalar()
    if cutoff is not None:
        db.execute(schedule_runs.delete().where(own, schedule_runs.c.seq < cutoff))
