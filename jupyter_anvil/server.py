"""The server API for notebook cells tagged ``server``, name for name with ``anvil.server``.

Use it as you would Anvil's::

    from jupyter_anvil import server

    @server.callable
    def greet(name):
        return f"Hello, {name}!"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

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
    "TimeoutError",
    "UplinkDisconnectedError",
    "call",
    "callable",
    "context",
    "portable_class",
    "serializable_type",
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


class CallContext:
    """What is known about the call in progress (``server.context``)."""

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
    def call_id(self) -> str | None:
        """The id of the server call running on this thread, as tagged in the app log."""
        frame = _context.current()
        return frame.call_id if frame else None


context = CallContext()
