"""A call and its reply as the host carries them between a transport and a kernel.

The host never decodes argument values (that happens in the kernel, next to the
classes they name): it only moves encoded JSON, descriptors and Media bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import errors


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


@dataclass
class CallReply:
    """An encoded reply: ``response`` with its ``objects`` and Media, or an ``error``."""

    response: Any = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, bytes] = field(default_factory=dict)
    error: errors.WireError | None = None

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
