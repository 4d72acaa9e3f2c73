"""Two real servers over one notebook folder and one store (SQLite: one data folder;
PostgreSQL: one database), serving an app that has a schedule, background tasks, cookies,
an email handler and email.send, all writing what they did to a ledger file; and what the
tests read of them. Used by test_servers_share_work.py and test_servers_crash.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import smtplib
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer
from notebook_files import write_notebook
from pg_cluster import PostgresCluster

#: the schedule's period, seconds: the shortest that leaves a task kernel time to start
PERIOD = 3

APP = """
import os, sys, time
from jupyter_anvil import email, server

LEDGER = {ledger!r}

def note(line):
    # O_APPEND: one write per line, so lines from several kernels never interleave
    with open(LEDGER, "a") as f:
        f.write(line + "\\n")

@server.scheduled("every {period} seconds", name="tick")
@server.background_task
def tick():
    note(f"tick {{server.context.background_task_id}}")

@server.background_task
def printer(lines, gap):
    for i in range(lines):
        print(f"line {{i}} at {{time.time():.3f}}", flush=True)
        time.sleep(gap)
    return "printed"

@server.background_task
def sleeper(seconds):
    server.task_state["started"] = True
    time.sleep(seconds)

@server.callable
def start(name, *args):
    return server.launch_background_task(name, *args).get_id()

@server.callable
def set_cookie(kind, key, value):
    getattr(server.cookies, kind)[key] = value

@server.callable
def get_cookie(kind, key):
    return getattr(server.cookies, kind).get(key, "missing")

@server.callable
def send_mail(subject):
    return email.send(to="ann@example.org", subject=subject, text="Hello.").message_id

@email.handle_message
def incoming(msg):
    note(f"mail {{msg.subject}}")
    if msg.subject.startswith("slow"):
        time.sleep(120)
"""

BROWSER = {"X-Anvil-Client": "browser"}


class Pair:
    """Two servers over one store and one notebook folder, and what the test reads of both."""

    def __init__(self, a: AnvilServer, b: AnvilServer, ledger: Path, database_url: str | None) -> None:
        self.a, self.b, self.ledger, self.database_url = a, b, ledger, database_url

    def lines(self, prefix: str) -> list[str]:
        try:
            text = self.ledger.read_text()
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.startswith(prefix)]

    def execute(self, statement: str, *params: Any) -> None:
        """Run one SQL statement on the shared store (what another host would have done)."""
        if self.database_url is None:
            database = self.a.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db"
            with sqlite3.connect(database, timeout=30) as db:
                db.execute(statement.replace("%s", "?"), params)
            return
        import psycopg

        with psycopg.connect(self.database_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as db:
            db.execute(statement, params)  # type: ignore[arg-type]  # the test's own statement


def start_pair(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    *extra: str,
    shared_cookie_keys: bool = True,
) -> Pair:
    """Start A, then B, over one store: SQLite (B's data folder is A's) or PostgreSQL (one
    database). With ``shared_cookie_keys`` both are given one cookie keys file, as operators
    share it between machines (on SQLite they share the data folder, and so the file, anyway)."""
    root = tmp_path_factory.mktemp("work-root")
    ledger = root / "ledger.txt"
    source = APP.format(ledger=str(ledger), period=PERIOD)
    write_notebook(root / "work.ipynb", [source], {"kernels": {"min": 1, "max": 1}})
    options: tuple[str, ...] = ("--AnvilApp.task_spares=1", *extra)
    database_url = None
    if request.param == "postgresql":
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        database_url = cluster.create_database()
        options += (f"--AnvilApp.database_url={database_url}",)
    keys = tmp_path_factory.mktemp("keys") / "cookie_keys"
    first_options = (f"--AnvilApp.cookie_keys_file={keys}",) if shared_cookie_keys else ()
    a = AnvilServer(root, tmp_path_factory.mktemp("a"), *options, *first_options)
    a.start(wait_for=("work",))
    second_dir = tmp_path_factory.mktemp("b")
    if database_url is None:  # SQLite: the second server's data folder is the first one's
        (second_dir / "jupyter_data_dir").symlink_to(a.workdir / "jupyter_data_dir", target_is_directory=True)
    b = AnvilServer(root, second_dir, *options, *first_options)
    try:
        b.start(wait_for=("work",))
    except BaseException:
        a.stop()
        raise
    return Pair(a, b, ledger, database_url)


def stop_pair(pair: Pair) -> None:
    for server in (pair.b, pair.a):
        if server.process is not None and server.process.poll() is None:
            server.stop()


def admin(server: AnvilServer, method: str, path: str, body: Any = None, **params: Any) -> Any:
    response = httpx.request(
        method,
        f"{server.url}anvil/api/{path}",
        json=body,
        params=params,
        headers={"Authorization": f"token {server.token}"},
        timeout=30,
    )
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def tick_schedule(server: AnvilServer) -> dict[str, Any]:
    found = [s for s in admin(server, "GET", "schedules", app="work")["schedules"] if s["name"] == "tick"]
    assert len(found) == 1, found
    return found[0]  # type: ignore[no-any-return]


def runs(server: AnvilServer, schedule_id: str) -> list[dict[str, Any]]:
    """The schedule's runs, oldest first."""
    return list(reversed(admin(server, "GET", f"schedules/{schedule_id}/runs", limit=1000)["runs"]))


def task(server: AnvilServer, task_id: str) -> dict[str, Any]:
    return admin(server, "GET", f"tasks/{task_id}")  # type: ignore[no-any-return]


def server_id(server: AnvilServer) -> str:
    """The server's instance id, as its feed's hello says it."""

    async def hello() -> str:
        url = f"ws://127.0.0.1:{server.port}/anvil/api/feed"
        headers = {"Authorization": f"token {server.token}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            return str(json.loads(await socket.recv())["server"])

    return asyncio.run(hello())


def send_mail(server: AnvilServer, subject: str) -> Any:
    """A message to the app through the server's own SMTP port, as a sending server sends it."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "alice@example.com", "work@example.com", subject
    message.set_content("Hello.")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as client:
        return client.send_message(message)


def inbox(server: AnvilServer) -> dict[str, dict[str, Any]]:
    """The app's inbox as ``server`` lists it, by subject."""
    return {m["subject"]: m for m in admin(server, "GET", "mail", app="work", box="inbox", limit=500)["messages"]}


def assert_each_due_time_ran_once(found: list[dict[str, Any]], period: float) -> None:
    """One run a due time, and no due time between the first and the last without its run."""
    dues = [run["due"] for run in found]
    assert len(dues) == len(set(dues)), f"a due time fired twice: {found}"
    ordered = sorted(dues)
    gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(ordered)]
    assert all(gap == period for gap in gaps), f"due times missed: gaps {gaps} in {found}"


def kill(server: AnvilServer) -> float:
    """SIGKILL: nothing runs on the way out. The time it died."""
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    server.log_file.close()
    return time.monotonic()
