"""What the server cells registered: server functions by name."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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


def _qualname(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"
