"""What the server cells registered: server functions by name, and who may call them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import errors


@dataclass
class Registration:
    name: str
    function: Callable[..., Any]
    require_user: Any = None


functions: dict[str, Registration] = {}


def register(name: str, function: Callable[..., Any], require_user: Any = None) -> None:
    """Register ``function`` under ``name``; the last registration of a name wins, as in Anvil."""
    previous = functions.get(name)
    if previous is not None and previous.function is not function:
        print(
            f"Warning: a callable with the name {name!r} has already been registered "
            f"(previously by {_qualname(previous.function)} now by {_qualname(function)}).",
            file=sys.stderr,
        )
    functions[name] = Registration(name, function, require_user)
    if require_user:
        print(
            f"Warning: server function {name!r} is registered with require_user, but this server has no users "
            "service yet: every call to it will be refused with anvil.server.PermissionDenied.",
            file=sys.stderr,
        )


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
