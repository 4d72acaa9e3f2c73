"""App and task kernels on a real Jupyter Enterprise Gateway (``--GatewayClient.url``):
calls, nested calls, a background task's progress and kill, a reload, and a gateway that is
down at start (a clear app error, then the app loads once it is up)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apps import write_jobs_app
from conftest import AnvilServer, private_server
from eg_gateway import KERNEL_NAME, Gateway
from notebook_files import write_notebook
from test_app_loading import wait_for
from test_tasks import as_arg, launch, record, wait_status

AUTH = {"Authorization": "token test-token-not-for-apps"}

PING = """
import os
from jupyter_anvil import server

@server.callable
def ping(x):
    return {"x": x, "pid": os.getpid()}

@server.callable
def nested(x):
    return server.call("ping", x + 1)

@server.callable
def die():
    os._exit(3)

@server.callable
def make_media():
    from jupyter_anvil.media import BlobMedia
    return BlobMedia("text/plain", b"hello media" + bytes(range(256)) * 40, name="h.bin")

@server.callable
def describe_media(m):
    data = m.get_bytes()
    return [m.content_type, m.name, len(data), data[:11].decode(), data[11:] == bytes(range(256)) * 40]
"""


def write_apps(root: Path) -> None:
    write_notebook(root / "gw.ipynb", [PING], {"kernels": {"min": 1, "max": 1}})
    write_jobs_app(root / "jobs.ipynb")
    # packages per app are built on the server: a gateway's kernels cannot use them
    write_notebook(root / "pkgs.ipynb", [PING], {"kernels": {"min": 1, "max": 1}, "requirements": ["six>=1.16"]})


def gateway_options(gateway: Gateway) -> tuple[str, ...]:
    return (f"--GatewayClient.url={gateway.url}", f"--AnvilApp.kernel_name={KERNEL_NAME}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    running = Gateway(tmp_path_factory.mktemp("gateway"))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gateway: Gateway) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "gw", write_apps, *gateway_options(gateway)) as running:
        running.wait_until_loaded(("gw", "jobs"))
        yield running


def gateway_kernel_ids(gateway: Gateway) -> set[str]:
    return {str(k["id"]) for k in gateway.kernels()}


def test_the_gateway_serves_our_kernel_spec(gateway: Gateway) -> None:
    specs = gateway.kernelspecs()
    assert KERNEL_NAME in specs["kernelspecs"]  # type: ignore[operator]


def test_calls_and_nested_calls_run_on_gateway_kernels(server: AnvilServer, gateway: Gateway) -> None:
    assert server.apps()["gw"]["status"] == "ready", server.apps()["gw"]
    first = server.call("gw", "ping", 1)
    assert first["x"] == 1
    assert server.call("gw", "nested", 1) == {"x": 2, "pid": first["pid"]}
    # started by the gateway: listed there, and none of the server's own
    assert len(gateway_kernel_ids(gateway)) >= 2  # gw's and jobs' warm kernels
    assert server.kernel_processes() == []
    started = time.monotonic()
    for i in range(20):
        assert server.call("gw", "ping", i)["x"] == i
    assert time.monotonic() - started < 20


def test_a_call_through_the_gateway_is_not_held_back_by_delayed_acks(server: AnvilServer) -> None:
    """The gateway leaves Nagle's algorithm on for its WebSocket, so unless the server
    acknowledges each frame at once, every call waited ~40 ms for a delayed ACK (p50 48 ms
    against 2.5 ms for local kernels; now about 5 ms)."""
    url = f"{server.url}anvil/apps/gw/_/call/ping"
    took = []
    with httpx.Client(timeout=30) as client:  # one connection: only the call is timed
        for i in range(35):
            started = time.perf_counter()
            response = client.post(url, json={"args": [i]})
            took.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["response"]["x"] == i, response.text
    took = sorted(took[5:])  # the first ones open the connection
    took.sort()
    assert took[len(took) // 2] < 0.025, [round(t * 1000, 1) for t in took]


def test_media_crosses_the_gateway_both_ways(server: AnvilServer) -> None:
    """Media travel as binary buffers: binary WebSocket frames to and from the gateway."""
    body = server.post("gw", "make_media").json()
    (descriptor,) = body["objects"]
    assert descriptor["type"] == ["DataMedia"] and descriptor["name"] == "h.bin", body
    sent = {"args": [None], "objects": [{**descriptor, "path": ["args", 0]}]}
    described = server.post("gw", "describe_media", sent).json()
    assert described["response"] == ["text/plain", "h.bin", 11 + 256 * 40, "hello media", True], described
    assert server.call("gw", "ping", 9)["x"] == 9  # the kernel's connection is still whole


def test_a_background_task_reports_progress_and_is_killed(server: AnvilServer, gateway: Gateway) -> None:
    task = launch(server, "count_to", 10, 0.3)
    mid = wait_for(
        lambda: (r := record(server, task)["response"])["state"] and 0 < r["state"]["done"] < 10 and r,
        what="progress",
    )
    assert mid["status"] == "running" and mid["state"]["total"] == 10
    done = wait_status(server, task, "completed")
    assert done["response"]["state"] == {"done": 10, "total": 10}
    output = server.admin(f"anvil/api/tasks/{task['id']}/output")
    assert output["text"].splitlines() == [f"step {i}" for i in range(1, 11)]

    forever = launch(server, "forever")
    wait_for(lambda: (record(server, forever)["response"]["state"] or {}).get("ticks", 0) > 3, what="ticks")
    during = gateway_kernel_ids(gateway)
    assert server.post("jobs", "kill", as_arg(forever)).json()["response"] == "killed"
    killed = record(server, forever)["response"]
    assert killed["status"] == "killed" and killed["state"]["ticks"] > 3
    # the killed task's kernel is gone from the gateway too (a fresh warm one may start)
    wait_for(lambda: during - gateway_kernel_ids(gateway), 30, "the task kernel shut down on the gateway")


def test_an_app_with_requirements_is_refused_with_a_clear_app_error(server: AnvilServer) -> None:
    """Its environment would be built on the server, where the gateway's kernels cannot see
    it: the app is not started without its packages, and says what to do instead."""
    app = server.apps()["pkgs"]
    assert app["status"] == "error", app
    message = app["error"]
    assert "packages per app need local kernels" in message and "six>=1.16" in message, message
    assert "gateway's kernel image" in message and "Traceback" not in message, message
    assert app["env"] is None, app  # nothing was built, so no environment (nor log) to show
    assert server.admin("anvil/api/envs") in ([], {"envs": []}), "no environment built on the server"
    # its callers hear it is unavailable (the reason is for its author: the app log)
    for response in (
        server.post("pkgs", "ping", {"args": [1]}),
        httpx.post(f"{server.url}anvil/apps/pkgs/_/call/nested", content=b"{}", timeout=30),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "anvil.server.RuntimeUnavailableError", response.text
        assert "Traceback" not in response.text, response.text
    logged = [r["text"] for r in server.admin("anvil/api/logs", app="pkgs")["records"]]
    assert any("packages per app need local kernels" in text for text in logged), logged
    assert server.call("gw", "ping", 2)["x"] == 2  # the other apps are served as before


def test_a_kernel_that_dies_on_the_gateway_fails_its_call_and_is_replaced(server: AnvilServer) -> None:
    before = server.call("gw", "ping", 0)["pid"]
    died = server.post("gw", "die", timeout=60)
    assert died.status_code != 200 and "Traceback" not in died.text, died.text
    assert "exited unexpectedly" in died.json()["error"]["message"], died.text

    def replaced() -> bool:
        response = server.post("gw", "ping", {"args": [1]}, timeout=60)
        return response.status_code == 200 and response.json()["response"]["pid"] != before

    wait_for(replaced, 60, "a new kernel serving calls")


def test_a_reload_starts_new_gateway_kernels(server: AnvilServer, gateway: Gateway) -> None:
    before = server.call("gw", "ping", 0)["pid"]
    response = httpx.post(f"{server.url}anvil/api/apps/gw/reload", headers={"Authorization": f"token {server.token}"})
    assert response.status_code == 202, response.text
    wait_for(lambda: server.apps()["gw"]["status"] == "ready" and server.call("gw", "ping", 0)["pid"] != before)
    assert server.call("gw", "nested", 3)["x"] == 4
    assert server.kernel_processes() == []


def test_a_gateway_down_at_start_is_a_clear_app_error_until_it_is_up(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    later = Gateway(tmp_path_factory.mktemp("gateway-later"))  # its port chosen, nothing on it yet
    with private_server(tmp_path_factory, "gw-down", write_apps, *gateway_options(later)) as running:
        app = running.apps()["gw"]
        assert app["status"] == "error", app
        assert "gateway" in app["error"].lower() and "Traceback" not in app["error"], app["error"]
        failed = running.post("gw", "ping", {"args": [1]})
        assert 400 <= failed.status_code < 600 and failed.status_code != 500, failed.text
        assert "Traceback" not in failed.text
        later.start()  # no reload asked: the app is loaded again on its own
        try:
            wait_for(lambda: running.apps()["gw"]["status"] == "ready", 60, "the app loaded on the gateway")
            assert running.call("gw", "ping", 7)["x"] == 7
        finally:
            later.stop()


def test_a_gateway_that_goes_away_fails_calls_clearly_and_the_pool_recovers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    flaky = Gateway(tmp_path_factory.mktemp("gateway-flaky"))
    flaky.start()
    try:
        with private_server(tmp_path_factory, "gw-flaky", write_apps, *gateway_options(flaky)) as running:
            running.wait_until_loaded(("gw",))
            assert running.call("gw", "ping", 1)["x"] == 1
            flaky.stop()  # its kernels go with it
            failed = running.post("gw", "ping", {"args": [2]}, timeout=90)
            assert failed.status_code == 503, failed.text
            assert failed.json()["error"]["type"] == "anvil.server.RuntimeUnavailableError"
            assert "Traceback" not in failed.text
            flaky.start()  # the same port: the pool's retries find it again, no reload needed

            def answered() -> bool:
                response = running.post("gw", "ping", {"args": [3]}, timeout=90)
                return response.status_code == 200 and response.json()["response"]["x"] == 3

            wait_for(answered, 120, "a call answered once the gateway is back")
    finally:
        flaky.stop()


@contextlib.contextmanager
def delayed_gateway(
    tmp_path_factory: pytest.TempPathFactory, label: str, seconds: int
) -> Iterator[tuple[Gateway, Path]]:
    """A gateway whose kernels wait as many seconds as the file it yields says before they
    start (``seconds`` at first): a slow gateway, made slow or fast again by the test."""
    folder = tmp_path_factory.mktemp(label)
    delay = folder / "start-delay"
    delay.write_text(str(seconds))
    gateway = Gateway(folder, start_delay_file=delay)
    gateway.start()
    try:
        yield gateway, delay
    finally:
        gateway.stop()


def test_a_slow_gateway_is_a_clear_app_error_and_the_pool_recovers_when_it_is_fast_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Kernels that take longer to start on the gateway than ``load_timeout``: the app's
    error says so (no traceback, its calls a 503), no kernel is left behind on the gateway,
    and once kernels start in time again the app is loaded again on its own."""
    with delayed_gateway(tmp_path_factory, "gateway-slow", 30) as (slow, delay):
        options = (*gateway_options(slow), "--AnvilApp.load_timeout=4")
        with private_server(tmp_path_factory, "gw-slow", write_apps, *options) as running:
            running.wait_until_loaded(("gw",), timeout=120)
            app = running.apps()["gw"]
            assert app["status"] == "error", app
            message = app["error"]
            assert "4 s" in message and "gateway" in message.lower() and "Traceback" not in message, message
            failed = running.post("gw", "ping", {"args": [1]})
            assert failed.status_code == 503 and "Traceback" not in failed.text, failed.text
            delay.write_text("0")  # fast again: no reload asked
            wait_for(lambda: running.apps()["gw"]["status"] == "ready", 90, "the app loaded once kernels start in time")
            assert running.call("gw", "ping", 7)["x"] == 7
            served = {str(k["id"]) for k in slow.kernels()}

            # the kernels that started too late were shut down on the gateway, not left running
            def only_serving_kernels() -> bool:
                return len(served) <= 4 and {str(k["id"]) for k in slow.kernels()} <= served

            wait_for(only_serving_kernels, 60, "no late kernel left on the gateway")


def test_a_gateway_that_turns_slow_fails_calls_clearly_and_the_pool_recovers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A served app whose kernel dies while the gateway is slow: its replacement times out
    (retried by the pool, with a back-off), calls meanwhile are a clear 503, and the pool
    serves again once the gateway starts kernels in time, with no reload asked."""
    with delayed_gateway(tmp_path_factory, "gateway-turns-slow", 0) as (gateway, delay):
        options = (*gateway_options(gateway), "--AnvilApp.load_timeout=4")
        with private_server(tmp_path_factory, "gw-turns-slow", write_apps, *options) as running:
            running.wait_until_loaded(("gw",), timeout=120)
            before = running.call("gw", "ping", 1)["pid"]
            delay.write_text("30")
            died = running.post("gw", "die", timeout=60)
            assert died.status_code != 200 and "Traceback" not in died.text, died.text

            def problem() -> str | None:
                error = running.apps()["gw"]["error"]  # the pool's problem, while it has one
                return error if error and "failed to start" in error else None

            said = wait_for(problem, 60, "the pool's replacement timing out")
            assert "4 s" in said and "Traceback" not in said, said
            failed = running.post("gw", "ping", {"args": [2]}, timeout=60)
            assert failed.status_code == 503, failed.text
            assert failed.json()["error"]["type"] == "anvil.server.RuntimeUnavailableError", failed.text
            assert "Traceback" not in failed.text
            delay.write_text("0")

            def answered() -> bool:
                response = running.post("gw", "ping", {"args": [3]}, timeout=60)
                return response.status_code == 200 and response.json()["response"]["pid"] != before

            wait_for(answered, 90, "a call answered by a new kernel once the gateway is fast again")


def test_a_gateway_allowed_to_receive_the_servers_token_stops_the_server_clearly(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """jupyter_server sends the variables GatewayClient.allowed_envs lists to every kernel:
    naming a credential of the server there would hand it to server code."""
    unused = Gateway(tmp_path_factory.mktemp("gateway-unused"))  # never started: the server stops first
    root = tmp_path_factory.mktemp("gw-leak-root")
    write_apps(root)
    server = AnvilServer(
        root,
        tmp_path_factory.mktemp("gw-leak"),
        *gateway_options(unused),
        "--GatewayClient.allowed_envs=LANG,JUPYTER_TOKEN",
    )
    with pytest.raises(AssertionError):
        server.start()
    assert "--GatewayClient.allowed_envs lists JUPYTER_TOKEN" in server.log_path.read_text()
