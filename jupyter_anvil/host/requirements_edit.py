"""``POST anvil/api/apps/<app>/requirements``: add and remove requirements by writing the
notebook's ``metadata.jupyter_anvil.requirements``, so the declaration stays with the
notebook; the notebook watcher sees the save and rebuilds the app's environment."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import nbformat
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .envs.request import EnvRequestError, parse_requirements, read_requirements_file
from .notebooks import requirements_file

WHERE = "metadata.jupyter_anvil.requirements"
#: one edit at a time: two requests must not each read the list and write back their own
_editing = threading.Lock()


class RequirementsEditError(ValueError):
    """What is wrong with a change (its text is shown to the caller, 400)."""


def project_name(entry: str) -> str:
    """The canonical project name a requirement (or a wheel's file name, or a bare name) is about."""
    text = entry.strip()
    if text.endswith(".whl"):  # a local wheel: its file name starts with the project's name
        return canonicalize_name(Path(text.split("/")[-1]).name.split("-")[0])
    try:
        return canonicalize_name(Requirement(text).name)
    except InvalidRequirement:
        return canonicalize_name(text)


def changed(current: list[str], add: list[str], remove: list[str]) -> list[str]:
    """``current`` without the projects ``remove`` names, then with ``add`` (each replacing an
    entry of its project); a removal of a project not listed is refused (a typo, surely)."""
    result = list(current)
    for entry in remove:
        name = project_name(entry)
        kept = [r for r in result if project_name(r) != name]
        if len(kept) == len(result):
            listed = ", ".join(result) or "none"
            raise RequirementsEditError(f"remove: no requirement of {name!r} is listed (listed: {listed})")
        result = kept
    for entry in add:
        name = project_name(entry)
        result = [r for r in result if project_name(r) != name] + [entry.strip()]
    return result


def edit_requirements(notebook: Path, add: Any, remove: Any) -> list[str]:
    """Apply the change to ``notebook``'s metadata, written atomically; the new list.

    Starts from the metadata's list, else the requirements file beside the notebook (once
    written, the metadata's list wins over the file, as the app's status then says)."""
    adding = list(parse_requirements(add, "add")) if add is not None else []
    if remove is not None and (not isinstance(remove, list) or not all(isinstance(r, str) for r in remove)):
        raise RequirementsEditError('remove must be a list of project names or requirements, e.g. ["requests"]')
    removing: list[str] = list(remove or [])
    with _editing:
        with notebook.open(encoding="utf-8") as f:
            nb = nbformat.read(f, as_version=4)  # type: ignore[no-untyped-call]
        settings = nb.metadata.setdefault("jupyter_anvil", {})
        if not isinstance(settings, dict):
            raise RequirementsEditError("metadata.jupyter_anvil of the notebook is not an object: fix it first")
        if "requirements" in settings:
            try:
                current = list(parse_requirements(settings["requirements"], WHERE))
            except EnvRequestError as e:
                raise RequirementsEditError(f"the notebook's list cannot be read ({e}): fix it first") from None
        else:
            file = requirements_file(notebook)
            current = list(read_requirements_file(file)) if file.is_file() else []
        new = changed(current, adding, removing)
        settings["requirements"] = list(parse_requirements(new, WHERE))  # the bounds hold for the sum too
        _write_atomically(notebook, nb)
        return list(settings["requirements"])


def _write_atomically(path: Path, nb: Any) -> None:
    """Written beside it, then renamed over it: the watcher never reads half a notebook."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)  # type: ignore[no-untyped-call]
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
