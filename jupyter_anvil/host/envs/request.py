"""What an app asks for: its requirements and, optionally, a Python version.

Everything here is checked before an installer runs, so a requirement pip cannot read is a
clear error on the app (naming the entry and where it came from), never an installer run.
Installer options are refused in requirements: they come from ``--AnvilApp.env_installer_args``
(an app must not be able to point the server's installer at an index of its choice).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

MAX_REQUIREMENTS = 200
MAX_REQUIREMENT_CHARS = 1000
# a requirements file larger than this is not a requirements file
MAX_REQUIREMENTS_FILE_BYTES = 256 * 1024
# jupyter_anvil's kernel runtime needs this Python or later
OLDEST_PYTHON = (3, 10)

_PYTHON_VERSION = re.compile(r"(\d{1,2})\.(\d{1,3})")


class EnvRequestError(ValueError):
    """A request that cannot be built: what is wrong, naming the entry and where it came from."""


def _is_local_wheel(entry: str) -> bool:
    """A wheel file by path or file: URL (the installer reads it as it is; no name to resolve)."""
    lower = entry.lower()
    if not lower.endswith(".whl"):
        return False
    scheme = re.match(r"([a-z][a-z0-9+.-]*):", lower)
    # no scheme, a file: URL, or a Windows drive letter ("C:\\wheels\\x.whl")
    return scheme is None or scheme[1] == "file" or len(scheme[1]) == 1


def check_requirement(entry: object, where: str) -> str:
    """One requirement, stripped: a PEP 508 requirement or a local wheel (path or file: URL)."""
    if not isinstance(entry, str):
        raise EnvRequestError(f"{where}: a requirement must be a string, not {type(entry).__name__}")
    text = entry.strip()
    if not text:
        raise EnvRequestError(f"{where}: an empty requirement")
    if len(text) > MAX_REQUIREMENT_CHARS:
        raise EnvRequestError(f"{where}: a requirement longer than {MAX_REQUIREMENT_CHARS} characters")
    if any(ch in text for ch in "\r\n\x00") or text.endswith("\\"):
        # the builder writes one requirement a line: a line break (or a continuation) would
        # smuggle in another line
        raise EnvRequestError(f"{where}: {text[:80]!r}: a requirement must be one line")
    if text.startswith("-") or re.search(r"\s-", text):
        raise EnvRequestError(
            f"{where}: {text[:80]!r}: installer options are not requirements "
            "(installer options come from --AnvilApp.env_installer_args)"
        )
    if "${" in text:
        # pip and uv expand ${NAME} in requirements files: the server's environment variables
        # (its secrets) must not end up in a URL an app chose
        raise EnvRequestError(f"{where}: {text[:80]!r}: environment variables (${{...}}) are not expanded here")
    if _is_local_wheel(text):
        if re.search(r"\s", text):
            raise EnvRequestError(f"{where}: {text[:80]!r}: a wheel's path must have no spaces")
        return text
    try:
        Requirement(text)
    except InvalidRequirement as e:
        raise EnvRequestError(f"{where}: {text[:200]!r} is not a valid requirement: {e}") from None
    return text


def parse_requirements(value: object, where: str) -> tuple[str, ...]:
    """A list of requirement strings, checked; duplicates dropped, order kept."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise EnvRequestError(f"{where}: requirements must be a list of strings, not {type(value).__name__}")
    if len(value) > MAX_REQUIREMENTS:
        raise EnvRequestError(f"{where}: {len(value)} requirements, at most {MAX_REQUIREMENTS}")
    seen: dict[str, None] = {}
    for index, entry in enumerate(value):
        seen.setdefault(check_requirement(entry, f"{where}, entry {index + 1}"), None)
    return tuple(seen)


def read_requirements_file(path: Path) -> tuple[str, ...]:
    """A requirements.txt: one requirement a line; comments (``#``) and blank lines skipped."""
    where = str(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_REQUIREMENTS_FILE_BYTES + 1)
    except OSError as e:
        raise EnvRequestError(f"{where}: cannot be read: {e.strerror or e}") from None
    if len(data) > MAX_REQUIREMENTS_FILE_BYTES:
        raise EnvRequestError(f"{where}: larger than {MAX_REQUIREMENTS_FILE_BYTES // 1024} KB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EnvRequestError(f"{where}: not UTF-8 text") from None
    entries: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        # pip's rule: '#' at the start of a line or after whitespace starts a comment
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        if len(entries) >= MAX_REQUIREMENTS:
            raise EnvRequestError(f"{where}: more than {MAX_REQUIREMENTS} requirements")
        entries.setdefault(check_requirement(line, f"{where}, line {number}"), None)
    return tuple(entries)


def parse_python(value: object, where: str) -> str | None:
    """A Python version "3.N" (None: the server's own). Whether the machine has it is the builder's check."""
    if value is None:
        return None
    if not isinstance(value, str) or not (match := _PYTHON_VERSION.fullmatch(value.strip())):
        raise EnvRequestError(f'{where}: python must be a version like "3.11", not {str(value)[:40]!r}')
    version = (int(match[1]), int(match[2]))
    if version < OLDEST_PYTHON:
        raise EnvRequestError(
            f"{where}: python {value.strip()} is too old: jupyter_anvil's kernel needs Python "
            f"{OLDEST_PYTHON[0]}.{OLDEST_PYTHON[1]} or later"
        )
    return f"{version[0]}.{version[1]}"


def server_python() -> str:
    """The server's own Python version, as a request names it."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass(frozen=True)
class EnvRequest:
    """An app's environment: its requirements (checked, in order) and the Python it wants."""

    requirements: tuple[str, ...]
    python: str | None = None  # "3.11"; None: the server's own

    def __post_init__(self) -> None:
        # the same checks however the request was made, so a service never builds an unchecked one
        object.__setattr__(self, "requirements", parse_requirements(self.requirements, "requirements"))
        python = parse_python(self.python, "python")
        # the server's own version asked by name is the server's own: the same (layered) environment
        object.__setattr__(self, "python", None if python == server_python() else python)

    @property
    def empty(self) -> bool:
        """No requirements and no python: the server's default kernel, no environment at all."""
        return not self.requirements and self.python is None
