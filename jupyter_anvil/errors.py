"""The exception tree shared by host and kernel, each class with its Anvil wire name.

A wire error is ``{"type": ..., "message": ..., "trace": [[file, line], ...]}``. ``type``
is the Anvil name for Anvil errors (``anvil.server.TimeoutError``) and the bare class name
for anything else (``ValueError``), so clients catch exactly what Anvil's clients catch.
"""

from __future__ import annotations

import builtins
import contextlib
from typing import Any

WireError = dict[str, Any]

_BY_WIRE_NAME: dict[str, type[AnvilError]] = {}


class AnvilError(Exception):
    """Base of every error with an Anvil wire name."""

    wire_name = "anvil.server.AnvilWrappedError"

    def __init__(self, message: str = "", *args: Any) -> None:
        super().__init__(message, *args)
        self.message = message
        #: the error as it arrived from the far side, if it did
        self.error_obj: WireError | None = None

    def __str__(self) -> str:
        return self.message

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "wire_name" not in cls.__dict__:
            cls.wire_name = f"anvil.server.{cls.__name__}"
        _BY_WIRE_NAME[cls.wire_name] = cls


_BY_WIRE_NAME[AnvilError.wire_name] = AnvilError
AnvilWrappedError = AnvilError


class SerializationError(AnvilError):
    """A value could not be encoded or decoded for the wire."""


class InternalError(AnvilError):
    """An unexpected fault in jupyter-anvil itself."""


class InvalidResponseError(AnvilError):
    """The far side answered with something that is not a valid reply."""


class RuntimeUnavailableError(AnvilError):
    """The app cannot run code now: it failed to load, or it was stopped."""


class UplinkDisconnectedError(AnvilError):
    """The uplink serving a function went away."""


class ExecutionTerminatedError(AnvilError):
    """The kernel running the call died (killed, out of memory, or exited)."""


class TimeoutError(AnvilError):
    """The call took longer than the app's call timeout."""


class QuotaExceededError(AnvilError):
    """A resource limit was reached."""


class NoServerFunctionError(AnvilError):
    """No server function is registered under the requested name."""


class CookieError(AnvilError):
    """Cookies cannot be read or written here, or the cookie is too big."""


class BackgroundTaskError(AnvilError):
    """A background task could not be launched or queried."""


class BackgroundTaskNotFound(AnvilError):
    """No background task has the given id."""


class BackgroundTaskKilled(AnvilError):
    """The background task was killed."""


class PermissionDenied(AnvilError):
    """The caller may not do this (for example call a scoped name from a browser)."""


class ServiceNotAdded(AnvilError):
    """The app uses a service it has not enabled."""


class StackOverflow(AnvilError):
    """More than 10 nested ``server.call``\\ s."""


class SessionExpiredError(AnvilError):
    """The caller's session has expired."""


def wire_name_of(exc: BaseException) -> str:
    """The wire ``type`` of an exception: its Anvil name, else its bare class name."""
    if isinstance(exc, AnvilError):
        if exc.error_obj and exc.error_obj.get("type"):
            return str(exc.error_obj["type"])
        return exc.wire_name
    return type(exc).__name__


def to_wire(exc: BaseException, trace: list[list[Any]] | None = None) -> WireError:
    """Encode an exception as a wire error."""
    message = repr(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return {"type": wire_name_of(exc), "message": message, "trace": trace or []}


def from_wire(error: WireError) -> Exception:
    """Rebuild an exception from a wire error: the registered Anvil class, a builtin of
    that name, or an :class:`AnvilWrappedError` carrying the remote type."""
    wire_type = str(error.get("type") or "")
    message = str(error.get("message") or "")
    cls = _BY_WIRE_NAME.get(wire_type)
    if cls is not None:
        exc = cls(message)
        exc.error_obj = dict(error)
        return exc
    if wire_type == "KeyError":
        key_error = KeyError(message)
        key_error._anvil_error_obj = dict(error)  # type: ignore[attr-defined]
        return key_error
    builtin = getattr(builtins, wire_type, None) if wire_type.isidentifier() else None
    if isinstance(builtin, type) and issubclass(builtin, Exception) and wire_type != "TimeoutError":
        with contextlib.suppress(Exception):  # builtins with odd signatures fall through
            return builtin(message)
    wrapped = AnvilWrappedError(message)
    wrapped.error_obj = dict(error)
    return wrapped
