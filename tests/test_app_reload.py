"""``POST anvil/api/apps/<app>/reload`` and ``error_location``: where an app's load error
is in its notebook (the failing server cell by its index among ALL cells), on a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from shapes import assert_fits

from jupyter_anvil.host import api_types as api
from jupyter_anvil.host.apps import load_error_location

AUTH = {"Authorization": "token test-token-not-for-apps"}

GOOD = """
from jupyter_anvil import server

@server.callable
def ping():
    return "pong"
"""

HELPER = """
def helper():
    raise ValueError("boom in the helper")
"""

FAILING = """
x = 1
helper()
"""


def write_broken(path: Path) -> None:
    """Markdown and an untagged code cell before the server cells; the failing server cell
    is the notebook's 5th cell (index 4), its failing line the 2nd; the error is raised in the 4th."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A broken app"), nbformat.v4.new_code_cell("print('not served')")]
    for source in (GOOD, HELPER, FAILING):
        cell = nbformat.v4.new_code_cell(source.strip("\n"))
        cell.metadata["tags"] = ["server"]
        nb.cells.append(cell)
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(path)


def write_apps(root: Path) -> None:
    write_broken(root / "broken.ipynb")
    write_notebook(root / "fine.ipynb", [GOOD], {"kernels": {"min": 1, "max": 1}})
    write_notebook(root / "steady.ipynb", [GOOD], {"kernels": {"min": 1, "max": 1}})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "reload", write_apps) as running:
        running.wait_until_loaded(("broken", "fine", "steady"))
        yield running


def reload(server: AnvilServer, app: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}anvil/api/apps/{app}/reload", headers=AUTH if headers is None else headers)


def wait_for(server: AnvilServer, app: str, check: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = server.apps().get(app)
        if listed is not None and check(listed):
            return listed
        time.sleep(0.1)
    raise AssertionError(f"{app}: {server.apps().get(app)}")


def test_a_load_error_names_its_cell_among_all_cells_and_its_line(server: AnvilServer) -> None:
    broken = server.apps()["broken"]
    assert_fits(broken, api.ListedApp)
    assert broken["status"] == "error" and "boom in the helper" in broken["error"]
    assert broken["error_location"] == {"notebook": "broken.ipynb", "cell": 4, "line": 2}
    assert "Server cell 5 " in broken["error"]  # the message counts as people do: index 4 is the 5th cell
    assert server.apps()["fine"]["error_location"] is None


def test_reload_answers_202_loading_then_the_app_is_ready_again(server: AnvilServer) -> None:
    answer = reload(server, "fine")
    assert answer.status_code == 202, answer.text
    assert_fits(answer.json(), api.ListedApp)
    assert answer.json()["status"] == "loading" and answer.json()["name"] == "fine"
    assert server.call("fine", "ping") == "pong"  # the version served serves on while the next loads
    wait_for(server, "fine", lambda a: a["status"] == "ready" and a["pool"] and a["pool"]["kernels"] == 1)
    assert server.call("fine", "ping") == "pong"
    log = server.admin("anvil/api/logs", app="fine")["records"]
    assert sum("serving fine.ipynb" in r["text"] for r in log) >= 2  # it really loaded again


def test_reloads_in_a_row_start_one_load(server: AnvilServer) -> None:
    before = sum(
        "loading fine.ipynb" in r["text"] for r in server.admin("anvil/api/logs", app="fine", limit=10000)["records"]
    )
    answers = [reload(server, "fine") for _ in range(10)]
    assert all(a.status_code == 202 for a in answers)
    wait_for(server, "fine", lambda a: a["status"] == "ready")
    time.sleep(1)
    log = server.admin("anvil/api/logs", app="fine", limit=10000)["records"]
    assert sum("loading fine.ipynb" in r["text"] for r in log) - before == 1
    assert server.call("fine", "ping") == "pong"


def test_reload_reads_the_notebook_again_and_a_fixed_cell_loads(server: AnvilServer) -> None:
    path = server.root / "broken.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[4].source = "x = 1"
    stat = path.stat()
    nbformat.write(nb, str(path))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same mtime: only a reload reads it again
    answer = reload(server, "broken")
    assert answer.status_code == 202 and answer.json()["status"] in ("loading", "ready")
    fixed = wait_for(server, "broken", lambda a: a["status"] == "ready")
    assert fixed["error"] is None and fixed["error_location"] is None
    assert server.call("broken", "ping") == "pong"


def test_reload_of_a_notebook_saved_half_written_serves_its_last_good_version_on(server: AnvilServer) -> None:
    (server.root / "steady.ipynb").write_text('{"cells": [', encoding="utf-8")
    answer = reload(server, "steady")
    assert answer.status_code == 202
    time.sleep(1.5)  # scans and the load of the last good version
    steady = wait_for(server, "steady", lambda a: a["status"] == "ready")
    assert "cannot read the notebook" in (steady["error"] or "") and "still served" in steady["error"]
    assert steady["error_location"] == {"notebook": "steady.ipynb", "cell": None, "line": None}
    assert server.call("steady", "ping") == "pong"


def test_reload_of_an_unknown_app_is_404_and_needs_the_token(server: AnvilServer) -> None:
    missing = reload(server, "nosuchapp")
    assert missing.status_code == 404 and "nosuchapp" in missing.json()["message"]
    anonymous = reload(server, "fine", headers={})
    assert anonymous.status_code in (401, 403)
    assert server.apps()["fine"]["status"] == "ready"


# -- the mapping itself ---------------------------------------------------------------------------


def test_the_location_is_the_innermost_frame_in_the_failing_cell() -> None:
    detail = {"cell": 4, "line": 2, "trace": [["nb.ipynb cell 4", 2], ["nb.ipynb cell 5", 7]]}
    assert load_error_location("nb.ipynb", detail) == {"notebook": "nb.ipynb", "cell": 4, "line": 7}
    syntax = {"cell": 0, "trace": [["nb.ipynb cell 1", 3]]}
    assert load_error_location("nb.ipynb", syntax) == {"notebook": "nb.ipynb", "cell": 0, "line": 3}
    assert load_error_location("nb.ipynb", {"cell": 2}) == {"notebook": "nb.ipynb", "cell": 2, "line": None}
    for bad in ({}, {"cell": None}, {"cell": "2"}, {"cell": True}, {"cell": -1}):
        assert load_error_location("nb.ipynb", bad) is None
    assert load_error_location("nb.ipynb", {"cell": 1, "trace": "junk"}) == {
        "notebook": "nb.ipynb", "cell": 1, "line": None,
    }  # fmt: skip
