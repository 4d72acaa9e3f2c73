"""Write notebooks for tests: server cells, untagged cells and metadata."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import nbformat


def write_notebook(
    path: Path,
    server_cells: list[str],
    metadata: dict[str, Any] | None = None,
    untagged_cells: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """Write ``path``: the untagged cells first, then the server cells, in order."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(src)) for src in untagged_cells]
    for src in server_cells:
        cell = nbformat.v4.new_code_cell(textwrap.dedent(src).strip("\n"))
        cell.metadata["tags"] = ["server"]
        nb.cells.append(cell)
    if metadata is not None:
        nb.metadata["jupyter_anvil"] = metadata
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(path)  # atomically, as Jupyter saves: the watcher never sees half a file
    return path
