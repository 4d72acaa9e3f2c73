"""The scheduler's loop: it keeps the schedules of the apps loaded here and fires them on time, once.

How a run fires: the loop sleeps until the earliest ``next_run`` it knows (a change made
here wakes it at once; the store is read again every ``refresh_seconds`` for changes
other servers made), then claims each due run in the store (a conditional update, see
store.py: of several servers sharing the store, one wins) and launches its task through
the ``launcher``. Each run is recorded: ``launched``, ``skipped`` (with the reason) or
``failed`` (with the launcher's message). Nothing raises out of the loop: a failure is
logged and recorded, and the other schedules go on. Store work runs on the store's
thread; the loop never blocks the event loop.

* No overlap: while the task the schedule launched last is still running, a run is
  skipped, and the skip is recorded.
* Misfire: a run found more than ``misfire_after`` seconds overdue (the server was down,
  the app not loaded, the machine asleep) was missed. ``skip`` records one skipped run and
  moves on; ``run_once`` fires once now if the latest missed time is within
  ``grace_seconds``, else skips likewise. Either way the next run is the first one after
  now: never a burst of catch-up runs. A run less late than ``misfire_after`` (a busy
  event loop, a quick restart) fires, late.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, Protocol, cast

from ..background import spawn
from ..store import Store
from .checks import parse_problem
from .records import (
    RunOutcome,
    ScheduleEvent,
    ScheduleNotFound,
    ScheduleRecord,
    ScheduleRun,
    ScheduleState,
)
from .store import Claim, ClaimResult, ScheduleRow, ScheduleStore, Update, spec_json

log = logging.getLogger(__name__)

MISSED = "missed while the server was down"


class Spec(Protocol):
    """A parsed schedule (spec.py): its next time after a given one, and itself in words."""

    @property
    def text(self) -> str: ...
    @property
    def tz(self) -> str: ...
    def next_after(self, after: datetime) -> datetime: ...
    def describe(self) -> str: ...


class SpecParser(Protocol):
    def __call__(self, spec: str | Mapping[str, Any], tz: str = "UTC", *, seed: str = "") -> Spec: ...


class Clock(Protocol):
    """Time as the scheduler sees it: tests drive it instead of sleeping."""

    def now(self) -> float: ...  # epoch seconds
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Launcher(Protocol):
    """Launches a schedule's task as a background task (the task service, wired later).
    ``launch`` returns the task id, or raises with a message that says why it could not."""

    async def launch(self, app: str, task: str, args: list[Any], kwargs: dict[str, Any], schedule_id: str) -> str: ...
    async def is_running(self, task_id: str) -> bool: ...


def default_parser() -> SpecParser:
    """spec.parse_spec, imported when first needed."""
    return cast(SpecParser, importlib.import_module(".spec", __package__).parse_spec)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _message(error: BaseException) -> str:
    return str(error) or type(error).__name__


Kind = Literal["due", "catch_up", "missed", "manual"]


class _Known:
    """A schedule the loop may fire: its row as last seen, and its spec parsed (None: a
    problem stops it)."""

    __slots__ = ("key", "row", "spec")

    def __init__(self, row: ScheduleRow, spec: Spec | None, key: tuple[str, str]) -> None:
        self.row, self.spec, self.key = row, spec, key

    def fireable(self) -> bool:
        row = self.row
        return self.spec is not None and row.next_run is not None and not row.paused and row.problem is None


class FiringLoop:
    """The loop and what it keeps; Scheduler (service.py) adds the app syncs and the admin API."""

    def __init__(
        self,
        store: Store | ScheduleStore,
        launcher: Launcher,
        *,
        clock: Clock | None = None,
        parse_spec: SpecParser | None = None,
        refresh_seconds: float = 5.0,
        grace_seconds: float = 3600.0,
        misfire_after: float = 30.0,
        history_limit: int = 100,
        on_event: Callable[[ScheduleEvent], None] | None = None,
        server_id: str | None = None,
    ) -> None:
        self.store = store if isinstance(store, ScheduleStore) else ScheduleStore(store)
        self.launcher = launcher
        self.clock: Clock = clock or SystemClock()
        self._parse_spec = parse_spec
        self.refresh_seconds = refresh_seconds
        self.grace_seconds = grace_seconds
        self.misfire_after = misfire_after
        self.history_limit = history_limit
        self.on_event = on_event
        self.server_id = server_id
        #: the apps loaded here, with their background tasks' names (None: not told)
        self._apps: dict[str, frozenset[str] | None] = {}
        self._known: dict[str, _Known] = {}
        self._firing: dict[str, asyncio.Task[Any]] = {}  # a fire per schedule, while it launches
        self._pending: set[asyncio.Task[Any]] = set()  # every fire and record not yet done
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._refresh_at = -math.inf

    @property
    def parse_spec(self) -> SpecParser:
        if self._parse_spec is None:
            self._parse_spec = default_parser()
        return self._parse_spec

    # -- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start firing (in the running event loop); runs missed while down follow their misfire policy."""
        if self._loop is None:
            self._refresh_at = -math.inf
            self._loop = asyncio.ensure_future(self._run())

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop; fires under way get ``timeout`` seconds to launch and be recorded."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        pending = {t for t in self._pending if not t.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("[jupyter-anvil] %d scheduled runs were cut off by the scheduler's stop", len(late))

    def _wake_up(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before looking: a change from here on wakes the wait below
            try:
                delay = await self._step()
            except Exception:
                log.exception("[jupyter-anvil] the scheduler failed a step; trying again in a second")
                delay = 1.0
            if delay > 0:
                await self._wait(delay)
            else:
                await asyncio.sleep(0)

    async def _wait(self, delay: float) -> None:
        sleeping = asyncio.ensure_future(self.clock.sleep(delay))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()

    async def _step(self) -> float:
        """Fire what is due; the seconds until the next thing to do."""
        now = self.clock.now()
        if now >= self._refresh_at:
            self._refresh_at = now + self.refresh_seconds
            await self.refresh()
            now = self.clock.now()
        due: list[_Known] = []
        earliest = self._refresh_at
        for known in self._known.values():
            if known.fireable():
                next_run = cast(float, known.row.next_run)
                if next_run <= now:
                    due.append(known)
                elif next_run < earliest:
                    earliest = next_run
        if due:
            await self._fire_due(due, now)
            return 0.0
        return earliest - now

    async def refresh(self) -> None:
        """Read what changed in the store (another server's changes included)."""
        known = {sid: k.row.version for sid, k in self._known.items()}
        changed, present = await self.store.changes(list(self._apps), known)
        for sid in [sid for sid in self._known if sid not in present]:
            row = self._known.pop(sid).row
            self._emit(ScheduleEvent("deleted", sid, row.app))
        for row in changed:
            if self._remember(row):
                self._emit_changed(row)

    def _remember(self, row: ScheduleRow) -> bool:
        """Keep ``row`` if it is newer than the one known (store answers may come back
        out of order); parse its spec again only if it changed. True if kept."""
        if row.app not in self._apps:
            return False
        known = self._known.get(row.id)
        if known is not None and known.row.version >= row.version:
            return False
        key = (spec_json(row.spec), row.tz)
        spec = known.spec if known is not None and known.key == key else self._parse(row.id, row.spec, row.tz)[0]
        self._known[row.id] = _Known(row, spec, key)
        return True

    def _parse(self, schedule_id: str, spec: Any, tz: Any) -> tuple[Spec | None, str | None]:
        """The spec parsed, or None and what is wrong with it (a spec or zone that does not
        parse, or one that cannot give its next time: a bug in the parser, never the loop's end)."""
        try:
            parsed = self.parse_spec(spec, tz, seed=schedule_id)
        except Exception as e:  # noqa: BLE001 - said in the problem (a parser's bug is logged there)
            return None, parse_problem(e)
        try:
            self._next(parsed, self.clock.now())
        except Exception as e:
            log.exception("[jupyter-anvil] schedule %s: its spec gives no next time", schedule_id)
            return None, f"could not compute its next run: {_message(e)}"
        return parsed, None

    def _next(self, spec: Spec, after: float) -> float:
        """The first time after ``after`` (epoch seconds), checked: a spec that answers a
        time not after it would make the loop fire without end."""
        result = spec.next_after(datetime.fromtimestamp(after, timezone.utc)).timestamp()
        if not result > after:
            raise ValueError(f"the spec's next time {_iso(result)} is not after {_iso(after)}")
        return result

    def _plan(self, known: _Known, now: float) -> tuple[Claim, Kind]:
        row, spec = known.row, cast(Spec, known.spec)
        due = cast(float, row.next_run)
        if now - due <= self.misfire_after:
            return Claim(row.id, due, self._next(spec, max(due, now)), last_run=due), "due"
        next_run = self._next(spec, now)
        if row.misfire == "run_once" and self._missed_within_grace(spec, due, now):
            return Claim(row.id, due, next_run, last_run=now), "catch_up"
        return Claim(row.id, due, next_run, last_run=None), "missed"

    def _missed_within_grace(self, spec: Spec, due: float, now: float) -> bool:
        """Whether one of the missed times is within the grace period: without walking
        through every one of them (an every-second schedule down for a day)."""
        start = now - self.grace_seconds
        return due >= start or self._next(spec, start) <= now

    async def _fire_due(self, due: Sequence[_Known], now: float) -> None:
        claims: list[Claim] = []
        kinds: dict[str, Kind] = {}
        for known in due:
            try:
                claim, kinds[known.row.id] = self._plan(known, now)
            except Exception as e:
                log.exception("[jupyter-anvil] schedule %s: could not compute its next run", known.row.id)
                await self._set_problem(known.row, f"could not compute its next run: {_message(e)}")
                continue
            claims.append(claim)
        if not claims:
            return
        for result in await self.store.claim(claims, now):
            self._after_claim(result, kinds[result.claim.schedule_id], now)

    def _after_claim(self, result: ClaimResult, kind: Kind, now: float) -> None:
        sid, row = result.claim.schedule_id, result.row
        if row is None:
            self._known.pop(sid, None)
            return
        self._remember(row)
        if not result.won:
            return  # another server took it (or a change came between): the row read now says what is next
        due = result.claim.due
        if kind == "missed":
            reason = f"{MISSED} (due {_iso(due)}); misfire '{row.misfire}'"
            if row.misfire == "run_once":
                reason += f": the latest missed time is more than {self.grace_seconds:g} s ago"
            self._track(self._record(row, due, now, None, "skipped", reason))
        else:
            self._start_fire(row, due, kind)

    def _start_fire(self, row: ScheduleRow, due: float, kind: Kind) -> asyncio.Task[Any]:
        previous = self._firing.get(row.id)
        if previous is not None and not previous.done():
            reason = "previous run still being launched"
            return self._track(self._record(row, due, self.clock.now(), None, "skipped", reason))
        fire = self._track(self._fire(row, due, kind))
        self._firing[row.id] = fire
        fire.add_done_callback(
            lambda task: self._firing.pop(row.id, None) if self._firing.get(row.id) is task else None
        )
        return fire

    def _track(self, work: Any) -> asyncio.Task[Any]:
        task = spawn(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _fire(self, row: ScheduleRow, due: float, kind: Kind) -> ScheduleRun | None:
        at = self.clock.now()
        task_id: str | None = None
        reason = {"due": "", "manual": "run now, by request"}.get(kind, f"{MISSED} (due {_iso(due)}): run once now")
        outcome: RunOutcome
        try:
            if row.last_task_id and await self.launcher.is_running(row.last_task_id):
                outcome, reason = "skipped", f"previous run {row.last_task_id} still running"
            else:
                at = self.clock.now()
                task_id = await self.launcher.launch(row.app, row.task, list(row.args), dict(row.kwargs), row.id)
                outcome = "launched"
        except Exception as e:  # noqa: BLE001 - the launcher's message says why: recorded, the loop goes on
            log.warning("[jupyter-anvil] schedule %s (%s, task %s) could not launch: %s", row.id, row.app, row.task, e)
            outcome, reason = "failed", _message(e)
        return await self._record(row, due, at, task_id, outcome, reason, last_run=at if kind == "manual" else None)

    async def _record(
        self,
        row: ScheduleRow,
        due: float,
        at: float,
        task_id: str | None,
        outcome: RunOutcome,
        reason: str,
        last_run: float | None = None,
    ) -> ScheduleRun | None:
        run = ScheduleRun(0, row.id, row.app, due, at, task_id, outcome, reason, self.server_id)
        try:
            stored, now_row = await self.store.record_run(
                run, last_run=last_run, history_limit=self.history_limit, now=self.clock.now()
            )
        except Exception:
            log.exception("[jupyter-anvil] could not record a run of schedule %s: %s %s", row.id, outcome, reason)
            return None
        if stored is None or now_row is None:
            return None  # deleted meanwhile
        self._remember(now_row)
        self._emit(ScheduleEvent("run", row.id, row.app, self._record_of(now_row), stored))
        return stored

    async def _set_problem(self, row: ScheduleRow, problem: str) -> None:
        """Stop a schedule the loop cannot plan (a spec that fails): stored, so it is listed."""
        try:
            await self.store.apply(
                [Update(row.id, row.version, {"problem": problem, "next_run": None})], self.clock.now()
            )
            await self._reload(row.id)
        except Exception:
            log.exception("[jupyter-anvil] could not record the problem of schedule %s", row.id)
            self._known.pop(row.id, None)  # not fired again until the store is read again

    async def _reload(self, schedule_id: str) -> ScheduleRow:
        row = await self.store.get(schedule_id)
        if row is None:
            known = self._known.pop(schedule_id, None)
            if known is not None:
                self._emit(ScheduleEvent("deleted", schedule_id, known.row.app))
            raise ScheduleNotFound(f"no schedule has the id {schedule_id!r}")
        if self._remember(row):
            self._emit_changed(row)
        self._wake_up()
        return row

    # -- what the admin API lists -----------------------------------------------------------------
    def _record_of(self, row: ScheduleRow) -> ScheduleRecord:
        known = self._known.get(row.id)
        if known is not None and known.key == (spec_json(row.spec), row.tz):
            spec = known.spec
        else:
            spec = self._parse(row.id, row.spec, row.tz)[0]
        description = _describe(spec, row)
        state = {f.name: getattr(row, f.name) for f in dataclasses.fields(ScheduleState)}
        return ScheduleRecord(**state, description=description, app_loaded=row.app in self._apps)

    def _emit_changed(self, row: ScheduleRow) -> None:
        self._emit(ScheduleEvent("changed", row.id, row.app, self._record_of(row)))

    def _emit(self, event: ScheduleEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("[jupyter-anvil] a schedule event subscriber failed")


def _describe(spec: Spec | None, row: ScheduleRow) -> str:
    if spec is not None:
        try:
            return spec.describe()
        except Exception:  # a bug in describe() must not hide the schedule
            log.exception("[jupyter-anvil] could not describe schedule %s", row.id)
    text = row.spec if isinstance(row.spec, str) else spec_json(row.spec)
    return f"{text} ({row.tz})"
