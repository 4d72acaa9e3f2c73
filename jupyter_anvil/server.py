"""The server API for notebook cells tagged ``server``, name for name with ``anvil.server``.

Use it as you would Anvil's::

    from jupyter_anvil import server

    @server.callable
    def greet(name):
        return f"Hello, {name}!"
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, Literal, TypeVar, overload

from . import errors as _errors
from . import wire
from .errors import (
    AnvilWrappedError,
    BackgroundTaskError,
    BackgroundTaskKilled,
    BackgroundTaskNotFound,
    CookieError,
    ExecutionTerminatedError,
    InternalError,
    InvalidResponseError,
    NoServerFunctionError,
    PermissionDenied,
    QuotaExceededError,
    RuntimeUnavailableError,
    SerializationError,
    ServiceNotAdded,
    SessionExpiredError,
    StackOverflow,
    TimeoutError,
    UplinkDisconnectedError,
)
from .kernel import context as _context
from .kernel import registry as _registry
from .kernel import runtime as _runtime
from .kernel.cookies import CookieJar
from .kernel.session import SessionData
from .protocol import BACKGROUND_TASK as _BACKGROUND_TASK
from .protocol import BACKGROUND_TASKS_PREFIX as _TASKS
from .protocol import TASK_TYPE as _TASK_TYPE
from .protocol import UNFINISHED_TASK_STATUSES as _UNFINISHED
from .protocol import TaskRecordReply as _TaskRecordReply
from .protocol import is_finished as _is_finished

__all__ = [
    "AnvilWrappedError",
    "BackgroundTaskError",
    "BackgroundTaskKilled",
    "BackgroundTaskNotFound",
    "CookieError",
    "ExecutionTerminatedError",
    "InternalError",
    "InvalidResponseError",
    "NoServerFunctionError",
    "PermissionDenied",
    "QuotaExceededError",
    "RuntimeUnavailableError",
    "SerializationError",
    "ServiceNotAdded",
    "SessionExpiredError",
    "StackOverflow",
    "Task",
    "TimeoutError",
    "UplinkDisconnectedError",
    "background_task",
    "call",
    "callable",
    "context",
    "cookies",
    "get_background_task",
    "get_session_id",
    "launch_background_task",
    "list_background_tasks",
    "portable_class",
    "scheduled",
    "serializable_type",
    "session",
    "task_state",
]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


@overload
def callable(fn_or_name: F, /) -> F: ...
@overload
def callable(
    fn_or_name: str | None = None, /, *, name: str | None = None, require_user: Any = None
) -> Callable[[F], F]: ...
def callable(fn_or_name: Any = None, /, *, name: str | None = None, require_user: Any = None) -> Any:
    """Make a function callable from browsers and other server code.

    All of Anvil's forms work: ``@server.callable``, ``@server.callable("public_name")``,
    ``@server.callable(name="public_name")`` and ``@server.callable(require_user=...)``.
    There is no users service yet, so a function registered with ``require_user``
    (``True`` or a callable) refuses every call with :class:`PermissionDenied` rather
    than run for callers nobody logged in; the app log says so when it loads.
    The function is returned unchanged, so it stays callable directly. Registering a
    name twice prints a warning; the last registration wins.
    """
    if isinstance(fn_or_name, str) or fn_or_name is None:
        public_name = name if name is not None else fn_or_name

        def decorate(fn: F) -> F:
            _registry.register(public_name or fn.__name__, fn, require_user)
            return fn

        return decorate
    _registry.register(name or fn_or_name.__name__, fn_or_name, require_user)
    return fn_or_name


def call(fn_name: str, *args: Any, **kwargs: Any) -> Any:
    """Call a server function by name and return its result.

    Arguments and the result cross the boundary as Anvil's portable values (a tuple
    comes back as a list). Errors raised by the function are raised here. More than
    10 nested calls fail with :class:`StackOverflow`.

    Outside an app kernel (in the notebook you are editing), the function registered
    in this kernel runs directly, with the same encoding, so you can try it out.
    """
    if not isinstance(fn_name, str):
        raise TypeError(f"first argument to anvil.server.call() must be as str, got '{type(fn_name).__name__}'")
    runtime = _runtime.active()
    if runtime is not None:
        return runtime.call(fn_name, args, kwargs)
    return _call_locally(fn_name, args, kwargs)


def _call_locally(fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    registration = _registry.functions.get(fn_name)
    if registration is None:
        raise NoServerFunctionError(f'No server function matching "{fn_name}" has been registered')
    _registry.check_caller(registration)
    sent = wire.encode({"args": list(args), "kwargs": kwargs})
    received = wire.decode(sent.message, sent.objects, sent.media)
    result = registration.function(*received["args"], **received["kwargs"])
    returned = wire.encode({"response": result})
    return wire.decode(returned.message, returned.objects, returned.media)["response"]


@overload
def portable_class(cls: C, /, name: str | None = None) -> C: ...
@overload
def portable_class(cls: str | None = None, /, name: str | None = None) -> Callable[[C], C]: ...
def portable_class(cls: Any = None, /, name: str | None = None) -> Any:
    """Make a class's instances portable: they can be arguments and return values.

    ``@server.portable_class`` names it ``module.Class``; ``@server.portable_class("name")``
    names it explicitly. By default an instance travels as its ``__dict__``; define
    ``__serialize__(self, info)`` and ``__deserialize__(self, data, info)`` (or the
    classmethod ``__new_deserialized__(cls, data, info)``) to choose what travels.
    """
    if isinstance(cls, str) or cls is None:
        explicit = name if cls is None else cls

        def decorate(klass: C) -> C:
            return wire.register_portable_class(klass, explicit)  # type: ignore[return-value]

        return decorate
    return wire.register_portable_class(cls, name)


serializable_type = portable_class


# -- background tasks -----------------------------------------------------------------------


@overload
def background_task(fn_or_name: F, /) -> F: ...
@overload
def background_task(fn_or_name: str | None = None, /) -> Callable[[F], F]: ...
def background_task(fn_or_name: Any = None, /) -> Any:
    """Make a function a background task, launched with :func:`launch_background_task`.

    ``@server.background_task`` or ``@server.background_task("name")``. A task runs on a
    kernel of its own, in its own session, for as long as it needs (no call timeout),
    and reports progress through :data:`task_state`. The function is returned unchanged.
    """
    if isinstance(fn_or_name, str) or fn_or_name is None:
        explicit = fn_or_name

        def decorate(fn: F) -> F:
            _registry.register(explicit or fn.__name__, fn, kind=_BACKGROUND_TASK)
            return fn

        return decorate
    _registry.register(fn_or_name.__name__, fn_or_name, kind=_BACKGROUND_TASK)
    return fn_or_name


def scheduled(
    spec: str | Mapping[str, Any],
    *,
    tz: str = "UTC",
    misfire: Literal["skip", "run_once"] = "run_once",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Callable[[F], F]:
    """Run a background task on a schedule, whatever users do. Stack it on the task::

        @server.scheduled("every day at 09:00", tz="Europe/Paris")
        @server.background_task
        def morning_report():
            ...

    Each run launches the task as :func:`launch_background_task` would, with ``args`` and
    ``kwargs``; inside it ``server.context`` says a schedule launched it. A run is skipped
    while the schedule's previous run is still going (never two at once).

    ``spec`` is one of:

    * a phrase: ``"every 30 seconds"``, ``"every 10 minutes"``, ``"every hour"``,
      ``"every hour at :15"``, ``"every day at 09:00"``, ``"every monday at 08:30"``,
      ``"every weekday at 07:00"``, ``"every 2 weeks on friday at 17:00"``,
      ``"every month on day 1 at 06:00"`` (the ``schedule`` package's ``every(10).minutes``
      and ``every().monday.at("08:30")``, written as words);
    * a cron expression of 5 fields (minute hour day-of-month month day-of-week):
      ``"*/5 * * * *"``, ``"0 9 * * mon-fri"``;
    * Anvil's ``time_spec`` dict: ``{"every": "day", "n": 1, "at": {"hour": 3, "minute": 0}}``.

    ``tz``: the IANA time zone its times are read in (``"Europe/Paris"``,
    ``"America/New_York"``; default ``"UTC"``). Daylight saving is handled: a time the clocks
    skip runs once, just after the jump; a time they repeat runs once, the first time.

    ``misfire``: what happens to runs missed while the server was down. ``"run_once"`` (the
    default): one run at start-up if the latest missed time is recent (within the server's
    grace period, an hour by default), never a burst. ``"skip"``: none, as in Anvil.

    ``args`` and ``kwargs``: the task's arguments at every run, portable values as for a
    server call (datetimes and portable classes too; no Media: they are kept with the
    schedule). Default: none.

    ``name``: tells apart several schedules of one task (default: the task's name)::

        @server.scheduled("every weekday at 08:00", name="weekdays", args=("short",))
        @server.scheduled("every sunday at 10:00", name="sundays", args=("full",))
        @server.background_task
        def digest(kind):
            ...

    Below ``@server.background_task`` works too. Mistakes never stop the cell or the app:
    a spec that does not parse, a zone that does not exist, a function that is not a
    background task, two schedules of one name are listed with the app's load problems
    (the admin API's ``anvil/api/apps``), with a valid example; the other schedules run.
    Apps ported from Anvil can keep their list instead, unchanged, in the notebook's
    metadata (``metadata.jupyter_anvil.scheduled_tasks``: ``task_name``, ``job_id`` and
    ``time_spec`` as in ``anvil.yaml``; UTC). The function is returned unchanged.
    """
    if not isinstance(spec, (str, Mapping)) and hasattr(spec, "__call__"):  # noqa: B004 - callable() is ours
        # a bare @server.scheduled: the function came as the spec; it stays the function
        if _schedules_heard():
            _noted(_registry.schedule(spec, spec, name=name))
        return spec  # type: ignore[return-value]

    def decorate(fn: F) -> F:
        if _schedules_heard():
            _noted(_registry.schedule(fn, spec, tz=tz, misfire=misfire, args=args, kwargs=kwargs, name=name))
        return fn

    return decorate


def _schedules_heard() -> bool:
    """Whether a schedule declared now reaches a scheduler: an app kernel reports its
    schedules with the load of the server cells; after that load one would be lost, so it
    is refused, and stderr (the app log) says so."""
    if _runtime.active() is not None and _registry.loading_cell is None:
        print(
            "Warning: @server.scheduled has an effect only in the server cells, as the app loads: "
            "this schedule is ignored",
            file=sys.stderr,
        )
        return False
    return True


def _noted(entry: _registry.ScheduleEntry) -> None:
    """In the notebook being edited (no app kernel) nothing reports a schedule's problem
    but this warning; an app kernel reports it with the load."""
    if entry.problem is not None and _runtime.active() is None:
        print(f"Warning: @server.scheduled: {entry.problem}", file=sys.stderr)


def launch_background_task(task_name: str, *args: Any, **kwargs: Any) -> Task:
    """Start the background task ``task_name`` with these arguments; returns its :class:`Task`.

    The task starts at once if the app runs fewer tasks than its limit, else it waits
    its turn in launch order. Browsers cannot launch tasks.
    """
    return call(f"{_TASKS}launch", task_name, *args, **kwargs)  # type: ignore[no-any-return]


def get_background_task(task_id: str) -> Task:
    """The :class:`Task` with this id; :class:`BackgroundTaskNotFound` if there is none."""
    return call(f"{_TASKS}get", task_id)  # type: ignore[no-any-return]


def list_background_tasks() -> list[Task]:
    """This app's background tasks, newest first (running and recently finished)."""
    return call(f"{_TASKS}list")  # type: ignore[no-any-return]


@portable_class(_TASK_TYPE)
class Task:
    """A launched background task. Return it to a browser to let a page follow it (a
    browser can read it but not kill it)."""

    def __init__(self, task_id: str, name: str) -> None:
        self._id, self._name = task_id, name

    def __serialize__(self, info: Any) -> dict[str, str]:
        return {"id": self._id, "name": self._name}

    @classmethod
    def __new_deserialized__(cls, data: dict[str, str], info: Any) -> Task:
        return cls(data["id"], data["name"])

    def __repr__(self) -> str:
        return f"<Task {self._name} {self._id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def _record(self) -> _TaskRecordReply:
        return call(f"{_TASKS}record", self._id)  # type: ignore[no-any-return]

    def get_id(self) -> str:
        """The task's id."""
        return self._id

    def get_task_name(self) -> str:
        """The name the task was registered under."""
        return self._name

    def get_start_time(self) -> Any:
        """When the task was launched (a timezone-aware ``datetime``)."""
        return self._record()["launched"]

    def get_termination_status(self) -> str | None:
        """``None`` while it runs (or waits its turn), then ``"completed"``, ``"failed"``,
        ``"killed"`` or ``"missing"`` (the server stopped while it ran)."""
        status = self._record()["status"]
        return status if _is_finished(status) else None

    def get_status(self) -> str:
        """Where the task is: ``"queued"``, ``"running"``, or how it ended (an addition to Anvil)."""
        return str(self._record()["status"])

    def is_running(self) -> bool:
        """True until the task has ended (also while it waits its turn)."""
        return self._record()["status"] in _UNFINISHED

    def is_completed(self) -> bool:
        """True once it completed; False while it runs. Raises :class:`BackgroundTaskKilled`
        if it was killed, the task's own exception if it failed, and :class:`InternalError`
        if it went missing."""
        record = self._record()
        _raise_for(record)
        return bool(record["status"] == "completed")

    def get_error(self) -> None:
        """Raise the task's exception if it failed; else return ``None``."""
        record = self._record()
        if record["status"] == "failed":
            _raise_for(record)

    def get_return_value(self) -> Any:
        """What the task returned (``None`` while it runs); raises its exception if it failed."""
        record = self._record()
        if record["status"] == "failed":
            _raise_for(record)
        return record.get("result") if record["status"] == "completed" else None

    def get_state(self) -> dict[str, Any]:
        """The task's ``task_state``: live while it runs, final once it has ended."""
        return self._record().get("state") or {}

    def kill(self) -> None:
        """Stop the task: its last state is kept and its status becomes ``"killed"``."""
        call(f"{_TASKS}kill", self._id)


def _raise_for(record: _TaskRecordReply) -> None:
    status = record["status"]
    if status == "killed":
        raise BackgroundTaskKilled("The background task was killed.")
    if status == "failed":
        raise _errors.from_wire(
            record.get("error") or {"type": "anvil.server.InternalError", "message": "The background task failed"}
        )
    if status == "missing":
        raise InternalError("The background task failed (mia).")


class _TaskStateProxy(MutableMapping[str, Any]):
    """``server.task_state``: inside a background task, a dict of portable values (no
    Media) that whoever holds the :class:`Task` sees through ``get_state()``, live."""

    def _state(self) -> dict[str, Any]:
        frame = _context.current()
        if frame is None or frame.task_state is None:
            raise Exception("Cannot access anvil.server.task_state outside a background task")
        return frame.task_state

    def __getitem__(self, key: str) -> Any:
        return self._state()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state())

    def __len__(self) -> int:
        return len(self._state())

    def __repr__(self) -> str:
        return repr(self._state())


task_state = _TaskStateProxy()


class _SessionProxy(MutableMapping[str, Any]):
    """``server.session``: the session of the call in progress, a dict of portable values.

    It is restored before each call, on whichever kernel serves it, and saved after it,
    so a value stored in one call is there in the next call of the same session (the
    same browser window, HTTP client, background task or inbound email). Media cannot
    be stored. Sessions expire after 30 idle minutes by default.

    Outside a call (in the notebook you are editing) it is a plain dict, to try things.
    """

    _notebook = SessionData("notebook", {})

    def _data(self) -> SessionData:
        frame = _context.current()
        if frame is None or frame.session is None:
            return self._notebook
        return frame.session

    @property
    def session_id(self) -> str | None:
        """The session's public id (not its secret token)."""
        return self._data().session_id

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return repr(self._data())


session = _SessionProxy()


def get_session_id() -> str | None:
    """The id of the current session; the session is stored now even if it holds no data."""
    data = session._data()
    data.persist_requested = True
    return data.session_id


class _CookieProxy:
    """One of ``server.cookies.local`` / ``server.cookies.shared`` for the call in progress.

    ``c[k]``, ``c[k] = v`` (expires in 30 days), ``del c[k]``, ``c.get(k, default)``,
    ``c.set(timeout_days=30, **values)``, ``c.clear()``. Values are portable types
    (not Media), kept in an encrypted HttpOnly browser cookie of at most 4000
    characters (else :class:`CookieError` "Cookie too big"). Only calls that come from
    a web browser have cookies; elsewhere every use raises :class:`CookieError`.
    ``local`` belongs to this app on this server; ``shared`` to every app under the
    server's shared cookie domain.
    """

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def _jar(self) -> CookieJar:
        frame = _context.current()
        if frame is None or self._kind not in frame.cookies:
            return CookieJar(self._kind, "*", None)
        return frame.cookies[self._kind]

    def __getitem__(self, key: str) -> Any:
        return self._jar()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._jar()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._jar()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._jar()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired."""
        return self._jar().get(key, default)

    def set(self, timeout_days: float = 30, **values: Any) -> None:
        """Set several keys at once, each expiring ``timeout_days`` from now."""
        self._jar().set(timeout_days, **values)

    def clear(self) -> None:
        """Remove every key."""
        self._jar().clear()


class _Cookies:
    """``server.cookies``: ``local`` (this app) and ``shared`` (apps under one domain)."""

    local = _CookieProxy("local")
    shared = _CookieProxy("shared")


cookies = _Cookies()


class _Info:
    """A read-only view of one part of the call context (``client``, a stack frame)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"<{' '.join(f'{k}={v!r}' for k, v in self._fields.items())}>"


class CallContext:
    """What is known about the call in progress (``server.context``), as in Anvil."""

    def _info(self) -> dict[str, Any]:
        frame = _context.current()
        return frame.info if frame is not None else {}

    @property
    def type(self) -> str:
        """Where this code runs: ``"server_module"`` in an app kernel."""
        return "server_module" if _runtime.active() is not None else "notebook"

    @property
    def app(self) -> str | None:
        """The name of the app this kernel serves (an addition to Anvil's context)."""
        runtime = _runtime.active()
        return runtime.app if runtime else None

    @property
    def client(self) -> _Info | None:
        """Who started the session: ``.type`` (``"browser"``, ``"http"``, ``"uplink"``,
        ``"background_task"``, ``"email"``), ``.ip`` and ``.location`` (``None`` here)."""
        client = self._info().get("client")
        return _Info(client) if client else None

    @property
    def remote_caller(self) -> _Info | None:
        """The immediate caller: ``.type`` (``"browser"``, ``"http"``, ``"server_module"``,
        …) and ``.is_trusted`` (True only for server code)."""
        caller = self._info().get("remote_caller")
        return _Info(caller) if caller else None

    @property
    def background_task_id(self) -> str | None:
        """The id of the background task this code runs in, else ``None``."""
        return self._info().get("background_task_id")

    @property
    def call_stack(self) -> list[_Info]:
        """The chain of callers, outermost first."""
        return [_Info(f) for f in self._info().get("call_stack", [])]

    @property
    def call_id(self) -> str | None:
        """The id of the server call running on this thread, as tagged in the app log."""
        frame = _context.current()
        return frame.call_id if frame else None


context = CallContext()
