"""Two real servers over one store (one SQLite data folder, or one PostgreSQL database); one
is killed with SIGKILL, and loses nothing the other needs: its schedules go on firing, once
each, on the survivor; its running tasks are marked ``missing``, the inbound mail it was
handling is marked failed (the sender, never answered 250, sends again), and the mail it was
sending is sent by the survivor, once. On this host the survivor knows at its next heartbeat
(by the dead server's process); on another host once the dead server's heartbeat is stale
(``--AnvilApp.server_gone_seconds``)."""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from conftest import AnvilServer, free_port
from server_pairs import (
    PERIOD,
    Pair,
    admin,
    assert_each_due_time_ran_once,
    inbox,
    kill,
    runs,
    send_mail,
    server_id,
    start_pair,
    stop_pair,
    task,
    tick_schedule,
)
from test_app_loading import wait_for

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


@pytest.mark.parametrize("beat", ["0", "-1", "nan"])
def test_a_heartbeat_that_is_no_positive_time_stops_the_server_with_a_clear_message(
    beat: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    option = f"--AnvilApp.server_heartbeat_seconds={beat}"
    server = AnvilServer(tmp_path_factory.mktemp("beat-root"), tmp_path_factory.mktemp("beat"), option)
    with pytest.raises(AssertionError):
        server.start()
    assert server.process is not None and server.process.wait(10) == 2
    assert "server_heartbeat_seconds must be above 0" in server.log_path.read_text()
