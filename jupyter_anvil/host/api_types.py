"""The admin API's JSON, in one place: one type per response and per feed event.

The JupyterLab panel's TypeScript types are written from this module, and
``tests/test_api_shapes.py`` checks every route's answer against its type on a real
server. Change a response here first, then in its handler (mypy checks the handlers
build these types).

Every route is under the Jupyter server's base URL and needs Jupyter's auth (a token,
or a logged-in user allowed the ``anvil`` resource); none is open to app callers.

==========================================================  ==================================
route                                                       answer
==========================================================  ==================================
``GET  anvil/api/apps``                                     :class:`AppsList` (:class:`AppsOff`
                                                            with ``--AnvilApp.serve_apps=False``)
``POST anvil/api/apps/<app>/reload``                        202 :class:`ListedApp` (``loading``):
                                                            its notebook read and loaded again
``POST anvil/api/apps/<app>/requirements``                  :class:`RequirementsList` (body:
                                                            :class:`RequirementsChange`)
``GET  anvil/api/envs``                                     :class:`EnvList`
``GET  anvil/api/envs/<id>/log?offset=``                    :class:`EnvLog`
``GET  anvil/api/logs?app=&since=&limit=``                  :class:`LogPage`
``GET  anvil/api/tasks?app=&status=&name=&limit=&before=``  :class:`TaskPage`
``GET  anvil/api/tasks/<id>``                               :class:`TaskDetail`
``GET  anvil/api/tasks/<id>/output?offset=``                :class:`TaskOutput`
``GET  anvil/api/tasks/<id>/media/<n>``                     the bytes of a Media the task
                                                            returned, as a download (see
                                                            :data:`MediaLink`)
``POST anvil/api/tasks/<id>/kill``                          :class:`TaskSummary`
``WS   anvil/api/feed``                                     one :data:`FeedEvent` per message,
                                                            :class:`HelloEvent` first
``WS   anvil/api/tasks/feed``                               the feed as it was: one
                                                            :data:`TaskFeedEvent` per message
``GET  anvil/api/schedules?app=``                           :class:`ScheduleList`
``POST anvil/api/schedules``                                201 :class:`ScheduleInfo` (body:
                                                            :class:`ScheduleCreate`)
``GET  anvil/api/schedules/<id>``                           :class:`ScheduleInfo`
``PATCH anvil/api/schedules/<id>``                          :class:`ScheduleInfo` (body:
                                                            :class:`ScheduleChange`)
``DELETE anvil/api/schedules/<id>``                         204, no body (an API-made schedule)
``POST anvil/api/schedules/<id>/run``                       :class:`ScheduleRunInfo` (no body)
``GET  anvil/api/schedules/<id>/runs?limit=&before=``       :class:`ScheduleRunPage`
``GET  anvil/api/mail?app=&box=&status=&limit=&before=``    :class:`MailPage`
``GET  anvil/api/mail/<id>``                                :class:`MailDetail`
``GET  anvil/api/mail/<id>/raw``                            the message as sent or received
                                                            (``message/rfc822``, a ``.eml``)
``GET  anvil/api/mail/<id>/parts/<n>``                      the bytes of an attachment or
                                                            inline part, as a download
``DELETE anvil/api/mail/<id>``                              204, no body
a refused request (4xx) on the JSON routes                  :class:`AdminError`
==========================================================  ==================================

Times are seconds since the epoch (floats). Task states and return values are shown as
plain JSON (see readable.py): ISO dates, big numbers as strings, Media as a
:data:`MediaLink`, a portable class instance as its data with ``__type__`` naming it.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from ..protocol import TaskStatus
from .apps import AppStatus
from .envs.service import EnvStatus
from .logs import LogStream
from .mail.records import MailBox, MailStatus
from .schedules.records import EventKind, MisfirePolicy, RunOutcome, ScheduleSource

# -- anvil/api/apps ------------------------------------------------------------------------------


class PoolStats(TypedDict):
    """An app's kernel pool now."""

    kernels: int  # kernels serving calls (started and loaded)
    starting: int  # kernels being started
    busy: int  # kernels running at least one call
    in_flight: int  # calls running, over all kernels
    queued: int  # calls waiting for a kernel
    task_spares: int  # warm kernels kept for background tasks


class AppEnv(TypedDict):
    """The Python environment of an app: the one being built for it (while one is), else
    the one its served version runs in (``anvil/api/envs`` lists them)."""

    id: str  # anvil/api/envs/<id>/log: its build's output
    status: EnvStatus  # building, ready or failed


class ErrorLocation(TypedDict):
    """Where an app's error is in its notebook, so a panel can open it there."""

    notebook: str  # relative to the server root
    #: the failing server cell's index among ALL the notebook's cells (0-based: markdown and
    #: untagged cells count); messages and tracebacks count from 1, so index 2 is
    #: "notes.ipynb cell 3" (wire.cell_file); None when the
    #: notebook itself is at fault (its metadata, unreadable)
    cell: int | None
    line: int | None  # 1-based, within that cell (None if unknown)


class AppInfo(TypedDict):
    """One app (a notebook with cells tagged ``server``)."""

    name: str  # the app's name: its URL is anvil/apps/<name>/
    notebook: str | None  # its notebook, relative to the server root (None until first read)
    #: building (its environment, before its first version loads), loading, ready, error or
    #: stopped; a served app whose new environment builds stays ready (see ``env``)
    status: AppStatus
    error: str | None  # everything wrong with it now (a failed reload, its notebook, its kernels)
    #: where that error is (None: no error, or one of no cell: an environment's build...)
    error_location: ErrorLocation | None
    functions: list[str]  # the server functions callers may call, sorted
    background_tasks: list[str]  # the background tasks its server code may launch, sorted
    pool: PoolStats | None  # None while it has no pool (not loaded, or stopped)
    call_timeout: float | None  # seconds a call may run (None until its notebook is read)
    url: str  # the app's page (absolute path, with the server's base URL)
    env: AppEnv | None  # None: it runs on the server's default kernel
    requirements: list[str]  # the Python packages it asks for (as its notebook or file reads)
    requirements_source: Literal["metadata", "file"] | None  # where they were read; None: none asked
    requirements_note: str | None  # e.g. that the metadata's list wins over a requirements file


class RequirementsChange(TypedDict, total=False):
    """The body of ``POST anvil/api/apps/<app>/requirements``: requirement strings to add
    (``"requests>=2.31"``; one of the same project replaces it) and to remove (by project
    name, or a requirement naming it). Written into ``metadata.jupyter_anvil.requirements``;
    the next scan of the notebooks sees the save and rebuilds."""

    add: list[str]
    remove: list[str]


class RequirementsList(TypedDict):
    """The answer of ``POST anvil/api/apps/<app>/requirements``: the notebook's list now."""

    app: str
    notebook: str
    requirements: list[str]


# -- anvil/api/envs ------------------------------------------------------------------------------


class EnvInfo(TypedDict):
    """One Python environment: a venv layered over the server's, holding an app's requirements."""

    id: str  # 16 hex digits: a hash of what was asked (requirements, python, installer options, platform)
    requirements: list[str]
    python: str | None  # None: the server's own version
    status: EnvStatus  # building, ready or failed
    error: str | None  # a failed build's installer message
    size_bytes: int | None  # on disk (None until built)
    created: float | None
    last_used: float | None  # when an app last started kernels in it
    apps: list[str]  # the apps serving with it now


class EnvList(TypedDict):
    """``GET anvil/api/envs``: every environment this server knows."""

    envs: list[EnvInfo]


class EnvLog(TypedDict):
    """``GET anvil/api/envs/<id>/log?offset=N``: the installer's output from ``offset`` on;
    pass the returned ``offset`` back to tail it."""

    text: str
    offset: int
    building: bool  # False once the build has ended: nothing more will come


class EnvEvent(TypedDict):
    """``anvil/api/tasks/feed``: an environment changed status (building, ready, failed)."""

    type: Literal["env"]
    env: EnvInfo


class EnvOutputEvent(TypedDict):
    """``anvil/api/tasks/feed``: a chunk of an environment's build output."""

    type: Literal["env_output"]
    id: str
    text: str
    #: build.log's offset (UTF-8 bytes, as ``/envs/<id>/log`` counts) AFTER ``text``: a reader
    #: that fetched the log up to N appends only what lies past N, and refetches on a gap
    offset: int


class ListedApp(AppInfo):
    """An app as ``GET anvil/api/apps`` lists it: :class:`AppInfo` and the problems of the
    schedules its served version declares."""

    #: each what is wrong with one ``@server.scheduled`` or ``scheduled_tasks`` metadata entry,
    #: where ("server cell 3: ...", "metadata.jupyter_anvil.scheduled_tasks[0] ...") and a
    #: valid example; the other schedules run (empty while no version is served)
    schedule_problems: list[str]


class NotebookProblem(TypedDict):
    """A notebook that cannot be an app (bad metadata, unreadable, a clashing name)."""

    notebook: str  # the notebook, relative to the server root
    app: str | None  # the app it would be, if that is known
    error: str  # what is wrong


class AppsList(TypedDict):
    """``GET anvil/api/apps``: every app, and the notebooks that cannot be apps."""

    apps: list[ListedApp]
    problems: list[NotebookProblem]


class AppsOff(AppsList):
    """``GET anvil/api/apps`` on a server that serves no apps: both lists are empty."""

    serving: Literal[False]
    message: str  # why, and the option that turns apps on


# -- anvil/api/logs ------------------------------------------------------------------------------


class LogRecord(TypedDict):
    """One record of the app log: what a call printed, a traceback, or a note of the server's."""

    seq: int  # increasing over the whole store (every app, every server): tail with ``since``
    time: float
    app: str
    function: str  # what ran: a function's name, ``task:<name>``, ``(load)``, ``(kernel)``, ``(log)``
    call_id: str  # the call's id ("-" for loading, "" for the server's own notes)
    stream: LogStream  # stdout, stderr, traceback (the author's, never sent to callers), system
    text: str  # at most 64 KiB, with a marker where it was cut


class LogPage(TypedDict):
    """``GET anvil/api/logs?app=NAME&since=SEQ&limit=N``: records after ``since``, oldest
    first, at most ``limit`` (1 to 10000, 1000 by default); pass the last ``seq`` back as
    ``since`` to tail."""

    records: list[LogRecord]


# -- anvil/api/tasks -----------------------------------------------------------------------------


class TaskError(TypedDict):
    """Why a task failed or was killed, as the error its code raised (a wire error)."""

    type: str  # the error's Anvil name (``anvil.server.TimeoutError``) or class name (``ValueError``)
    message: str
    trace: list[Any]  # ``[file, line]`` pairs, innermost last


class TaskSummary(TypedDict):
    """A background task without its bulky parts: an item of a page, the answer to a
    kill, the feed's events."""

    id: str  # 25 characters of a-z and 2-7
    app: str
    name: str  # the background task's registered name
    status: TaskStatus  # queued, running, completed, failed, killed or missing
    launched: float
    started: float | None  # when it took a kernel (None while queued)
    ended: float | None
    error: TaskError | None  # when it failed or was killed
    launched_by: dict[str, Any] | None  # the launching call's context (client, remote_caller, ...)
    output_dropped: int  # characters it printed past the output limit (counted, not kept)
    owner: str | None  # the server instance running it (None on records of older releases)
    schedule_id: str | None  # the schedule that launched it (anvil/api/schedules), else None
    state: Any  # its ``task_state`` in plain JSON: live while it runs, its last once ended


class TaskDetail(TaskSummary):
    """``GET anvil/api/tasks/<id>``: the whole record but its printed output (see
    :class:`TaskOutput`)."""

    traceback: str | None  # the author's traceback of a failure
    result: Any  # what it returned, in plain JSON; Media in it as :data:`MediaLink` (None until completed)


class TaskPage(TypedDict):
    """``GET anvil/api/tasks?app=&status=&name=&limit=50&before=``: tasks newest first,
    filtered by app, status and name, at most ``limit`` (1 to 500)."""

    tasks: list[TaskSummary]
    next: float | None  # the ``before`` of the following page; None on the last


class TaskOutput(TypedDict):
    """``GET anvil/api/tasks/<id>/output?offset=N``: what the task printed from ``offset``
    on; pass the returned ``offset`` back to tail it."""

    text: str
    offset: int  # characters printed so far (the next call's ``offset``)
    dropped: int  # characters printed past the output limit, not kept
    running: bool  # False once it has ended: nothing more will come


class TaskEvent(TypedDict):
    """``anvil/api/tasks/feed`` (WebSocket, server to client only): a task was launched,
    started, changed its state or ended."""

    type: Literal["task"]
    task: TaskSummary


# -- anvil/api/schedules -------------------------------------------------------------------------


class ScheduleInfo(TypedDict):
    """One schedule: a background task launched at set times (in any time zone)."""

    id: str  # stable: a notebook's schedules keep theirs across reloads and restarts
    app: str
    task: str  # the background task it launches
    name: str  # tells two schedules of one task apart (the task's name by default)
    spec: str | dict[str, Any]  # as written: a phrase, a cron line, or Anvil's time_spec object
    description: str  # in words: "every day at 09:00 (Europe/Paris)"
    tz: str  # its IANA time zone
    misfire: MisfirePolicy  # runs missed while no server ran it: "skip", or "run_once" (within the grace period)
    args: list[Any]  # the task's arguments, in plain JSON (as a task's state is shown)
    kwargs: dict[str, Any]
    source: ScheduleSource  # "notebook" (@server.scheduled), "metadata" (scheduled_tasks) or "api"
    paused: bool
    next_run: float | None  # None while paused, or while it has a problem (then it never runs)
    last_run: float | None
    last_status: RunOutcome | None  # what its latest run did: launched, skipped or failed
    last_task_id: str | None  # the task its latest launch started (anvil/api/tasks/<id>)
    problem: str | None  # why it cannot run (a bad spec, a task that is gone), with a valid example
    created: float
    updated: float
    app_loaded: bool  # whether this server serves its app (only then does it run it here)


class ScheduleList(TypedDict):
    """``GET anvil/api/schedules?app=``: every schedule (of ``app``), by app, name and id."""

    schedules: list[ScheduleInfo]


class ScheduleCreate(TypedDict, total=False):
    """The body of ``POST anvil/api/schedules`` (no other field is taken). Required: ``app``
    (served by this server), ``task`` (one of its background tasks) and ``spec``."""

    app: str
    task: str
    spec: str | dict[str, Any]  # "every day at 09:00", "*/5 * * * *", {"every": "hour", "at": {"minute": 15}}
    tz: str  # default "UTC"
    args: list[Any]  # plain JSON values (default none)
    kwargs: dict[str, Any]
    misfire: MisfirePolicy  # default "run_once"
    name: str  # default: the task's name


class ScheduleChange(TypedDict, total=False):
    """The body of ``PATCH anvil/api/schedules/<id>``: at least one field, none null. A
    notebook's (or its metadata's) schedule takes only ``paused``: its notebook says the
    rest. A new spec or zone, or a resume, sets the next run to the first time after now."""

    spec: str | dict[str, Any]
    tz: str
    paused: bool
    misfire: MisfirePolicy


class ScheduleRunInfo(TypedDict):
    """One time a schedule came due (or was run now by request), and what was done."""

    seq: int  # numbered by the database: newer runs have higher numbers (page with ``before``)
    schedule_id: str
    app: str
    due: float  # when it was due
    at: float  # when the scheduler acted
    task_id: str | None  # the task it launched (anvil/api/tasks/<id>), if it launched one
    outcome: RunOutcome  # launched, skipped (its last run still going, or missed) or failed
    reason: str  # why it was skipped or how it failed ("" for a run on time)
    server: str | None  # the server instance that acted


class ScheduleRunPage(TypedDict):
    """``GET anvil/api/schedules/<id>/runs?limit=50&before=<seq>``: runs newest first, at
    most ``limit`` (1 to 1000); the newest ``--AnvilApp.schedule_history`` are kept."""

    runs: list[ScheduleRunInfo]
    next: int | None  # the ``before`` of the following page; None on the last


class ScheduleEvent(TypedDict):
    """``anvil/api/tasks/feed`` (WebSocket): a schedule was made or changed (its next run
    moved on, it was paused...), deleted, or a run of it was recorded."""

    type: Literal["schedule"]
    event: EventKind  # "changed", "deleted" or "run"
    id: str  # the schedule's
    app: str
    schedule: ScheduleInfo | None  # as it is now (None when deleted)
    run: ScheduleRunInfo | None  # the run just recorded (a "run" event's)


# -- mail ----------------------------------------------------------------------------------------


class MailInfo(TypedDict):
    """A message sent or received, without its body (jupyter_anvil/host/mail/records.py)."""

    id: str
    app: str
    box: MailBox  # outbox, sent or inbox
    #: outbox: kept (the outbox transport: never sent), queued (waiting for the relay) or
    #: failed; sent: sent; inbox: received (its handler has not answered), handled,
    #: rejected (5xx) or failed (4xx)
    status: MailStatus
    created: float
    updated: float
    message_id: str | None  # the Message-ID header
    envelope_from: str  # SMTP MAIL FROM ("" for a bounce)
    recipients: list[str]  # every RCPT TO (bcc included for mail sent)
    from_header: str
    to_header: str
    subject: str
    size: int  # bytes
    attempts: int  # delivery attempts so far (mail sent through a relay)
    smtp_code: int | None  # the relay's last reply, or the code a sender was answered
    outcome: str  # in words: the relay's reply, the handler's error, why it failed
    next_attempt: float | None  # while queued: when it is tried again
    deadline: float | None  # while queued: when retrying stops
    owner: str | None  # the server instance sending or handling it
    call_id: str | None  # the app log's id of the sending call or the handler's run


class MailPage(TypedDict):
    """``GET anvil/api/mail?app=&box=&status=&limit=50&before=<created>``: newest first, at
    most ``limit`` (1 to 500)."""

    messages: list[MailInfo]
    next: float | None  # the ``before`` of the following page; None on the last


class MailPart(TypedDict):
    """An attachment or inline part; ``url`` downloads its bytes."""

    index: int
    name: str | None
    content_type: str
    size: int
    content_id: str | None  # an inline part's Content-ID (without <>), as ``cid:`` names it
    inline: bool
    url: str


class MailDetail(MailInfo):
    """``GET anvil/api/mail/<id>``: the summary with the message read: every header (name,
    value; in order, values cut at 4000 characters), the first text and html bodies, the
    other parts, and where to download the whole ``.eml``."""

    headers: list[list[str]]
    text: str | None
    html: str | None
    parts: list[MailPart]
    raw_url: str


class MailEvent(TypedDict):
    """``anvil/api/tasks/feed``: a message was stored or changed (queued, sent, handled...)."""

    type: Literal["mail"]
    mail: MailInfo


class MailDeletedEvent(TypedDict):
    """``anvil/api/tasks/feed``: a message was deleted."""

    type: Literal["mail_deleted"]
    id: str
    app: str


# -- the live feed (anvil/api/feed) ---------------------------------------------------------------


class HelloEvent(TypedDict):
    """``anvil/api/feed``: the first message of each connection. After a reconnect a client
    fetches its lists again (through the routes above): what changed while it was away is
    not sent again."""

    type: Literal["hello"]
    server: str  # this server instance's id (another one: a restart, or another server)
    time: float
    #: how many follow each source of events now, this connection included (by source: tasks,
    #: schedules, mail, envs, apps, logs, task_output; the server follows envs itself)
    followers: dict[str, int]


class AppEvent(TypedDict):
    """``anvil/api/feed``: an app's listing changed (its status, error, kernels and their
    busy and idle counts, functions, environment...). At most ~4 a second per app: the
    latest state wins, states in between may not be sent."""

    type: Literal["app"]
    app: ListedApp


class AppRemovedEvent(TypedDict):
    """``anvil/api/feed``: a notebook was deleted, or stopped being an app."""

    type: Literal["app_removed"]
    name: str


class LogsEvent(TypedDict):
    """``anvil/api/feed``: app log records as they are stored (about every 0.25 s), oldest
    first, in ``seq`` order as ``anvil/api/logs`` reads them (at most ~256 KiB of text each)."""

    type: Literal["logs"]
    records: list[LogRecord]


class TaskOutputEvent(TypedDict):
    """``anvil/api/feed``: what a running task printed (batched about every 0.25 s, at most
    256 Ki characters each). ``offset`` is the task's output offset AFTER ``text`` (as
    :class:`TaskOutput`'s): a client that fetched the output up to N appends the event's
    text past N when ``offset - len(text) <= N < offset``, skips it when ``offset <= N``,
    and fetches the output again on a gap (``offset - len(text) > N``). A task's last
    output comes before its end's :class:`TaskEvent`."""

    type: Literal["task_output"]
    id: str
    text: str
    offset: int


#: one message of ``anvil/api/tasks/feed`` (the feed as it was: these kinds only)
TaskFeedEvent = TaskEvent | ScheduleEvent | MailEvent | MailDeletedEvent | EnvEvent | EnvOutputEvent

#: one message of ``anvil/api/feed``. A client more than 8 MiB of messages behind (not
#: reading) is closed with code 1008, "feed reader too slow": it reconnects and fetches again.
FeedEvent = TaskFeedEvent | HelloEvent | AppEvent | AppRemovedEvent | LogsEvent | TaskOutputEvent


# -- values inside states and return values ------------------------------------------------------

#: a Media inside a task's state or return value; ``url`` downloads it
#: (``anvil/api/tasks/<id>/media/<n>``), None where its bytes are not kept (in a state)
MediaLink = TypedDict(
    "MediaLink",
    {
        "__type__": Literal["Media"],
        "content_type": str | None,
        "name": str | None,
        "size": int | None,  # bytes
        "url": str | None,
    },
)

#: a portable class itself (not an instance) inside a state or return value
ClassLink = TypedDict("ClassLink", {"__type__": Literal["class"], "name": str | None})


# -- refusals ----------------------------------------------------------------------------------------


class AdminError(TypedDict):
    """A refused request (400 bad argument or body, 403, 404 no such task or schedule, 409
    a schedule other servers kept changing, 413 a body too big), as Jupyter's API handlers
    answer it."""

    message: str  # what was wrong, for a person
    reason: str | None  # the HTTP reason phrase (``Bad Request``), if any
