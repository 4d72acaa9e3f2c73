"""A server on PostgreSQL (--AnvilApp.database_url), and the database URLs the store refuses
at start-up: each said in one line that names the database (never its password), the
server stopped with status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import AnvilServer, free_port, private_server
from notebook_files import write_notebook
from pg_cluster import PostgresCluster

from jupyter_anvil.host.store import Store, StoreError
from jupyter_anvil.host.store.urls import database_url

COUNTER = """
import time
from jupyter_anvil import server

@server.callable
def bump(note=""):
    print("bumped", note)
    server.session["n"] = server.session.get("n", 0) + 1
    return server.session["n"]

@server.background_task
def count(n):
    for i in range(n):
        server.task_state["i"] = i
    print("counted\\0with a NUL")
    return n

@server.callable
def launch(n):
    return server.launch_background_task("count", n).get_id()
"""


@pytest.fixture(scope="module")
def postgres_server(
    tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster
) -> Iterator[AnvilServer]:
    url = postgres_cluster.create_database()

    def write(root: Path) -> None:
        write_notebook(root / "counter.ipynb", [COUNTER], {"kernels": {"min": 1, "max": 1}})

    with private_server(tmp_path_factory, "on-postgres", write, f"--AnvilApp.database_url={url}") as server:
        server.wait_until_loaded(("counter",))
        server.database = url  # type: ignore[attr-defined]
        yield server


def test_a_server_on_postgresql_keeps_sessions_tasks_and_the_log_there(postgres_server: AnvilServer) -> None:
    server = postgres_server
    first = server.post("counter", "bump", {"args": ["one"]})
    assert first.status_code == 200, first.text
    token = first.headers["X-Anvil-Session"]
    again = server.post("counter", "bump", {"args": ["two"]}, headers={"X-Anvil-Session": token})
    assert again.json()["response"] == 2
    task_id = server.call("counter", "launch", 3)
    deadline = time.monotonic() + 60
    while (record := server.admin(f"anvil/api/tasks/{task_id}"))["status"] != "completed":
        assert time.monotonic() < deadline, record
        time.sleep(0.2)
    assert record["result"] == 3 and record["state"] == {"i": 2}
    output = server.admin(f"anvil/api/tasks/{task_id}/output")["text"]
    assert "counted\ufffdwith a NUL" in output  # PostgreSQL holds no NUL: the replacement character
    texts = [r["text"] for r in server.admin("anvil/api/logs", app="counter")["records"]]
    assert "bumped one\n" in texts and "bumped two\n" in texts
    # it is all in PostgreSQL, not in a SQLite file beside it
    engine = sa.create_engine(server.database)  # type: ignore[attr-defined]
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM anvil_sessions")).scalar() == 1
        assert db.execute(sa.text("SELECT status FROM anvil_tasks WHERE id = :i"), {"i": task_id}).scalar() == (
            "completed"
        )
        assert db.execute(sa.text("SELECT count(*) FROM anvil_log WHERE app = 'counter'")).scalar() >= 2
    engine.dispose()
    assert not (server.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db").exists()


def test_long_names_and_big_numbers_in_queries_are_no_rows_on_postgresql_too(postgres_server: AnvilServer) -> None:
    # names longer than the column, or than PostgreSQL's index entries: no rows, as on SQLite
    for path, key in (("anvil/api/logs", "records"), ("anvil/api/tasks", "tasks")):
        for odd in ("x" * 5000, "é" * 3000):
            assert postgres_server.admin(path, app=odd)[key] == [], (path, odd)
    # a seq past PostgreSQL's INTEGER column: no records, not a 500
    assert postgres_server.admin("anvil/api/logs", since=2**40)["records"] == []
    assert postgres_server.admin("anvil/api/logs", since=2**63 - 1)["records"] == []
    for before in ("nan", "inf", "-inf", "1e400"):  # PostgreSQL's floats take them all
        assert postgres_server.admin("anvil/api/tasks", before=before)["tasks"] is not None


# -- database URLs refused at start-up ---------------------------------------------------------------


def start_and_fail(tmp_path: Path, url: str, *python_options: str) -> str:
    """Start a server on ``url``; it must stop by itself with status 2. Its output."""
    root = tmp_path / "root"
    write_notebook(root / "counter.ipynb", [COUNTER], {"kernels": {"min": 1, "max": 1}})
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(tmp_path / name.lower())
    command = [
        sys.executable, *python_options, str(root), f"--ServerApp.port={free_port()}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.open_browser=False", f"--AnvilApp.database_url={url}",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    return output


def test_a_database_that_cannot_be_reached_stops_the_start_naming_it_without_its_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    output = start_and_fail(tmp_path, f"postgresql://anvil:s3cret-pw@127.0.0.1:{port}/apps", "-m", "jupyter_anvil")
    assert (
        f"--AnvilApp.database_url: cannot reach the store's database postgresql+psycopg://anvil:***@127.0.0.1:{port}/apps"
        in output
    )
    assert "s3cret-pw" not in output


def test_postgresql_without_its_driver_says_what_to_install(tmp_path: Path) -> None:
    hide_psycopg = (
        "import sys, runpy; sys.modules['psycopg'] = None; runpy.run_module('jupyter_anvil', run_name='__main__')"
    )
    output = start_and_fail(tmp_path, "postgresql+psycopg://anvil:pw@127.0.0.1/apps", "-c", hide_psycopg)
    assert "needs the psycopg driver, which is not installed: pip install 'jupyter-anvil[postgresql]'" in output
    assert ":pw@" not in output


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("not a url", "not a database URL"),
        ("mysql://anvil:pw@127.0.0.1/apps", "mysql is not a database the store runs on"),
        ("postgresql+psycopg2://anvil:pw@127.0.0.1/apps", "the store runs on postgresql through psycopg only"),
    ],
)
def test_urls_the_store_cannot_use_are_refused_clearly(url: str, said: str) -> None:
    with pytest.raises(StoreError, match=said) as refused:
        Store(url)
    assert "pw" not in str(refused.value)


def test_postgresql_urls_mean_psycopg_3() -> None:
    for scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        url = database_url(f"{scheme}://anvil:pw@db.example:5433/apps?sslmode=require")
        assert url.drivername == "postgresql+psycopg"
        assert (url.host, url.port, url.database, url.query) == ("db.example", 5433, "apps", {"sslmode": "require"})


def test_postgresql_without_its_driver_is_refused_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"pip install 'jupyter-anvil\[postgresql\]'"):
        Store("postgresql://anvil@127.0.0.1/apps")
