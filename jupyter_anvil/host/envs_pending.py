"""The part of ``host/envs`` (issue 17, the other branch) this branch codes against, as the
common brief gives its interface, until that package is merged: then this module goes
and its importers import from ``.envs.request`` / ``.envs.service``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement

MAX_REQUIREMENTS = 200
MAX_REQUIREMENT_CHARS = 1000


class EnvRequestError(ValueError):
    """What is wrong with a requirement, naming the entry and where it came from."""


def parse_requirements(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EnvRequestError(f"{where} must be a list of requirement strings, not {value!r}"[:300])
    if len(value) > MAX_REQUIREMENTS:
        raise EnvRequestError(f"{where} has {len(value)} requirements: at most {MAX_REQUIREMENTS}")
    found: list[str] = []
    for i, entry in enumerate(value):
        text = entry.strip()
        if len(text) > MAX_REQUIREMENT_CHARS:
            raise EnvRequestError(f"{where}[{i}] is longer than {MAX_REQUIREMENT_CHARS} characters")
        if text.startswith("-"):
            raise EnvRequestError(f"{where}[{i}] {text!r}: installer options come from --AnvilApp.env_installer_args")
        if not text.endswith(".whl") and not text.startswith("file:"):
            try:
                Requirement(text)
            except InvalidRequirement as e:
                raise EnvRequestError(f"{where}[{i}] {text!r} is not a requirement: {e}") from None
        if text not in found:
            found.append(text)
    return tuple(found)


def read_requirements_file(path: Path) -> tuple[str, ...]:
    lines = [line.split(" #")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return parse_requirements([line for line in lines if line and not line.startswith("#")], path.name)


@dataclass(frozen=True)
class EnvRequest:
    requirements: tuple[str, ...]
    python: str | None = None

    @property
    def empty(self) -> bool:
        return not self.requirements and self.python is None


EnvStatus = Literal["building", "ready", "failed"]


@dataclass
class EnvInfo:
    id: str
    requirements: tuple[str, ...]
    python: str | None
    status: EnvStatus
    error: str | None
    size_bytes: int | None
    created: float | None
    last_used: float | None
    apps: list[str]
    kernel_name: str


class EnvBuildFailed(Exception):
    """str(e): the installer's message."""
