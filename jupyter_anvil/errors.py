"""The exception tree shared by host and kernel, each class with its Anvil wire name.

A wire error is ``{"type": ..., "message": ..., "trace": [[file, line], ...]}``. ``type``
is the Anvil name for Anvil errors (``anvil.server.TimeoutError``) and the bare class name
for anything else (``ValueError``), so clients catch exactly what Anvil's clients catch.
"""

from __future__ import annotations

import builtins
import contextlib
import re
from typing import Any, Final, TypedDict


class _WireErrorCore(TypedDict):
    type: str  # the Anvil name (``anvil.server.TimeoutError``), else the bare class name
    message: str


class WireError(_WireErrorCore, total=False):
    """An error as it crosses the comm, the store and the public wire (only ``type`` and
    ``message`` reach a caller there; the trace goes to the app log)."""

    trace: list[list[Any]]  # [[file, line], ...], innermost first, server cells only
    #: where it arose, when that decides whose fault it is (RESPONSE_STAGE: encoding the
    #: function's return value, the function's fault whatever the error's type)
    stage: str
    #: a load error's server cell: its index, first line, and the failing line
    cell: int
    first_line: str
    line: int | None


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
        # a variant that borrows an existing wire name (for its own HTTP status) does not
        # replace the class a far side's error of that name is rebuilt as
        _BY_WIRE_NAME.setdefault(cls.wire_name, cls)


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


class AppOfflineError(AnvilError):
    """The client could not reach the server (no connection). Raised by the browser client
    only (client.js): the server never sends it; named here so the names stay one list."""


class RequestTooLarge(SerializationError):
    """A request over a size limit: a SerializationError on the wire (as Anvil sends),
    413 over HTTP."""

    wire_name = SerializationError.wire_name


class UnsupportedContentType(SerializationError):
    """A request in a content type the route does not take: a SerializationError on the
    wire, 415 over HTTP."""

    wire_name = SerializationError.wire_name


# -- email (the classes live here, shared by host and kernel; ``jupyter_anvil.email`` exports them)
class SendFailure(AnvilError):
    """Mail could not be sent: a malformed address, a relay that refused the message, or
    one that could not be reached before the retry window closed (the message says which)."""

    wire_name = "anvil.email.SendFailure"


#: the SMTP code a handler's DeliveryFailure is answered with, unless it names its own
DELIVERY_FAILURE_CODE: Final = 554
_SMTP_CODE_PREFIX = re.compile(r"^([2-5][0-9][0-9]): ")


class DeliveryFailure(AnvilError):
    """Raise it in an ``@email.handle_message`` handler to refuse the message: the sender's
    server is answered ``smtp_code`` (554 unless given) with ``message``, as in Anvil."""

    wire_name = "anvil.email.DeliveryFailure"

    def __init__(self, message: str | None = None, smtp_code: int | None = None) -> None:
        text = message if message is not None else "Message rejected"
        if isinstance(smtp_code, int) and 400 <= smtp_code <= 599:
            text = f"{smtp_code}: {text}"
        super().__init__(text)
        #: what the sender's server is answered (a code rebuilt from the wire is in the message)
        self.smtp_code = smtp_code_of(text)


def smtp_code_of(message: str) -> int:
    """The SMTP code a DeliveryFailure's message carries (``"550: ..."``), else 554."""
    match = _SMTP_CODE_PREFIX.match(message)
    return int(match.group(1)) if match else DELIVERY_FAILURE_CODE


# -- HTTP statuses: the one map ---------------------------------------------------------------
#: the key of a wire error saying where in the call it arose, when that decides whose
#: fault it is (the kernel reports the fact; the host picks the status from it)
STAGE: Final = "stage"
#: arose encoding the function's return value: the function's fault, not the caller's
RESPONSE_STAGE = "response"

#: HTTP status of each error class; anything else (the function raised) is 500. Errors
#: that are the caller's fault are 4xx; the 5xx ones are faults of the server or of the
#: app's code (StackOverflow, ServiceNotAdded: 500 like any error server code raises).
HTTP_STATUS: dict[type[AnvilError], int] = {
    NoServerFunctionError: 404,
    SerializationError: 400,
    RequestTooLarge: 413,
    UnsupportedContentType: 415,
    CookieError: 400,
    BackgroundTaskError: 400,
    BackgroundTaskNotFound: 404,
    BackgroundTaskKilled: 409,
    PermissionDenied: 403,
    SessionExpiredError: 401,
    QuotaExceededError: 429,
    RuntimeUnavailableError: 503,
    UplinkDisconnectedError: 503,
    InvalidResponseError: 502,
    ExecutionTerminatedError: 500,
    InternalError: 500,
    TimeoutError: 504,
}
#: a wire error's status when it arose at a stage that makes it another's fault
_HTTP_STATUS_BY_STAGE = {RESPONSE_STAGE: 500}


def http_status(error: BaseException | WireError) -> int:
    """The HTTP status of an error: an exception raised here (its own class decides, so a
    variant such as :class:`RequestTooLarge` has its own), or a wire error from a kernel
    (its type, unless the stage it arose at decides)."""
    if isinstance(error, BaseException):
        status = HTTP_STATUS.get(type(error))  # type: ignore[arg-type]
        if status is not None:
            return status
        wire_type = wire_name_of(error)
    else:
        stage_status = _HTTP_STATUS_BY_STAGE.get(str(error.get(STAGE)))
        if stage_status is not None:
            return stage_status
        wire_type = str(error.get("type"))
    cls = _BY_WIRE_NAME.get(wire_type)
    return HTTP_STATUS.get(cls, 500) if cls is not None else 500


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
        exc.error_obj = error.copy()
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
    wrapped.error_obj = error.copy()
    return wrapped
