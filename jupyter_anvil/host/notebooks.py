"""Read notebooks under the server root into app specs.

Every notebook with at least one code cell tagged ``server`` is an app. Its name is its
path under the root without ``.ipynb``, ``/`` replaced by ``.``, unless
``metadata.jupyter_anvil.app`` names it.

The Python packages an app needs come from ``metadata.jupyter_anvil.requirements`` (and
``python``), else from ``<notebook stem>.requirements.txt`` beside the notebook.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat

from .envs.request import EnvRequest, EnvRequestError, parse_python, parse_requirements, read_requirements_file

SERVER_TAG = "server"
APP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
ORIGIN = re.compile(r"^(\*|https?://[A-Za-z0-9.\-\[\]:]+/?)$")
SKIPPED_DIRS = {"node_modules", "__pycache__", "site-packages"}
REQUIREMENTS_SUFFIX = ".requirements.txt"
RequirementsSource = Literal["metadata", "file"]


def requirements_file(notebook: Path) -> Path:
    """``<notebook stem>.requirements.txt`` beside the notebook."""
    return notebook.with_name(notebook.stem + REQUIREMENTS_SUFFIX)


@dataclass
class AppSpec:
    """One app as its notebook describes it."""

    name: str
    notebook: str  # path under the root, with '/' separators
    cells: list[dict[str, Any]]
    static_dir: Path
    kernels_min: int | None = None
    kernels_max: int | None = None
    call_timeout: float | None = None
    #: other origins whose pages may call this app ("*": any)
    allowed_origins: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    #: ``metadata.jupyter_anvil.scheduled_tasks`` as written (Anvil's ``anvil.yaml`` list of
    #: ``{task_name, job_id, time_spec}``; None: absent). Not checked here: a bad entry must
    #: not stop the app, so ``schedules.declared`` reports it beside the schedules that run
    scheduled_tasks: Any = None
    #: the Python packages its kernels need (requirement strings; empty: the server's own)
    requirements: tuple[str, ...] = ()
    #: the Python version its kernels run ("3.11"; None: the server's)
    python: str | None = None
    #: where ``requirements`` came from: the notebook's metadata, its requirements file, neither
    requirements_source: RequirementsSource | None = None
    #: a remark shown in the app's status (the metadata's list wins over a file beside it)
    requirements_note: str | None = None

    @property
    def env_request(self) -> EnvRequest:
        return EnvRequest(self.requirements, self.python)

    @property
    def fingerprint(self) -> str:
        """Changes when what the kernels run or how the app is served changes, not when
        outputs or untagged cells do: saving those does not restart the app."""
        sources = [cell["source"] for cell in self.cells]  # not indexes: adding a markdown cell above is no change
        # the requirements too: they may come from a file beside the notebook, and a change
        # to them is a rebuild and a reload
        payload = json.dumps(
            {"cells": sources, "metadata": self.metadata, "requirements": self.requirements, "python": self.python},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class NotebookProblem:
    """A notebook that should be an app but cannot be."""

    notebook: str
    message: str
    name: str | None = None
    #: the notebook's last good version, still served while the problem lasts (a save
    #: caught half-written, a typo in the metadata): a bad save does not stop an app
    previous: AppSpec | None = None


def find_notebooks(root: Path) -> list[Path]:
    """Notebooks under ``root``, skipping hidden folders and checkpoints."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        found.extend(Path(folder) / f for f in sorted(files) if f.endswith(".ipynb") and not f.startswith("."))
    return found


def read_app(root: Path, path: Path, previous: AppSpec | None = None) -> AppSpec | NotebookProblem | None:
    """The app a notebook defines, a problem with it, or None if it is not an app.

    ``previous`` is the app the notebook defined when last read well: a problem then
    names that app and carries it, to be served on.
    """
    relative = path.relative_to(root).as_posix()
    try:
        with path.open(encoding="utf-8") as f:
            notebook = nbformat.read(f, as_version=4)  # type: ignore[no-untyped-call]
    except Exception as e:  # noqa: BLE001 - any unreadable notebook is reported, not raised
        message = f"cannot read the notebook: {type(e).__name__}: {e}"
        if previous is not None:  # an empty or half-written file is no reason to stop its app
            return NotebookProblem(relative, message, previous.name, previous)
        if _mentions_server_tag(path):
            return NotebookProblem(relative, message)
        return None
    cells = [
        {"index": i, "source": cell.source}
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and SERVER_TAG in (cell.get("metadata", {}).get("tags") or [])
    ]
    if not cells:
        return None
    settings = notebook.metadata.get("jupyter_anvil") or {}
    default_name = relative[: -len(".ipynb")].replace("/", ".")
    try:
        if not isinstance(settings, dict):
            raise ValueError("metadata.jupyter_anvil must be an object")
        name = settings.get("app", default_name)
        if not isinstance(name, str) or not APP_NAME.match(name):
            raise ValueError(f"app name {name!r} must be letters, digits, '_', '-' and '.'")
        kernels = settings.get("kernels") or {}
        if not isinstance(kernels, dict):
            raise ValueError('metadata.jupyter_anvil.kernels must be an object like {"min": 1, "max": 4}')
        kmin = _int_or_none(kernels.get("min"), "kernels.min", 0)
        kmax = _int_or_none(kernels.get("max"), "kernels.max", 1)
        if kmin is not None and kmax is not None and kmin > kmax:
            raise ValueError(f"kernels.min ({kmin}) is greater than kernels.max ({kmax})")
        timeout = settings.get("call_timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"call_timeout must be a positive number of seconds, not {timeout!r}")
        origins = settings.get("allowed_origins") or []
        if not isinstance(origins, list) or not all(isinstance(o, str) and ORIGIN.match(o) for o in origins):
            raise ValueError(
                f'allowed_origins must be a list of origins like "https://example.com" (or "*"), not {origins!r}'
            )
        static = settings.get("static", path.stem)
        if not isinstance(static, str):
            raise ValueError("metadata.jupyter_anvil.static must be a folder name")
        static_dir = (path.parent / static).resolve()
        if not static_dir.is_relative_to(root.resolve()):
            raise ValueError(f"static folder {static!r} is outside the server root")
        python = parse_python(settings.get("python"), "metadata.jupyter_anvil.python")
    except ValueError as e:
        message = f"invalid metadata.jupyter_anvil: {e}"
        if previous is not None:
            return NotebookProblem(relative, message, previous.name, previous)
        return NotebookProblem(relative, message, default_name)
    try:
        requirements, source, note = _requirements(path, settings)
    except (EnvRequestError, OSError, UnicodeDecodeError) as e:
        message = f"bad requirements: {e}"
        if previous is not None:
            return NotebookProblem(relative, message, previous.name, previous)
        return NotebookProblem(relative, message, name)
    return AppSpec(
        name=name,
        notebook=relative,
        cells=cells,
        static_dir=static_dir,
        kernels_min=kmin,
        kernels_max=kmax,
        call_timeout=float(timeout) if timeout is not None else None,
        allowed_origins=tuple(o.rstrip("/") for o in origins),
        metadata=dict(settings),
        scheduled_tasks=settings.get("scheduled_tasks"),
        requirements=requirements,
        python=python,
        requirements_source=source,
        requirements_note=note,
    )


def _requirements(
    path: Path, settings: dict[str, Any]
) -> tuple[tuple[str, ...], RequirementsSource | None, str | None]:
    """The app's requirements, where they came from, and a note when the metadata's list
    hides a requirements file (so an author editing the file learns why nothing changes)."""
    file = requirements_file(path)
    if "requirements" in settings:
        found = parse_requirements(settings["requirements"], "metadata.jupyter_anvil.requirements")
        note = f"metadata.jupyter_anvil.requirements wins over {file.name}" if file.is_file() else None
        return found, "metadata", note
    if file.is_file():
        return read_requirements_file(file), "file", None
    return (), None, None


def _int_or_none(value: Any, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer of at least {minimum}, not {value!r}")
    return value


def _mentions_server_tag(path: Path) -> bool:
    try:
        return '"server"' in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


class Scanner:
    """Scans a root again and again, re-reading only notebooks whose file changed, and
    remembering each notebook's last good app until the notebook is deleted or no
    longer an app."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[tuple[int, ...], AppSpec | NotebookProblem | None]] = {}

    def read(self, root: Path, path: Path) -> AppSpec | NotebookProblem | None:
        try:
            stat = path.stat()
        except OSError:
            self._cache.pop(path, None)  # gone: nothing of it is served on
            return None
        key = (stat.st_mtime_ns, stat.st_size, *_file_key(requirements_file(path)))
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        result = read_app(root, path, last_good(cached[1]) if cached is not None else None)
        self._cache[path] = (key, result)
        return result

    def forget(self, path: Path) -> None:
        """Read ``path`` again at the next scan, changed or not (a reload asked for)."""
        self._cache.pop(path, None)

    def scan(self) -> tuple[dict[str, AppSpec], list[NotebookProblem]]:
        seen: set[Path] = set()

        def read(root: Path, path: Path) -> AppSpec | NotebookProblem | None:
            seen.add(path)
            return self.read(root, path)

        apps, problems = scan(self.root, read)
        for path in set(self._cache) - seen:  # deleted notebooks, or a folder removed
            del self._cache[path]
        return apps, problems


def _file_key(path: Path) -> tuple[int, ...]:
    """Changes when the file does (a requirements file saved re-reads its notebook)."""
    try:
        stat = path.stat()
    except OSError:
        return ()
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def last_good(result: AppSpec | NotebookProblem | None) -> AppSpec | None:
    if isinstance(result, NotebookProblem):
        return result.previous
    return result


def scan(root: Path, read: Any = read_app) -> tuple[dict[str, AppSpec], list[NotebookProblem]]:
    """Every app under ``root`` by name, and the notebooks that cannot be apps.

    Two notebooks claiming one name: neither is served, and the problem names both.
    """
    claims: dict[str, list[AppSpec]] = {}
    problems: list[NotebookProblem] = []
    for path in find_notebooks(root):
        result = read(root, path)
        if isinstance(result, AppSpec):
            claims.setdefault(result.name, []).append(result)
        elif isinstance(result, NotebookProblem):
            problems.append(result)
            if result.previous is not None:  # served on as it was, the problem reported beside it
                claims.setdefault(result.previous.name, []).append(result.previous)
    apps: dict[str, AppSpec] = {}
    for name, specs in claims.items():
        if len(specs) == 1:
            apps[name] = specs[0]
        else:
            notebooks = " and ".join(s.notebook for s in specs)
            for spec in specs:
                problems.append(NotebookProblem(spec.notebook, f"app name '{name}' is claimed by {notebooks}", name))
    return apps, problems
