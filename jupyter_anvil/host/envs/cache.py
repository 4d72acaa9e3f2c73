"""The environments on disk: ``<data folder>/envs/<id>/``.

Each ready environment's folder holds ``venv/`` (the environment), ``request.json`` (what was
asked), ``build.log`` (the installer's output), ``ready`` (written last: the build's time and
size) and ``last_used`` (its modification time is the last time an app started kernels in it).

A build happens in ``<id>.building-<pid>-<random>`` and is renamed to ``<id>`` once ready, so a
crash mid-build leaves no half environment that looks ready; such leftovers (of processes that
are gone) are removed at start. Removal renames to ``<id>.removing-...`` first for the same reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .request import EnvRequest

ID_CHARS = 16
READY = "ready"
LAST_USED = "last_used"
REQUEST = "request.json"
BUILD_LOG = "build.log"
VENV = "venv"
FAILED_LOG_SUFFIX = ".failed.log"

# An app's requirement that brings one of these at another version would break the kernel the
# environment starts: installs are constrained to the server's own versions of them.
# jupyter-anvil itself too: another copy in an environment would shadow the kernel runtime the host talks to.
KERNEL_PACKAGES = (
    "ipykernel",
    "ipython",
    "jupyter_client",
    "jupyter_core",
    "comm",
    "pyzmq",
    "tornado",
    "traitlets",
    "jupyter-anvil",
)


def kernel_pins() -> tuple[str, ...]:
    """``name==version`` of each kernel-critical package the server has."""
    pins = []
    for name in KERNEL_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return tuple(pins)


def jupyter_anvil_version() -> str:
    try:
        return metadata.version("jupyter-anvil")
    except metadata.PackageNotFoundError:
        return "unknown"


def id_material(request: EnvRequest, installer_args: tuple[str, ...]) -> dict[str, Any]:
    """Everything an environment's content depends on: the same material, the same environment."""
    material: dict[str, Any] = {
        "requirements": list(request.requirements),
        "python": request.python,
        "installer_args": list(installer_args),
        "server_python": list(sys.version_info[:2]),
        "platform": sys.platform,
        "machine": platform.machine(),
        # the server's kernel packages shadowed by an older pin would break its kernels: a server
        # upgrade of one of them makes new environments (uv's cache makes that rebuild cheap)
        "kernel_pins": list(kernel_pins()),
    }
    if request.python is not None:
        # an environment of another Python holds its own copy of jupyter_anvil's kernel side
        material["jupyter_anvil"] = jupyter_anvil_version()
    return material


def env_id(request: EnvRequest, installer_args: tuple[str, ...]) -> str:
    canonical = json.dumps(id_material(request, installer_args), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_CHARS]


def is_env_id(name: str) -> bool:
    return len(name) == ID_CHARS and all(c in "0123456789abcdef" for c in name)


def venv_python(venv: Path) -> Path:
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def folder_size(path: Path) -> int:
    """Bytes of the regular files under path, each hard-linked file counted once, links not followed."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            if not os.path.islink(os.path.join(folder, name)):
                total += st.st_size
    return total


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: leave its folder
    return True


@dataclass
class ReadyEnv:
    """What the cache knows of a ready environment."""

    id: str
    folder: Path
    requirements: tuple[str, ...]
    python: str | None
    created: float | None
    size_bytes: int | None
    last_used: float | None

    @property
    def python_path(self) -> Path:
        return venv_python(self.folder / VENV)


class EnvCache:
    """The folder of environments; everything here is blocking file work (run it in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, env_id: str) -> Path:
        return self.root / env_id

    def failed_log(self, env_id: str) -> Path:
        return self.root / f"{env_id}{FAILED_LOG_SUFFIX}"

    def new_building_folder(self, env_id: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f"{env_id}.building-{os.getpid()}-{secrets.token_hex(4)}"
        folder.mkdir()
        return folder

    def read(self, env_id: str) -> ReadyEnv | None:
        """The ready environment of this id, or None (absent, or not marked ready)."""
        folder = self.folder(env_id)
        try:
            ready = json.loads((folder / READY).read_text())
            request = json.loads((folder / REQUEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(ready, dict) or not isinstance(request, dict):
            return None
        try:
            last_used: float | None = (folder / LAST_USED).stat().st_mtime
        except OSError:
            last_used = None
        requirements = request.get("requirements")
        python = request.get("python")
        created = ready.get("created")
        size = ready.get("size_bytes")
        return ReadyEnv(
            id=env_id,
            folder=folder,
            requirements=tuple(r for r in requirements if isinstance(r, str)) if isinstance(requirements, list) else (),
            python=python if isinstance(python, str) else None,
            created=float(created) if isinstance(created, (int, float)) else None,
            size_bytes=int(size) if isinstance(size, int) else None,
            last_used=last_used,
        )

    def ready_envs(self) -> list[ReadyEnv]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if is_env_id(entry.name) and (env := self.read(entry.name)) is not None:
                found.append(env)
        return found

    def write_request(self, folder: Path, material: dict[str, Any]) -> None:
        (folder / REQUEST).write_text(json.dumps(material, indent=1, sort_keys=True))

    def publish(self, building: Path, env_id: str) -> ReadyEnv | None:
        """Mark a finished build ready (the marker written last, atomically) and move it into place.

        None if another server sharing the folder published the same environment first: theirs is
        kept and this build removed.
        """
        size = folder_size(building)
        marker = building / f"{READY}.tmp"
        marker.write_text(json.dumps({"created": time.time(), "size_bytes": size}))
        os.replace(marker, building / READY)
        target = self.folder(env_id)
        if target.exists() and self.read(env_id) is None:
            self._remove_folder(target)  # a folder of this id that never became ready
        try:
            os.rename(building, target)
        except OSError:
            if self.read(env_id) is None:
                raise
            self._remove_folder(building)
        with contextlib.suppress(OSError):
            self.failed_log(env_id).unlink()  # an earlier failure of this id is history
        return self.read(env_id)

    def touch_last_used(self, env_id: str) -> None:
        path = self.folder(env_id) / LAST_USED
        with contextlib.suppress(OSError):
            path.touch()
            os.utime(path)

    def remove(self, env_id: str) -> None:
        folder = self.folder(env_id)
        if folder.exists():
            self._remove_folder(folder)
        with contextlib.suppress(OSError):
            self.failed_log(env_id).unlink()

    def remove_failed_logs(self, older_than: float) -> None:
        """Remove the logs of failed builds last written before older_than."""
        if not self.root.is_dir():
            return
        for entry in self.root.glob(f"*{FAILED_LOG_SUFFIX}"):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < older_than:
                    entry.unlink()

    def _remove_folder(self, folder: Path) -> None:
        # renamed away first: a folder half removed never looks like an environment
        doomed = folder.with_name(f"{folder.name.split('.')[0]}.removing-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(folder, doomed)
        except OSError:
            doomed = folder
        shutil.rmtree(doomed, ignore_errors=True)

    def remove_leftovers(self) -> list[str]:
        """Remove half-built and half-removed folders of processes that are gone; their names."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for entry in self.root.iterdir():
            name = entry.name
            for marker in (".building-", ".removing-"):
                if marker not in name:
                    continue
                pid_text = name.split(marker, 1)[1].split("-", 1)[0]
                pid = int(pid_text) if pid_text.isdigit() else None
                if pid is not None and pid != os.getpid() and _pid_alive(pid):
                    continue  # another server sharing this folder is building it now
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(name)
        return removed
