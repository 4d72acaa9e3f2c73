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

    def context(self) -> dict[str, Any]:
        caller = {"type": self.client_type, "is_trusted": self.client_type in ("background_task",)}
        return {
            "client": {"type": self.client_type, "ip": self.ip, "location": None},
            "remote_caller": caller,
            "background_task_id": self.background_task_id,
            "call_stack": [caller],
        }


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
