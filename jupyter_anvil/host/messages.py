"""A call and its reply as the host carries them between a transport and a kernel.

The host never decodes argument values (that happens in the kernel, next to the
classes they name): it only moves encoded JSON, descriptors and Media bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errors

if TYPE_CHECKING:
    from .sessions import Session


@dataclass
class Caller:
    """Who makes a call: their session, their cookies (``None`` unless a web browser
    makes the call) and what ``server.context`` says of them."""

    session: Session
    client_type: str  # browser, http, uplink, background_task, email
    ip: str | None = None
    cookies: dict[str, dict[str, Any]] | None = None
    background_task_id: str | None = None
    #: the frames of whatever started this caller, outermost first (a schedule's
    #: ``scheduled_task`` frame for a run it launched): the start of ``call_stack``
    origin: list[dict[str, Any]] = field(default_factory=list)

    def context(self) -> dict[str, Any]:
        caller = {"type": self.client_type, "is_trusted": self.client_type in ("background_task",)}
        return {
            "client": {"type": self.client_type, "ip": self.ip, "location": None},
            "remote_caller": caller,
            "background_task_id": self.background_task_id,
            "call_stack": [*self.origin, caller],
        }


#: the call-stack frame type of a run a schedule launched (Anvil's)
SCHEDULED_TASK = "scheduled_task"


def scheduled_frame(schedule_id: str) -> dict[str, Any]:
    """The call-stack frame of a schedule that launched a task: Anvil's ``scheduled_task``,
    with the schedule's id (``anvil/api/schedules/<id>``). Trusted: the server's own
    scheduler launched it, from what the app's author (or an admin) declared."""
    return {"type": SCHEDULED_TASK, "is_trusted": True, "schedule_id": schedule_id}


def scheduled_context(schedule_id: str) -> dict[str, Any]:
    """What a task record's ``launched_by`` says of a run a schedule launched: no client,
    the schedule as the caller."""
    frame = scheduled_frame(schedule_id)
    return {"client": None, "remote_caller": frame, "background_task_id": None, "call_stack": [frame]}


@dataclass
class CallRequest:
    """An encoded server call, from whichever transport it came."""

    command: str
    args: Any = field(default_factory=list)
    kwargs: Any = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, bytes] = field(default_factory=dict)
    call_id: str = ""
    depth: int = 0
    from_client: bool = True
    caller: Caller | None = None
    #: for a nested call, the id of the call that made it (it shares that call's session)
    parent: str | None = None
    #: for a nested call, the making call's context as the kernel knows it
    context: dict[str, Any] | None = None
    #: the caller's idempotency key (offline clients' queued calls): run at most once
    idempotency_key: str | None = None
    #: set once the call is handed to server code (a kernel or a host service): from then
    #: on it may have run, so its key's outcome is final (before: the key is released)
    reached: bool = False


@dataclass
class CallReply:
    """An encoded reply: ``response`` with its ``objects`` and Media, or an ``error``."""

    response: Any = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, bytes] = field(default_factory=dict)
    error: errors.WireError | None = None
    #: what the call changed: ``{"changed", "deleted", "persist"}`` of its session, and
    #: the new values of each cookie it changed
    session_changes: dict[str, Any] | None = None
    cookie_changes: dict[str, dict[str, Any]] | None = None
    #: for the author (never the caller): the whole traceback; for a task, its final state
    traceback: str | None = None
    task_state: dict[str, Any] | None = None

    @classmethod
    def failure(cls, exc: BaseException) -> CallReply:
        return cls(error=errors.to_wire(exc))

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {
                "error": {
                    "type": self.error.get("type"),
                    "message": self.error.get("message", ""),
                    "trace": self.error.get("trace", []),
                }
            }
        return {"response": self.response, "objects": self.objects}
