"""Two real servers over one store (one SQLite data folder, or one PostgreSQL database) share
the work as one: each scheduled run fires once across them; an inbound mail is handled once;
a task running on one is followed live from the other's admin feed; a cookie set through one
opens through the other when both are given the same cookie keys (and is treated as absent
where the keys differ); a server killed with SIGKILL loses nothing the other needs: its
schedules go on firing, its running tasks are marked ``missing``, the mail it was handling is
marked failed (on this host at once; on another host once its heartbeat is stale)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import smtplib
import sqlite3
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from conftest import AnvilServer, free_port
from notebook_files import write_notebook
from pg_cluster import PostgresCluster
from test_app_loading import wait_for

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

AUTH_TOKEN = "test-token-not-for-apps"
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


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One pair for the scenarios that leave both servers up."""
    started = start_pair(request, tmp_path_factory)
    try:
        schedule = tick_schedule(started.a)
        admin(started.a, "PATCH", f"schedules/{schedule['id']}", {"paused": True})  # until a test resumes it
        yield started
    finally:
        stop_pair(started)


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


# -- 1. each scheduled run fires once across the servers ------------------------------------------
def test_each_scheduled_run_fires_once_across_both_servers(pair: Pair) -> None:
    schedule = tick_schedule(pair.a)
    sid = schedule["id"]
    before = {run["seq"] for run in runs(pair.a, sid)}
    admin(pair.a, "PATCH", f"schedules/{sid}", {"paused": False})
    try:
        # B reads the change within its refresh (5 s); from then on both compete for each run
        wait_for(lambda: not tick_schedule(pair.b)["paused"], timeout=10, what="B to see the schedule resumed")
        time.sleep(4 * PERIOD + 6)
    finally:
        admin(pair.a, "PATCH", f"schedules/{sid}", {"paused": True})
    time.sleep(1)  # a run claimed just before the pause is recorded
    found = [run for run in runs(pair.b, sid) if run["seq"] not in before]
    assert len(found) >= 5, found
    assert_each_due_time_ran_once(found, PERIOD)
    launched = [run for run in found if run["outcome"] == "launched"]
    assert launched, found
    # each launched run's task ran once: one line in the ledger each, and no other run's line
    for run in launched:
        wait_for(lambda: task(pair.b, run["task_id"])["status"] == "completed", what="the runs' tasks to end")  # noqa: B023
    ticks = [line.split()[1] for line in pair.lines("tick ")]
    every_launch = {run["task_id"] for run in runs(pair.a, sid) if run["outcome"] == "launched"}
    assert len(ticks) == len(set(ticks)) and set(ticks) <= every_launch, (ticks, every_launch)
    assert {run["task_id"] for run in launched} <= set(ticks)
    assert {run["server"] for run in found} <= {server_id(pair.a), server_id(pair.b)}


# -- 2. a SIGKILLed server's schedules, tasks and mail -----------------------------------------------
#: heartbeats each second; a server of another host is gone once its heartbeat is 6 s old
BEATS = ("--AnvilApp.server_heartbeat_seconds=1", "--AnvilApp.server_gone_seconds=6")


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    started = start_pair(request, tmp_path_factory, *BEATS)
    try:
        yield started
    finally:
        stop_pair(started)


class SlowMail:
    """A message sent to A whose handler is still running (it sleeps): the sender waits for
    its answer on a thread; what that thread got is kept."""

    def __init__(self, pair: Pair, subject: str) -> None:
        self.subject = subject
        self.outcome: BaseException | Any = None
        self.thread = threading.Thread(target=self._send, args=(pair.a,), daemon=True)
        self.thread.start()
        wait_for(lambda: pair.lines(f"mail {subject}"), timeout=60, what="A's handler to take the mail")
        assert inbox(pair.b)[subject]["status"] == "received"

    def _send(self, server: AnvilServer) -> None:
        try:
            self.outcome = send_mail(server, self.subject)
        except (smtplib.SMTPException, OSError) as e:
            self.outcome = e


def kill(server: AnvilServer) -> float:
    """SIGKILL: nothing runs on the way out. The time it died."""
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    server.log_file.close()
    return time.monotonic()


def crash_while_busy(pair: Pair, subject: str) -> tuple[str, SlowMail]:
    """A task running on A and a mail A is handling; a scheduled run already fired."""
    sid = tick_schedule(pair.a)["id"]
    wait_for(lambda: any(r["outcome"] == "launched" for r in runs(pair.a, sid)), timeout=60, what="a scheduled run")
    task_id = pair.a.call("work", "start", "sleeper", 600)
    wait_for(lambda: task(pair.b, task_id)["status"] == "running", what="A's task to run, as B sees it")
    return task_id, SlowMail(pair, subject)


def assert_taken_over(pair: Pair, task_id: str, mail: SlowMail, killed: float, within: float) -> None:
    """B marks A's task missing and A's mail failed within ``within`` seconds of the kill."""
    wait_for(lambda: task(pair.b, task_id)["status"] == "missing", timeout=within + 10, what="A's task missing")
    took = time.monotonic() - killed
    record = inbox(pair.b)[mail.subject]
    assert record["status"] == "failed" and "stopped before the handler answered" in record["outcome"], record
    assert time.monotonic() - killed < within and took < within, took
    mail.thread.join(30)
    # the sender was never told 250: it sends again (SMTP delivery is at-least-once)
    assert isinstance(mail.outcome, (smtplib.SMTPServerDisconnected, ConnectionError)), mail.outcome
    assert len(pair.lines(f"mail {mail.subject}")) == 1  # nobody ran the handler again


def assert_schedule_goes_on(pair: Pair, killed_at: float) -> None:
    """The survivor fires the runs due after the kill, each once."""
    sid = tick_schedule(pair.b)["id"]
    b_id = server_id(pair.b)
    since = time.time() - (time.monotonic() - killed_at) + 1  # a run due before this may be A's
    wait_for(
        lambda: len([r for r in runs(pair.b, sid) if r["due"] > since and r["outcome"] == "launched"]) >= 2,
        timeout=8 * PERIOD,
        what="two runs launched by the survivor",
    )
    every = runs(pair.b, sid)
    assert len({r["due"] for r in every}) == len(every), every
    after = [r for r in every if r["due"] > since]
    assert_each_due_time_ran_once(after, PERIOD)
    assert {r["server"] for r in after} == {b_id}, after


def test_a_sigkilled_servers_schedules_tasks_and_mail_are_taken_over(crash_pair: Pair) -> None:
    """On one host: the survivor sees the dead server's process gone at its next heartbeat."""
    pair = crash_pair
    task_id, mail = crash_while_busy(pair, "slow same host")
    killed = kill(pair.a)
    assert_taken_over(pair, task_id, mail, killed, within=6)  # a beat (1 s), with room for a busy machine
    assert_schedule_goes_on(pair, killed)
    # the mail sent again, to the survivor, is handled there, once
    send_mail(pair.b, "after the crash")
    assert len(pair.lines("mail after the crash")) == 1


def test_a_server_of_another_host_is_taken_for_gone_once_its_heartbeat_is_stale(crash_pair: Pair) -> None:
    """A's row says it runs on another host: B cannot look at its process, only at its
    heartbeat, which is stale 6 s (``server_gone_seconds``) after its last beat."""
    pair = crash_pair
    pair.execute("UPDATE anvil_servers SET host = %s WHERE id = %s", "another-host.invalid", server_id(pair.a))
    task_id, mail = crash_while_busy(pair, "slow other host")
    killed = kill(pair.a)
    time.sleep(max(0.0, killed + 3 - time.monotonic()))
    assert task(pair.b, task_id)["status"] == "running"  # its heartbeat is not stale yet: not taken for gone
    assert inbox(pair.b)[mail.subject]["status"] == "received"
    assert_taken_over(pair, task_id, mail, killed, within=6 + 1 + 4)  # stale, the next beat, a busy machine
    assert_schedule_goes_on(pair, killed)  # every due time since the kill ran once, on B: none waited


class Relay:
    """A mail relay on loopback that keeps what it is given."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(bytes(envelope.original_content or b""))
        return "250 2.0.0 Ok"


@pytest.fixture(params=["sqlite", "postgresql"])
def relay_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pair, int]]:
    """A pair whose mail relay is a port nothing listens on (yet)."""
    port = free_port()
    started = start_pair(request, tmp_path_factory, *BEATS, f"--AnvilApp.smtp_relay_url=smtp+plain://127.0.0.1:{port}")
    try:
        yield started, port
    finally:
        stop_pair(started)


def test_the_mail_a_sigkilled_server_was_sending_is_sent_once_by_the_survivor(relay_pair: tuple[Pair, int]) -> None:
    """A's relay is down: its message waits in the outbox (queued, owned by A). A is killed;
    B takes the message over and sends it, once, when the relay is back."""
    pair, port = relay_pair
    relay = Relay()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    try:

        def send() -> None:
            with contextlib.suppress(httpx.HTTPError):  # A is killed while the call waits for the relay
                pair.a.post("work", "send_mail", {"args": ["kept"]})

        threading.Thread(target=send, daemon=True).start()

        def outbox() -> dict[str, Any]:
            """The message as B lists it (in the outbox while it waits, then among the sent)."""
            found = admin(pair.b, "GET", "mail", app="work", limit=500)["messages"]
            return {m["subject"]: m for m in found}.get("kept") or {}

        wait_for(lambda: outbox().get("attempts", 0) >= 1, what="A's first attempt at the relay")
        assert outbox()["status"] == "queued" and outbox()["owner"] == server_id(pair.a)
        kill(pair.a)
        controller.start()
        wait_for(lambda: outbox().get("status") == "sent", timeout=40, what="B to send A's message")
        assert outbox()["owner"] == server_id(pair.b)
        time.sleep(2)
        assert len(relay.received) == 1 and b"Subject: kept" in relay.received[0]
    finally:
        with contextlib.suppress(AssertionError):  # not started: nothing to stop
            controller.stop()


# -- 3. an inbound mail is handled once ---------------------------------------------------------------
def test_an_inbound_mail_is_handled_once_by_the_server_that_took_it(pair: Pair) -> None:
    ids = {"A": server_id(pair.a), "B": server_id(pair.b)}
    for name, server in (("A", pair.a), ("B", pair.b)):
        for n in range(2):
            assert send_mail(server, f"to {name} {n}") == {}  # 250: its handler ran, on that server
    time.sleep(2)  # a while longer: nothing is handled again, by either server
    for name in ("A", "B"):
        for n in range(2):
            subject = f"to {name} {n}"
            assert len(pair.lines(f"mail {subject}")) == 1, pair.lines("mail ")
            for reader in (pair.a, pair.b):
                record = inbox(reader)[subject]
                assert record["status"] == "handled" and record["owner"] == ids[name], record


# -- 4. a task on one server, followed from the other's feed ---------------------------------------
def follow_task_on_other_server(pair: Pair, path: str) -> tuple[list[dict[str, Any]], list[float], str]:
    """Launch a printing task on A while following B's feed at ``path``: B's events of the
    task, the delay of each line (from its print on A to its event on B), the task's id."""

    async def run() -> tuple[list[dict[str, Any]], list[float], str]:
        url = f"ws://127.0.0.1:{pair.b.port}/{path}"
        headers = {"Authorization": f"token {pair.b.token}"}
        async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
            task_id = await asyncio.to_thread(pair.a.call, "work", "start", "printer", 6, 0.5)
            events: list[dict[str, Any]] = []
            delays: list[float] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                event = json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic()))
                if event.get("id") == task_id or event.get("task", {}).get("id") == task_id:
                    events.append(event)
                    if event["type"] == "task_output":
                        printed = [float(line.split(" at ")[1]) for line in event["text"].splitlines()]
                        delays += [time.time() - at for at in printed]
                    if event["type"] == "task" and event["task"]["status"] not in ("queued", "running"):
                        return events, delays, task_id
            raise AssertionError(f"B's feed did not tell the task's end: {events}")

    return asyncio.run(run())


def test_a_task_running_on_one_server_is_followed_live_from_the_others_feed(pair: Pair) -> None:
    events, delays, task_id = follow_task_on_other_server(pair, "anvil/api/feed")
    text = "".join(e["text"] for e in events if e["type"] == "task_output")
    assert [line.split(" at ")[0] for line in text.splitlines()] == [f"line {i}" for i in range(6)], events
    offsets = [e["offset"] for e in events if e["type"] == "task_output"]
    assert offsets == sorted(offsets) and offsets[-1] == len(text)
    # each line on B's feed about 2 s after its print on A at most: A writes output each second,
    # B polls each half second (with room for a busy machine)
    assert max(delays) < 3 and sorted(delays)[len(delays) // 2] < 2, delays
    statuses = [e["task"]["status"] for e in events if e["type"] == "task"]
    assert statuses[-1] == "completed" and "running" in statuses, statuses
    assert task(pair.b, task_id)["status"] == "completed"
    assert admin(pair.b, "GET", f"tasks/{task_id}/output")["text"] == text


def test_the_older_task_feed_of_one_server_tells_a_task_of_the_other(pair: Pair) -> None:
    events, _, _ = follow_task_on_other_server(pair, "anvil/api/tasks/feed")
    assert all(e["type"] == "task" for e in events)  # this feed never carried output
    statuses = [e["task"]["status"] for e in events]
    assert statuses[-1] == "completed" and "running" in statuses, statuses


def test_a_tasks_output_is_read_through_the_other_server_while_it_runs(pair: Pair) -> None:
    task_id = pair.a.call("work", "start", "printer", 8, 0.5)
    wait_for(
        lambda: "line 2 " in admin(pair.b, "GET", f"tasks/{task_id}/output")["text"],
        timeout=10,
        what="the output on B while the task runs on A",
    )
    assert task(pair.b, task_id)["status"] == "running"
    wait_for(lambda: task(pair.b, task_id)["status"] == "completed", what="the end, as B sees it")


# -- 5. cookie keys shared through configuration ---------------------------------------------------
def browser_call(server: AnvilServer, cookies: dict[str, str], function: str, *args: Any) -> httpx.Response:
    """A browser's call (client.js marks it), carrying ``cookies``."""
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=60) as client:
        return client.post(f"anvil/apps/work/_/call/{function}", json={"args": list(args)}, headers=BROWSER)


def set_cookies_through(server: AnvilServer) -> dict[str, str]:
    """A browser's cookies after it set one of each kind through ``server``."""
    jar: dict[str, str] = {}
    for kind, value in (("local", "Ada"), ("shared", "dark")):
        response = browser_call(server, jar, "set_cookie", kind, "k", value)
        assert response.status_code == 200, response.text
        jar.update(response.cookies)
    assert set(jar) == {"anvil-local", "anvil-shared"}, jar
    return jar


def test_a_cookie_set_through_one_server_is_read_through_the_other(pair: Pair) -> None:
    """Both are given one cookie keys file (``--AnvilApp.cookie_keys_file``)."""
    jar = set_cookies_through(pair.a)
    for kind, value in (("local", "Ada"), ("shared", "dark")):
        response = browser_call(pair.b, jar, "get_cookie", kind, "k")
        assert response.status_code == 200 and response.json()["response"] == value, response.text


def test_with_other_cookie_keys_a_server_takes_the_others_cookie_for_absent(
    pair: Pair, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A third server over the same store and notebooks, with cookie keys of its own: the
    cookies A sealed do not open there; they are absent, never an error."""
    workdir = tmp_path_factory.mktemp("c")
    options = [f"--AnvilApp.cookie_keys_file={workdir / 'own_keys'}", "--AnvilApp.task_spares=0"]
    if pair.database_url is None:
        (workdir / "jupyter_data_dir").symlink_to(pair.a.workdir / "jupyter_data_dir", target_is_directory=True)
    else:
        options.append(f"--AnvilApp.database_url={pair.database_url}")
    c = AnvilServer(pair.a.root, workdir, *options)
    c.start(wait_for=("work",))
    try:
        jar = set_cookies_through(pair.a)
        for kind in ("local", "shared"):
            response = browser_call(c, jar, "get_cookie", kind, "k")
            assert response.status_code == 200 and response.json()["response"] == "missing", response.text
        assert "could not be decrypted" in c.log_tail(200)
        own = set_cookies_through(c)  # its own cookies open there, and not on A
        assert browser_call(c, own, "get_cookie", "local", "k").json()["response"] == "Ada"
        assert browser_call(pair.a, own, "get_cookie", "local", "k").json()["response"] == "missing"
    finally:
        c.stop()
