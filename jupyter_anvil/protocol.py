"""The contract between the host and app kernels, in one place: the comm target, the op
names, the message shapes, the kinds of registration, the reserved names, the limits,
and the protocol version a kernel announces when the comm opens.

Shared by both sides, like ``wire`` and ``errors``: it imports neither host nor kernel
code (nor tornado), so a kernel in another environment needs only this package.

Raise :data:`PROTOCOL_VERSION` whenever a message changes shape or meaning: a host refuses
a kernel that speaks another version (see :func:`version_mismatch`) rather than misread it.

A conversation, once the runtime is installed in a kernel::

    host                                      kernel
    comm_open {op: open, protocol}     ──▶
                                       ◀──    hello {protocol}
    load {req, notebook, cells}        ──▶    (runs the server cells)
                                       ◀──    reply {req, registrations | error}
    call {req, call_id, kind?, ...}    ──▶    (runs the function on a worker thread)
                                       ◀──    log {call_id, stream, text} ...
                                       ◀──    call {req, parent, ...}   (a nested server.call)
    reply {req, response | error}      ──▶
                                       ◀──    task_state {task_id, state} ...  (background tasks)
    get_task_state {req, task_id}      ──▶
                                       ◀──    reply {req, state}
                                       ◀──    reply {req, response | error, session, cookies, ...}

Requests carry a ``req`` id made by their sender (``h<n>`` from the host, ``k<n>`` from
the kernel); the ``reply`` answering one carries the same ``req``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypedDict, get_args

from .errors import WireError

#: the Jupyter comm target the kernel's runtime registers and the host opens
COMM_TARGET: Final = "jupyter_anvil"

#: the version of this protocol. Not ``Final``: a test plays a kernel of another version by
#: setting it before the runtime starts, so the runtime reads it when it says hello.
PROTOCOL_VERSION: int = 1

#: nested ``server.call`` calls deeper than this fail with ``anvil.server.StackOverflow``
#: (checked by the kernel before sending, and by the host for a kernel that does not)
MAX_CALL_DEPTH: Final = 10

# -- reserved names ------------------------------------------------------------------------
#: names under this prefix are answered by the host itself (its table of host services),
#: never by server code: one the host does not know is no function at all
RESERVED_PREFIX: Final = "anvil.private."
#: the background tasks' host services: ``launch``, ``get``, ``list``, ``record``, ``kill``
BACKGROUND_TASKS_PREFIX: Final = "anvil.private.background_tasks."
#: the portable type name a ``server.Task`` travels under (as in Anvil)
TASK_TYPE: Final = "anvil.private.BackgroundTask"

# -- email -------------------------------------------------------------------------------------
#: the host service ``email.send`` calls (server code only: a browser is refused). Its
#: kwargs are :class:`MailToSend`; it answers ``{"message_id": str}`` once the relay (or
#: the outbox) took the message, or fails with ``anvil.email.SendFailure``.
EMAIL_SEND: Final = "anvil.private.email.send"
#: the largest message, in bytes as sent (headers and encoded parts), either way: ``email.send``
#: refuses to hand the host a bigger one (the host checks again), and the inbound server's
#: default limit (it answers 552 to a bigger one, before reading it whole)
MAX_MESSAGE_BYTES: Final = 25 * 1024 * 1024
#: the name an app's ``@email.handle_message`` is registered under (kind ``email_handler``):
#: an app has one handler, the last one registered
EMAIL_HANDLER_NAME: Final = "handle_message"
#: the call-stack frame type and client type of a handler run (Anvil's)
EMAIL_FRAME_TYPE: Final = "email_server"
EMAIL_CLIENT_TYPE: Final = "email"

# -- background tasks' statuses ----------------------------------------------------------------
#: where a background task is: waiting its turn (``queued``), ``running``, or how it ended.
#: ``missing``: the server running it stopped or went away before it ended. The host stores
#: and reports these (the task record, the admin API); ``server.Task`` reads them. Code
#: spells them as strings typed by this: mypy refuses a misspelt one, assigned or compared.
TaskStatus = Literal["queued", "running", "completed", "failed", "killed", "missing"]
TASK_STATUSES: Final[tuple[TaskStatus, ...]] = get_args(TaskStatus)
#: not ended yet: a server may still change these
UNFINISHED_TASK_STATUSES: Final[tuple[TaskStatus, ...]] = ("queued", "running")
#: ended: the record stays as it is (until it is pruned)
FINISHED_TASK_STATUSES: Final[tuple[TaskStatus, ...]] = ("completed", "failed", "killed", "missing")


def is_finished(status: object) -> bool:
    """True if ``status`` says the task has ended (anything else, unknown values too: False)."""
    return status in FINISHED_TASK_STATUSES


class TaskRecordReply(TypedDict):
    """The value ``anvil.private.background_tasks.record`` answers (the host builds it from
    the task record), as a ``server.Task`` decodes it: all it needs for any of its methods."""

    id: str
    name: str
    status: TaskStatus
    launched: dt.datetime | None  # timezone-aware (UTC)
    started: dt.datetime | None
    ended: dt.datetime | None
    error: WireError | None  # type and message (and trace) of a failure or a kill
    state: Any  # the task_state: live while it runs, final once it ended
    result: Any  # what it returned, once completed


# -- kinds of registration -------------------------------------------------------------------
#: what a server cell can register
Kind = Literal["callable", "background_task", "email_handler", "schedule"]
CALLABLE: Final[Kind] = "callable"
BACKGROUND_TASK: Final[Kind] = "background_task"
EMAIL_HANDLER: Final[Kind] = "email_handler"
SCHEDULE: Final[Kind] = "schedule"
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

#: how the app log names what runs, by kind: ``task:count_to`` is the background task
#: ``count_to``, ``count_to`` the callable
_LOG_PREFIX: Final[dict[Kind, str]] = {
    CALLABLE: "",
    BACKGROUND_TASK: "task:",
    EMAIL_HANDLER: "email:",
    SCHEDULE: "schedule:",
}


def log_name(kind: Kind, name: str) -> str:
    """The name the app log shows for ``name`` of ``kind`` (the kinds share one column)."""
    return _LOG_PREFIX[kind] + name


# -- ops --------------------------------------------------------------------------------------
OpenOp = Literal["open"]  # host -> kernel, the comm_open's data
HelloOp = Literal["hello"]  # kernel -> host, first thing once the comm is open
LoadOp = Literal["load"]  # host -> kernel: run the server cells
CallOp = Literal["call"]  # both ways: a server call (from the kernel: a nested server.call)
GetTaskStateOp = Literal["get_task_state"]  # host -> kernel: a running task's state now
ReplyOp = Literal["reply"]  # both ways: the answer to a request, by its ``req``
LogOp = Literal["log"]  # kernel -> host: output a call printed
TaskStateOp = Literal["task_state"]  # kernel -> host: a running task's state changed

OPEN: Final[OpenOp] = "open"
HELLO: Final[HelloOp] = "hello"
LOAD: Final[LoadOp] = "load"
CALL: Final[CallOp] = "call"
GET_TASK_STATE: Final[GetTaskStateOp] = "get_task_state"
REPLY: Final[ReplyOp] = "reply"
LOG: Final[LogOp] = "log"
TASK_STATE: Final[TaskStateOp] = "task_state"

HOST_OPS: Final = frozenset({OPEN, LOAD, CALL, GET_TASK_STATE, REPLY})
KERNEL_OPS: Final = frozenset({HELLO, CALL, REPLY, LOG, TASK_STATE})


# -- message shapes ----------------------------------------------------------------------------
# What each side sends. A receiver reads with ``.get`` and checks types all the same: a
# message is only as trustworthy as the code at the other end (server code shares its kernel).


class Registration(TypedDict):
    """One thing the server cells registered."""

    name: str
    kind: Kind


class OpenMessage(TypedDict):
    op: OpenOp
    protocol: int  # the host's version (informative: the host is the one that checks)


class HelloMessage(TypedDict):
    op: HelloOp
    protocol: int


class Cell(TypedDict):
    index: int  # the cell's number in the notebook, for error messages and tracebacks
    source: str


class LoadSettings(TypedDict, total=False):
    """What server code may know of the host's configuration (never a secret)."""

    #: the domain of the default sender, ``no-reply@<mail_from_domain>``
    mail_from_domain: str
    #: the largest message ``email.send`` hands the host, in bytes (absent: MAX_MESSAGE_BYTES)
    mail_max_bytes: int


class LoadRequest(TypedDict):
    op: LoadOp
    req: str
    notebook: str
    cells: list[Cell]
    call_id: str  # the app log's id for what the cells print
    settings: LoadSettings


class LoadError(TypedDict, total=False):
    """A wire error (``type``, ``message``, ``trace``) with where the cell failed."""

    type: str
    message: str
    trace: list[list[Any]]
    cell: int
    first_line: str
    line: int | None


class EncodedValue(TypedDict):
    """One value as ``wire.encode_value`` makes it: JSON with its ``objects`` (no Media).
    The host keeps and forwards it without decoding (see ``wire.embed``)."""

    v: Any
    objects: list[dict[str, Any]]


class _ScheduleDeclarationFields(TypedDict):
    name: str | None  # as ``name=`` gave it, else the task's name (None: neither is known)
    task: str | None  # the background task it launches (None: the function is not one)
    spec: str | dict[str, Any] | None  # as written, checked by the host (None with a problem)
    tz: str
    misfire: str
    args: list[EncodedValue]
    kwargs: dict[str, EncodedValue]
    cell: int | None  # the server cell that declared it


class ScheduleDeclaration(_ScheduleDeclarationFields, total=False):
    """One ``@server.scheduled`` a server cell ran, in the load reply. The kernel checks
    only types and encodes the arguments; the spec and zone are checked by the host. A
    use the kernel found wrong still comes, with ``problem`` saying what is wrong (and a
    valid example), so the host lists it with the app's load problems."""

    problem: str


class LoadReply(TypedDict, total=False):
    op: ReplyOp
    req: str | None
    registrations: list[Registration]  # when every cell ran
    error: LoadError  # else: the cell that failed
    traceback: str  # for the author's app log, never a caller
    schedules: list[ScheduleDeclaration]  # every ``server.scheduled`` the cells ran (absent: none)


class SessionOut(TypedDict):
    """A top-level call's session, as the host hands it to the kernel."""

    id: str | None
    data: dict[str, Any]


class SessionChanges(TypedDict):
    """What a call changed in its session, for the host to store."""

    changed: dict[str, Any]
    deleted: list[str]
    persist: bool


class CallMessage(TypedDict, total=False):
    """A server call. From the host: ``call_id`` and ``kind`` name what runs, and a
    top-level call brings ``session``, ``cookies`` and ``context``. From the kernel (a
    nested ``server.call``): ``parent`` names the calling call, whose session it shares."""

    op: CallOp
    req: str
    command: str
    kind: Kind  # absent: a callable
    call_id: str
    depth: int
    args: Any
    kwargs: Any
    objects: list[dict[str, Any]]
    media: list[str]  # ids of the Media in the message's buffers, in order
    parent: str | None
    session: SessionOut
    cookies: dict[str, dict[str, Any]] | None  # None: not a browser (no cookies)
    context: dict[str, Any] | None


class CallReplyMessage(TypedDict, total=False):
    """The answer to a call: ``response`` (with its ``objects`` and Media) or ``error``.
    From the kernel it also brings what the call changed and, for the author, the traceback."""

    op: ReplyOp
    req: str | None
    response: Any
    objects: list[dict[str, Any]]
    media: list[str]
    error: WireError
    traceback: str
    session: SessionChanges
    cookies: dict[str, dict[str, Any]]
    task_state: dict[str, Any] | None  # a background task's final state


class GetTaskStateRequest(TypedDict):
    op: GetTaskStateOp
    req: str
    task_id: str


class TaskStateReply(TypedDict):
    op: ReplyOp
    req: str | None
    state: dict[str, Any] | None


class LogMessage(TypedDict):
    op: LogOp
    call_id: str
    stream: str  # stdout, stderr
    text: str


class TaskStateMessage(TypedDict):
    op: TaskStateOp
    task_id: str
    state: Any


class MailToSend(TypedDict):
    """The kwargs of :data:`EMAIL_SEND`: the message the kernel built, and its envelope.
    ``raw`` is the whole RFC 5322 message (Media ``message/rfc822``), with no ``Bcc``
    header; ``recipients`` is every envelope recipient (to, cc and bcc)."""

    raw: Any  # Media
    envelope_from: str
    recipients: list[str]


class MailEnvelope(TypedDict):
    from_address: str  # the SMTP ``MAIL FROM`` ("" for a bounce)
    recipient: str  # the ``RCPT TO`` that routed it to the app


class DkimResult(TypedDict):
    valid_from_sender: bool  # a valid whole-message signature whose d= is the From domain
    domains: list[str]  # the d= of every valid whole-message signature


class InboundMail(TypedDict):
    """The one argument the host calls an app's email handler with (kind
    ``email_handler``, command :data:`EMAIL_HANDLER_NAME`); the kernel makes the
    ``email.Message`` from it. ``raw`` is the message as received (Media ``message/rfc822``)."""

    mail_id: str  # its record in the store (``anvil/api/mail/<id>``)
    raw: Any  # Media
    envelope: MailEnvelope
    dkim: DkimResult


# -- what a kernel registered, by kind -------------------------------------------------------------
class Registered:
    """The names a kernel's server cells registered, kept by kind: a background task is
    not a function a caller can call, and the other way round."""

    __slots__ = ("_names",)

    def __init__(self, names: Mapping[Kind, Iterable[str]] | None = None) -> None:
        given = names or {}
        self._names: dict[Kind, frozenset[str]] = {k: frozenset(given.get(k, ())) for k in KINDS}

    def of(self, kind: Kind) -> frozenset[str]:
        return self._names[kind]

    @property
    def callables(self) -> frozenset[str]:
        return self._names[CALLABLE]

    @property
    def background_tasks(self) -> frozenset[str]:
        return self._names[BACKGROUND_TASK]

    @classmethod
    def from_wire(cls, entries: object) -> Registered:
        """Read a load reply's ``registrations``; entries of unknown kinds or shapes are
        left out (they name nothing this host could serve)."""
        names: dict[Kind, set[str]] = {}
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            name, kind = entry.get("name"), entry.get("kind")
            if isinstance(name, str) and kind in KINDS:
                names.setdefault(kind, set()).add(name)
        return cls(names)

    def to_wire(self) -> list[Registration]:
        return [{"name": n, "kind": k} for k in KINDS for n in sorted(self._names[k])]

    def describe(self) -> str:
        """``callables ['a', 'b'], background_tasks ['t']``, for the app log."""
        return ", ".join(f"{k}s {sorted(v)}" for k, v in self._names.items() if v) or "nothing"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registered) and self._names == other._names

    def __hash__(self) -> int:
        return hash(tuple(self._names.values()))

    def __repr__(self) -> str:
        return f"<Registered {self.describe()}>"


# -- the version handshake ------------------------------------------------------------------------
def version_mismatch(kernel_version: object, host_version: int | None = None) -> str | None:
    """Why a host must refuse a kernel whose hello said ``kernel_version``, or None if it
    speaks the host's own version."""
    host_version = PROTOCOL_VERSION if host_version is None else host_version
    is_number = isinstance(kernel_version, int) and not isinstance(kernel_version, bool)
    if is_number and kernel_version == host_version:
        return None
    spoken = kernel_version if is_number else "?"
    return (
        f"the app's kernel speaks jupyter-anvil protocol {spoken}, this server speaks {host_version}: "
        "install the same jupyter-anvil version in the kernel's environment"
    )
