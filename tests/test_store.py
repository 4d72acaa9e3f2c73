"""The store on disk: owner-only files (folder 0700, database and its SQLite side files
0600, whatever the umask), narrowed at start where an older release left them wider."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from conftest import AnvilServer
from notebook_files import write_notebook

PRINTER = """
from jupyter_anvil import server

@server.callable
def say(text):
    print(text)
    return text
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def store_files(server: AnvilServer) -> tuple[Path, list[Path]]:
    folder = server.workdir / "jupyter_data_dir" / "jupyter_anvil"
    return folder, [folder / name for name in ("anvil.db", "anvil.db-wal", "anvil.db-shm")]


def test_the_store_is_the_owners_alone_even_under_a_permissive_umask(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("modes-root")
    write_notebook(root / "printer.ipynb", [PRINTER], {"kernels": {"min": 1, "max": 1}})
    server = AnvilServer(root, tmp_path_factory.mktemp("modes-server"))
    previous = os.umask(0o000)  # the child inherits it: the worst case a user could have
    try:
        server.start(wait_for=("printer",))
    finally:
        os.umask(previous)
    try:
        assert server.call("printer", "say", "written to the log") == "written to the log"
        server.admin("anvil/api/logs", app="printer")  # flushes the log: the WAL is written
        folder, files = store_files(server)
        assert mode(folder) == 0o700
        for path in files:
            assert path.exists() and mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(folder / "cookie_keys") == 0o600
    finally:
        server.stop()


def test_wider_modes_left_by_an_older_release_are_narrowed_at_start(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("narrow-root")
    write_notebook(root / "printer.ipynb", [PRINTER], {"kernels": {"min": 1, "max": 1}})
    server = AnvilServer(root, tmp_path_factory.mktemp("narrow-server"))
    server.start(wait_for=("printer",))
    server.stop()
    folder, files = store_files(server)
    os.chmod(folder, 0o755)
    for path in files:
        path.touch()
        os.chmod(path, 0o644)
    server.start(wait_for=("printer",))
    try:
        assert server.call("printer", "say", "again") == "again"
        assert mode(folder) == 0o700
        assert all(mode(path) == 0o600 for path in files if path.exists())
        log = server.log_path.read_text(errors="replace")
        assert f"{folder} was open to other users (mode 755): now 700" in log
        assert f"{folder / 'anvil.db'} was open to other users (mode 644): now 600" in log
    finally:
        server.stop()


# -- the app log is bounded (issue 13, 3.4) --------------------------------------------------------

FLOODER = """
import sys
from jupyter_anvil import server

@server.callable
def flood(mib):
    line = "x" * (1024 * 1024 - 1) + "\\n"
    for _ in range(mib):
        sys.stdout.write(line)
    return mib

@server.callable
def one_long_line(n):
    print("y" * n)
    print("after the long line")
"""


def store_size(server: AnvilServer) -> int:
    _, files = store_files(server)
    return sum(path.stat().st_size for path in files[:2] if path.exists())  # the database and its WAL


def test_a_call_printing_50_mib_grows_the_store_by_little(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("flood-root")
    write_notebook(root / "flood.ipynb", [FLOODER], {"kernels": {"min": 1, "max": 1}, "call_timeout": 120})
    server = AnvilServer(root, tmp_path_factory.mktemp("flood-server"))
    server.start(wait_for=("flood",))
    try:
        server.admin("anvil/api/logs", app="flood")
        before = store_size(server)
        response = server.post("flood", "flood", {"args": [50]}, timeout=180)
        assert response.json()["response"] == 50
        records = server.admin("anvil/api/logs", app="flood", limit=10000)["records"]
        flood = [r for r in records if r["function"] == "flood"]
        kept = sum(len(r["text"]) for r in flood)
        assert 1024 * 1024 <= kept < 1024 * 1024 + 1024  # a MiB, with the markers where records were cut
        marker = "[jupyter-anvil: output cut here: the app log keeps at most 1024 KiB of what a call prints"
        assert marker in flood[-1]["text"]
        assert all(len(r["text"].encode()) <= 64 * 1024 + 200 for r in flood)  # no record over its cap
        grown = store_size(server) - before
        assert grown < 4 * 1024 * 1024, grown  # 79 MiB before the cap

        server.call("flood", "one_long_line", 200_000)
        records = server.admin("anvil/api/logs", app="flood", limit=10000)["records"]
        (long,) = [r for r in records if r["text"].startswith("y")]
        cut = "\n[jupyter-anvil: output cut here: a log record keeps its first 64 KiB"
        assert long["text"].startswith("y" * 65536 + cut)
        assert any(r["text"] == "after the long line\n" for r in records)  # the call's total is not reached
        assert len(server.log_path.read_bytes()) < 8 * 1024 * 1024  # the server's own log is capped alike
    finally:
        server.stop()


def test_the_log_api_refuses_out_of_range_numbers(anvil_server: AnvilServer) -> None:
    auth = {"Authorization": f"token {anvil_server.token}"}
    for params in ({"since": str(2**70)}, {"since": "-1"}, {"since": "x"}, {"limit": "many"}):
        response = httpx.get(f"{anvil_server.url}anvil/api/logs", params=params, headers=auth)
        assert response.status_code == 400, (params, response.status_code)
    assert len(anvil_server.admin("anvil/api/logs", limit=-1)["records"]) == 1  # not "no limit"
    for path in ("anvil/api/logs?app=", "anvil/api/tasks?name=", "anvil/api/tasks?app="):
        for odd in ("%00", "%ED%A0%80", "%FF", "x" * 5000):
            response = httpx.get(f"{anvil_server.url}{path}{odd}", headers=auth)
            assert response.status_code in (200, 400), (path, odd, response.status_code)
    for before in ("nan", "inf", "-inf", "1e400"):
        assert anvil_server.admin("anvil/api/tasks", before=before)["tasks"] is not None
