"""Several servers over one data folder (one store): the app log numbered by the
database, each server marking only its own tasks ``missing``, stops that complete; a
task cut off by a crash keeps what it printed; a database of the first release opens."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AnvilServer
from notebook_files import write_notebook
from test_app_loading import wait_for

APP = """
import time
from jupyter_anvil import server

@server.callable
def say(who, n):
    for i in range(n):
        print(f"{who} line {i}")
    return n

@server.background_task
def print_then_sleep(lines, seconds):
    for i in range(lines):
        print(f"task line {i}")
    server.task_state["printed"] = lines
    time.sleep(seconds)
    return "woke"

@server.callable
def start(lines, seconds):
    return server.launch_background_task("print_then_sleep", lines, seconds).get_id()
"""


def write_app(root: Path) -> None:
    write_notebook(root / "shared.ipynb", [APP], {"kernels": {"min": 1, "max": 1}})


def sharing(first: AnvilServer, workdir: Path) -> AnvilServer:
    """A second server whose Jupyter data folder is the first one's (its own runtime
    and config folders, its own port): two servers started with one JUPYTER_DATA_DIR."""
    (workdir / "jupyter_data_dir").symlink_to(first.workdir / "jupyter_data_dir", target_is_directory=True)
    return AnvilServer(first.root, workdir)


def task_record(server: AnvilServer, task_id: str) -> dict[str, Any]:
    return server.admin(f"anvil/api/tasks/{task_id}")  # type: ignore[no-any-return]


def terminate_within(server: AnvilServer, seconds: float) -> float:
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(seconds)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise AssertionError(f"the server was still up {seconds}s after SIGTERM\n{server.log_tail()}") from None
    finally:
        server.log_file.close()
    return time.monotonic() - started


@pytest.fixture
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    root = tmp_path_factory.mktemp("shared-root")
    write_app(root)
    server = AnvilServer(root, tmp_path_factory.mktemp("first"))
    server.start(wait_for=("shared",))
    yield server
    server.stop()


def test_two_servers_over_one_data_folder(first: AnvilServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    task_id = first.call("shared", "start", 3, 600)
    wait_for(lambda: task_record(first, task_id)["status"] == "running", what="the task to run on the first server")

    second = sharing(first, tmp_path_factory.mktemp("second"))
    second.start(wait_for=("shared",))
    try:
        # the second server's start leaves the first one's running task alone
        assert task_record(second, task_id)["status"] == "running"
        assert task_record(first, task_id)["status"] == "running"

        # both print at once, in many small batches
        def calls(server: AnvilServer, who: str) -> None:
            for _ in range(15):
                assert server.call("shared", "say", who, 20) == 20

        threads = [threading.Thread(target=calls, args=(s, w)) for s, w in ((first, "first"), (second, "second"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        def printed(reader: AnvilServer) -> dict[str, int]:
            """Lines of each server in the log as ``reader`` reads it (each server stores
            its own records within half a second)."""
            records = reader.admin("anvil/api/logs", app="shared", limit=10000)["records"]
            seqs = [r["seq"] for r in records]
            assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
            lines = [line for r in records for line in r["text"].splitlines()]
            return {who: sum(1 for line in lines if line.startswith(f"{who} line ")) for who in ("first", "second")}

        for reader in (first, second):
            complete = {"first": 15 * 20, "second": 15 * 20}
            wait_for(lambda: printed(reader) == complete, timeout=10, what="both servers' lines in the log")  # noqa: B023
        time.sleep(6)  # a heartbeat and a sweep of each server: still nobody's task is touched
        assert task_record(second, task_id)["status"] == "running"
        assert "UNIQUE constraint" not in first.log_tail(400) + second.log_tail(400)

        assert terminate_within(second, 10) < 10
        assert task_record(first, task_id)["status"] == "running"
    finally:
        if second.process is not None and second.process.poll() is None:
            second.stop()
    assert terminate_within(first, 10) < 10
    # the first server stopped under its task: it says so itself, with what the task printed
    database = first.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db"
    with sqlite3.connect(database) as db:
        status, output = db.execute("SELECT status, output FROM anvil_tasks WHERE id = ?", (task_id,)).fetchone()
    assert status == "missing" and "task line 2" in output


def test_a_task_cut_off_by_a_crash_keeps_what_it_printed(first: AnvilServer) -> None:
    task_id = first.call("shared", "start", 5, 600)
    wait_for(lambda: task_record(first, task_id).get("state"), what="the task to print")
    time.sleep(1.5)  # output is written in batches, each second
    assert first.process is not None
    first.process.kill()  # SIGKILL: nothing runs on the way out
    first.process.wait()
    first.log_file.close()
    first.start(wait_for=("shared",))
    record = task_record(first, task_id)
    assert record["status"] == "missing"
    output = first.admin(f"anvil/api/tasks/{task_id}/output")["text"]
    assert output.splitlines() == [f"task line {i}" for i in range(5)]


FIRST_RELEASE_SCHEMA = """
CREATE TABLE anvil_sessions (token_hash VARCHAR(64) NOT NULL, id VARCHAR(32) NOT NULL, app VARCHAR(255) NOT NULL,
    client_type VARCHAR(32) NOT NULL, data TEXT NOT NULL, created FLOAT NOT NULL, last_used FLOAT NOT NULL,
    PRIMARY KEY (token_hash), UNIQUE (id));
CREATE TABLE anvil_tasks (id VARCHAR(32) NOT NULL, app VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL, launched FLOAT NOT NULL, started FLOAT, ended FLOAT, state TEXT, result TEXT,
    error TEXT, traceback TEXT, launched_by TEXT, output TEXT NOT NULL, output_dropped INTEGER NOT NULL,
    PRIMARY KEY (id));
CREATE TABLE anvil_log (seq INTEGER NOT NULL, time FLOAT NOT NULL, app VARCHAR(255) NOT NULL,
    function VARCHAR(255) NOT NULL, call_id VARCHAR(64) NOT NULL, stream VARCHAR(16) NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (seq));
INSERT INTO anvil_tasks VALUES ('aaaaaaaaaaaaaaaaaaaaaaaaa', 'shared', 'print_then_sleep', 'running', 1.0, 1.0,
    NULL, NULL, NULL, NULL, NULL, '{}', 'old output', 0);
INSERT INTO anvil_log VALUES (41, 1.0, 'shared', 'say', 'c1', 'stdout', 'an old line');
INSERT INTO anvil_log VALUES (42, 1.0, 'shared', 'say', 'c2', 'stdout', 'the last old line');
"""


def test_a_database_of_the_first_release_opens(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("old-root")
    write_app(root)
    server = AnvilServer(root, tmp_path_factory.mktemp("old-server"))
    folder = server.workdir / "jupyter_data_dir" / "jupyter_anvil"
    folder.mkdir(parents=True)
    with sqlite3.connect(folder / "anvil.db") as db:
        db.executescript(FIRST_RELEASE_SCHEMA)
    server.start(wait_for=("shared",))
    try:
        old = task_record(server, "a" * 25)
        assert old["status"] == "missing" and old["ended"] is not None  # its server (of that release) is gone
        assert server.call("shared", "say", "new", 2) == 2
        records = server.admin("anvil/api/logs", app="shared")["records"]
        assert [r["text"] for r in records[:2]] == ["an old line", "the last old line"]
        new = [r for r in records if r["text"].startswith("new line")]
        assert len(new) == 2 and all(r["seq"] > 42 for r in new)
        task_id = server.call("shared", "start", 1, 0)
        wait_for(lambda: task_record(server, task_id)["status"] == "completed", what="a task on the old database")
    finally:
        server.stop()


def test_sigterm_completes_while_another_process_holds_the_store_locked(first: AnvilServer) -> None:
    """The worst a sharing server can do: hold the write lock through our whole stop.
    Pending log records cannot be written; the stop still ends in its bound, and says why."""
    assert first.call("shared", "say", "pending", 3) == 3
    database = first.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert first.call("shared", "say", "cannot be stored yet", 3) == 3
        assert terminate_within(first, 15) < 15
    finally:
        holder.rollback()
        holder.close()
    log = first.log_path.read_text(errors="replace")
    assert "could not store the last app log records at stop" in log or "the store was still busy" in log


def test_a_crashed_servers_tasks_go_missing_while_another_runs_on(
    first: AnvilServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    second = sharing(first, tmp_path_factory.mktemp("survivor"))
    second.start(wait_for=("shared",))
    try:
        on_first = first.call("shared", "start", 2, 600)
        on_second = second.call("shared", "start", 2, 600)
        for server, task_id in ((first, on_first), (second, on_second)):
            wait_for(lambda: task_record(server, task_id)["status"] == "running", what="both tasks running")  # noqa: B023
        printed = "task line 0\ntask line 1\n"
        # the other server sees what the first one's task printed: it is in the store within a second
        wait_for(lambda: second.admin(f"anvil/api/tasks/{on_first}/output")["text"] == printed, what="output")
        assert first.process is not None
        first.process.kill()
        first.process.wait()
        first.log_file.close()
        # the survivor's next sweep (each heartbeat, 5 s) finds the first server's process gone
        wait_for(lambda: task_record(second, on_first)["status"] == "missing", timeout=20, what="the orphan missing")
        assert second.admin(f"anvil/api/tasks/{on_first}/output")["text"] == printed
        assert task_record(second, on_second)["status"] == "running"  # its own task is left alone
    finally:
        second.stop()
