"""What the server cells registered, by kind (callables, background tasks...), and who may
call them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..protocol import CALLABLE, KINDS, Kind
from ..protocol import Registration as WireRegistration


@dataclass
class Registration:
    name: str
    function: Callable[..., Any]
    require_user: Any = None
    kind: Kind = CALLABLE


#: each kind has its own names: a background task and a callable may share one
registrations: dict[Kind, dict[str, Registration]] = {kind: {} for kind in KINDS}
#: the callables, by name
functions = registrations[CALLABLE]


def register(name: str, function: Callable[..., Any], require_user: Any = None, kind: Kind = CALLABLE) -> None:
    """Register ``function`` under ``name``; the last registration of a name wins, as in Anvil."""
    registered = registrations[kind]
    previous = registered.get(name)
    if previous is not None and previous.function is not function:
        print(
            f"Warning: a {'callable' if kind == CALLABLE else kind.replace('_', ' ')} with the name {name!r} has "
            f"already been registered (previously by {_qualname(previous.function)} now by {_qualname(function)}).",
            file=sys.stderr,
        )
    registered[name] = Registration(name, function, require_user, kind)
    if require_user:
        print(
            f"Warning: server function {name!r} is registered with require_user, but this server has no users "
            "service yet: every call to it will be refused with anvil.server.PermissionDenied.",
            file=sys.stderr,
        )


def lookup(kind: Kind, name: str) -> Registration | None:
    return registrations[kind].get(name)


def listing() -> list[WireRegistration]:
    """Everything registered, as the load reply tells the host."""
    return [{"name": name, "kind": kind} for kind in KINDS for name in sorted(registrations[kind])]


def check_caller(registration: Registration) -> None:
    """The one place a caller is checked against ``require_user``, for every call
    (browser, HTTP, nested ``server.call``).

    There is no users service yet, so no caller is ever logged in: a function that
    requires a user (``True``, or a callable deciding on the user) refuses every call
    rather than run for anonymous callers. A users service changes only this function.
    """
    if not registration.require_user:
        return
    raise errors.PermissionDenied(
        f"You must be logged in to call server function {registration.name!r}, and this server has no users "
        "service yet: functions registered with require_user refuse every call"
    )


def _qualname(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"
