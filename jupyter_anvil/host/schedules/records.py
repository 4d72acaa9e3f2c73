"""What the scheduler deals in: what an app declares, what is stored and listed, each run,
the events of the live feed, and the errors the admin handlers map to HTTP statuses."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

#: what a schedule does about runs it missed while no server ran it (see service.py)
MisfirePolicy = Literal["skip", "run_once"]
#: where a schedule comes from: a server cell (``@server.scheduled``), the notebook's
#: ``metadata.jupyter_anvil.scheduled_tasks`` (Anvil's list), or the admin API
ScheduleSource = Literal["notebook", "metadata", "api"]
#: what one run did
RunOutcome = Literal["launched", "skipped", "failed"]
#: what an event tells: a schedule added or changed, one removed, a run recorded
EventKind = Literal["changed", "deleted", "run"]

MISFIRE_POLICIES: Final[tuple[MisfirePolicy, ...]] = ("skip", "run_once")
#: the sources an app's load declares; the others are left alone by a reload
DECLARED_SOURCES: Final[tuple[ScheduleSource, ...]] = ("notebook", "metadata")
DEFAULT_MISFIRE: Final[MisfirePolicy] = "run_once"

#: the longest schedule id the store keeps
MAX_ID_LENGTH: Final = 64

#: a schedule as written: a phrase or a cron line, or Anvil's time_spec dict
SpecText: TypeAlias = "str | dict[str, Any]"


def definition_id(app: str, source: ScheduleSource, key: str) -> str:
    """A stable id for a declared schedule: the same at every load and on every server, and
    different across apps (two apps copied from one Anvil app share their job ids). ``key``
    is what names the schedule within the app: its name for a server cell's, its
    ``job_id`` for a metadata one. Hex, so it is safe in a URL path. (A lone surrogate, which
    JSON's ``\\ud800`` makes, is hashed as it is, not an error.)"""
    return hashlib.sha256(f"{app}\0{source}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def new_schedule_id() -> str:
    """An id for a schedule the API makes: 20 random base32 characters (100 bits)."""
    return "".join(secrets.choice(_BASE32) for _ in range(20))


@dataclass(frozen=True)
class ScheduleDefinition:
    """One schedule an app declares, as its load found it. Values come from the author's
    code or metadata and are checked by ``Scheduler.sync_app``: a wrong one becomes the
    schedule's ``problem``, not an exception.

    ``id`` must be unique across apps and stable across reloads (``definition_id`` makes
    one); ``name`` tells two schedules of one task apart (the task's name by default)."""

    id: str
    app: str
    task: str
    name: str
    spec: SpecText
    tz: str = "UTC"
    misfire: MisfirePolicy = DEFAULT_MISFIRE
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: ScheduleSource = "notebook"


@dataclass(frozen=True, kw_only=True)
class ScheduleState:
    """What is kept of one schedule: how it was declared and where its firing stands.
    Times are epoch seconds. The store's row (store.py) and the admin API's record add
    their own few fields to it."""

    id: str
    app: str
    task: str
    name: str
    spec: SpecText
    tz: str
    misfire: MisfirePolicy
    args: list[Any]
    kwargs: dict[str, Any]
    source: ScheduleSource
    paused: bool
    next_run: float | None
    last_run: float | None
    last_status: RunOutcome | None
    last_task_id: str | None
    problem: str | None
    created: float
    updated: float


@dataclass(frozen=True, kw_only=True)
class ScheduleRecord(ScheduleState):
    """A schedule as the admin API lists it.

    ``next_run`` is None while the schedule is paused or has a ``problem`` (then it never
    fires). ``last_status`` is the outcome of its latest run (launched, skipped, failed);
    the launched task's own status is in its task record (``last_task_id``).
    ``app_loaded`` says whether this server has the app loaded: only then does it fire the
    schedule here."""

    description: str
    app_loaded: bool


@dataclass(frozen=True)
class ScheduleRun:
    """One time a schedule came due (or was run by hand): what the scheduler did.
    ``due`` is the time it was due, ``at`` the time the scheduler acted; ``task_id`` is
    the launched task's, if one was launched; ``reason`` says why it was skipped or how
    it failed. ``seq`` is numbered by the database: newer runs have higher numbers."""

    seq: int
    schedule_id: str
    app: str
    due: float
    at: float
    task_id: str | None
    outcome: RunOutcome
    reason: str
    server: str | None


@dataclass(frozen=True)
class ScheduleEvent:
    """What the live feed carries: ``schedule`` as it is now (None when deleted), and the
    ``run`` that was just recorded for a ``run`` event."""

    kind: EventKind
    schedule_id: str
    app: str
    schedule: ScheduleRecord | None = None
    run: ScheduleRun | None = None


class ScheduleError(Exception):
    """A request about schedules that cannot be done; the message says why."""


class ScheduleNotFound(ScheduleError, LookupError):
    """No schedule has this id (HTTP 404)."""


class ScheduleInvalid(ScheduleError, ValueError):
    """A field of the request is wrong: a spec or zone that does not parse, a misfire
    policy, arguments that are not a list... (HTTP 400)."""


class ScheduleNotEditable(ScheduleInvalid):
    """The change is for the notebook to make: a notebook's (or its metadata's) schedule
    can be paused, resumed and run through the API, not changed or deleted (HTTP 400)."""
