"""Does a JSON value fit a declared type? A small checker for the admin API's response
types (jupyter_anvil/host/api_types.py), walking ``typing.get_type_hints``.

Understands what those types use: TypedDicts (required and optional keys, no others),
``Literal``, ``X | None`` and other unions, ``list[X]``, ``dict[str, X]``, ``Any``, and the
JSON scalars (``float`` takes an int too, as JSON does not tell them apart; ``int`` never
takes a bool). Anything else is refused, so a type it cannot check is not passed silently.
"""

from __future__ import annotations

import types
from typing import (
    Annotated,
    Any,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

_SCALARS: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float), bool: (bool,)}


def problems(value: Any, hint: Any, path: str = "$") -> list[str]:
    """What is wrong with ``value`` as a ``hint`` (empty: it fits), each naming its place."""
    origin = get_origin(hint)
    if hint is Any:
        return []
    if hint is None or hint is type(None):
        return [] if value is None else [f"{path}: {value!r} is not null"]
    if origin is Annotated:
        return problems(value, get_args(hint)[0], path)
    if origin is Literal:
        allowed = get_args(hint)
        if any(type(value) is type(a) and value == a for a in allowed):
            return []
        return [f"{path}: {value!r} is not one of {allowed!r}"]
    if origin in (Union, types.UnionType):
        arms = [problems(value, arm, path) for arm in get_args(hint)]
        if any(not found for found in arms):
            return []
        return [f"{path}: {value!r} fits none of {hint}: " + "; ".join(p for found in arms for p in found)]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__} is not a list"]
        (item,) = get_args(hint)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__} is not an object"]
        key_type, value_type = get_args(hint)
        found = (
            [f"{path}: key {k!r} is not a string" for k in value if not isinstance(k, str)] if key_type is str else []
        )
        return found + [p for k, v in value.items() for p in problems(v, value_type, f"{path}.{k}")]
    if is_typeddict(hint):
        return _typeddict_problems(value, hint, path)
    if hint in _SCALARS:
        if isinstance(value, _SCALARS[hint]) and (hint is bool or not isinstance(value, bool)):
            return []
        return [f"{path}: {value!r} is not a {hint.__name__}"]
    raise TypeError(f"{path}: the checker does not know the type {hint!r}")


def _typeddict_problems(value: Any, hint: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: {type(value).__name__} is not an object ({hint.__name__})"]
    fields = get_type_hints(hint, include_extras=True)
    required: frozenset[str] = hint.__required_keys__
    found = [f"{path}: {hint.__name__} needs {key!r}" for key in sorted(required - value.keys())]
    found += [f"{path}: {hint.__name__} has no {key!r}" for key in sorted(value.keys() - fields.keys())]
    for key, field in fields.items():
        if key in value:
            found += problems(value[key], field, f"{path}.{key}")
    return found


def assert_fits(value: Any, hint: Any) -> None:
    found = problems(value, hint)
    assert not found, "\n".join(found)
