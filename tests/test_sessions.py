"""server.session: one per window or client, restored before each call on any kernel,
saved after it, stored so it outlives the server, and expiring when idle."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import websockets.sync.client
from apps import write_sessions_app
from conftest import AnvilServer, private_server

SESSION = "X-Anvil-Session"


class HttpClient:
    """A plain HTTP caller that keeps the session token it is given, as client.js does."""

    def __init__(self, server: AnvilServer, app: str = "sessions") -> None:
        self.server, self.app = server, app
        self.token: str | None = None

    def post(self, function: str, *args: Any, **kwargs: Any) -> httpx.Response:
        headers = {SESSION: self.token} if self.token else {}
        response = self.server.post(self.app, function, {"args": list(args), "kwargs": kwargs}, headers=headers)
        self.token = response.headers.get(SESSION, self.token)
        return response

    def call(self, function: str, *args: Any, **kwargs: Any) -> Any:
        response = self.post(function, *args, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()["response"]


def test_a_session_follows_its_calls_across_kernels(anvil_server: AnvilServer) -> None:
    client = HttpClient(anvil_server)
    first_count, first_pid = client.call("count")
    assert first_count == 1 and client.token
    # keep the first kernel busy so the next calls land on the other one
    blocker = threading.Thread(target=lambda: anvil_server.call("sessions", "occupy", 1.5))
    blocker.start()
    time.sleep(0.3)
    second_count, second_pid = client.call("count")
    blocker.join()
    third_count, _ = client.call("count")
    assert (second_count, third_count) == (2, 3)
    assert second_pid != first_pid  # two kernel processes served one session


def test_concurrent_calls_writing_different_keys_keep_both(anvil_server: AnvilServer) -> None:
    client = HttpClient(anvil_server)
    client.call("put", "start", True)
    threads = [threading.Thread(target=client.call, args=("put", key, i, 1.0)) for i, key in enumerate("ab")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.call("view")["items"] == {"start": True, "a": 0, "b": 1}


def test_the_session_is_a_dict_of_portable_values(anvil_server: AnvilServer) -> None:
    client = HttpClient(anvil_server)
    client.call("put", "a", {"nested": [1, 2]})
    client.call("put", "when", None)
    client.call("append", "x")
    client.call("append", "y")
    view = client.call("view")
    assert view["keys"] == ["a", "items", "when"] and view["len"] == 3 and view["has_a"] is True
    assert view["items"]["items"] == ["x", "y"] and view["get_default"] == "default"
    client.call("remove", "a")
    assert client.call("view")["keys"] == ["items", "when"]
    assert client.post("remove", "a").json()["error"]["type"] == "KeyError"
    assert view["id"] == client.call("session_id") and view["id"] != client.token  # the public id is not the token


def test_special_values_survive_in_the_session(anvil_server: AnvilServer) -> None:
    client = HttpClient(anvil_server)
    body = {
        "args": ["when", None],
        "objects": [{"type": ["DateTime"], "path": ["args", 1], "value": "2024-02-29 10:00:00.000000+0200"}],
    }
    response = anvil_server.post("sessions", "put", body)
    client.token = response.headers[SESSION]
    view = client.post("view").json()
    assert {
        "type": ["DateTime"],
        "path": ["response", "items", "when"],
        "value": "2024-02-29 10:00:00.000000+0200",
    } in view["objects"]


def test_media_cannot_be_stored(anvil_server: AnvilServer) -> None:
    response = HttpClient(anvil_server).post("store_media")
    error = response.json()["error"]
    assert error["type"] == "anvil.server.SerializationError"
    assert "Tried to store illegal value in a anvil.server.session" in error["message"] and "Media" in error["message"]


def test_what_a_call_stored_before_failing_stays_stored(anvil_server: AnvilServer) -> None:
    client = HttpClient(anvil_server)
    client.call("put", "before", 1)
    assert client.post("store_then_fail", "during", 2).status_code == 500
    assert client.call("view")["items"] == {"before": 1, "during": 2}


def test_nested_calls_share_the_callers_session(anvil_server: AnvilServer) -> None:
    client = HttpClient(anvil_server)
    client.call("count")
    assert client.call("nested_count") == 2
    assert client.call("count")[0] == 3


def test_a_caller_without_a_token_gets_one_only_when_something_is_stored(anvil_server: AnvilServer) -> None:
    response = anvil_server.post("sessions", "view")
    assert response.status_code == 200 and SESSION not in response.headers
    stored = anvil_server.post("sessions", "put", {"args": ["k", "v"]})
    token = stored.headers[SESSION]
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert anvil_server.post("sessions", "view", headers={SESSION: token}).json()["response"]["items"] == {"k": "v"}
    assert anvil_server.post("sessions", "session_id").headers.get(SESSION)  # get_session_id() stores it


def test_unknown_or_foreign_tokens_are_expired_sessions(anvil_server: AnvilServer) -> None:
    stored = anvil_server.post("sessions", "put", {"args": ["k", "v"]}).headers[SESSION]
    for token in ("nonsense", "A" * 43, stored[:-1] + ("A" if stored[-1] != "A" else "B")):
        response = anvil_server.post("sessions", "view", headers={SESSION: token})
        assert response.status_code == 401, token
        assert response.json()["error"] == {"type": "anvil.server.SessionExpiredError", "message": "Session expired"}
    # a session belongs to its app
    assert anvil_server.post("core", "add", {"args": [1, 2]}, headers={SESSION: stored}).status_code == 401
    assert stored not in anvil_server.log_path.read_text()  # tokens are never logged whole


async def test_a_websocket_is_one_session(anvil_server: AnvilServer) -> None:
    async def exchange(socket: Any, message: dict[str, Any]) -> dict[str, Any]:
        await socket.send(json.dumps(message))
        return json.loads(await socket.recv())

    async with websockets.connect(anvil_server.ws_url("sessions")) as socket:
        # no token until the session holds something: the call that stores it tells it first
        assert await exchange(socket, {"type": "HELLO", "session": None}) == {"type": "SESSION", "session": None}
        told = await exchange(socket, {"type": "CALL", "id": "1", "command": "count"})
        token = told["session"]
        assert told == {"type": "SESSION", "session": token, "call": "1"} and len(token) >= 43
        assert json.loads(await socket.recv())["response"][0] == 1
        assert (await exchange(socket, {"type": "CALL", "id": "2", "command": "count"}))["response"][0] == 2
    async with websockets.connect(anvil_server.ws_url("sessions")) as socket:  # a reconnect resumes it
        assert (await exchange(socket, {"type": "HELLO", "session": token}))["session"] == token
        assert (await exchange(socket, {"type": "CALL", "id": "3", "command": "count"}))["response"][0] == 3
    assert HttpClient(anvil_server).post("view").status_code == 200
    http = HttpClient(anvil_server)
    http.token = token  # the same window falling back to HTTP
    assert http.call("count")[0] == 4
    async with websockets.connect(anvil_server.ws_url("sessions")) as socket:
        expired = await exchange(socket, {"type": "HELLO", "session": "A" * 43})
        assert expired == {
            "type": "SESSION",
            "session": None,
            "error": {"type": "anvil.server.SessionExpiredError", "message": "Session expired"},
        }
        reply = await exchange(socket, {"type": "CALL", "id": "4", "command": "count"})
        assert reply["error"]["type"] == "anvil.server.SessionExpiredError"
        fresh = await exchange(socket, {"type": "HELLO", "session": None})  # reset_session
        assert fresh == {"type": "SESSION", "session": None}
        told = await exchange(socket, {"type": "CALL", "id": "5", "command": "count"})
        assert told["call"] == "5" and told["session"] not in (None, token)
        assert json.loads(await socket.recv())["response"][0] == 1


# -- a server of our own: restart and expiry ------------------------------------------------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    def write(root: Path) -> None:
        write_sessions_app(root / "sessions.ipynb", kernels={"min": 1, "max": 1})

    with private_server(tmp_path_factory, "sessions", write, "--AnvilApp.session_idle_minutes=0.5") as server:
        yield server


def restart(server: AnvilServer) -> None:
    server.stop()
    server.start()


def test_sessions_survive_a_restart_and_expire_when_idle(own_server: AnvilServer) -> None:
    client = HttpClient(own_server)
    client.call("put", "kept", [1, 2, 3])
    restart(own_server)
    with websockets.sync.client.connect(own_server.ws_url("sessions")) as idle_socket:
        idle_socket.send(json.dumps({"type": "HELLO", "session": None}))
        assert json.loads(idle_socket.recv())["type"] == "SESSION"
        idle_socket.send(json.dumps({"type": "CALL", "id": "1", "command": "put", "args": ["k", 1]}))
        assert json.loads(idle_socket.recv())["call"] == "1"  # the session's token, now it is stored
        assert json.loads(idle_socket.recv()) == {"id": "1", "response": None, "objects": []}
        assert client.call("view")["items"] == {"kept": [1, 2, 3]}
        # the 30-second idle timeout leaves room for a slow restart above (its stop alone
        # may take 10 s on a loaded machine)
        for _ in range(4):  # used more often than the idle timeout: alive for longer than it
            time.sleep(9)
            assert client.call("view")["items"] == {"kept": [1, 2, 3]}
        time.sleep(31)
        response = client.post("view")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "anvil.server.SessionExpiredError"
        # a socket held open does not keep its idle session alive, and writes are not silently lost
        idle_socket.send(json.dumps({"type": "CALL", "id": "2", "command": "put", "args": ["k", 2]}))
        assert json.loads(idle_socket.recv())["error"]["type"] == "anvil.server.SessionExpiredError"
        idle_socket.send(json.dumps({"type": "CALL", "id": "3", "command": "view"}))
        assert json.loads(idle_socket.recv())["error"]["type"] == "anvil.server.SessionExpiredError"
    database = Path(own_server.workdir, "jupyter_data_dir", "jupyter_anvil", "anvil.db")
    assert database.exists()


def test_one_session_through_two_servers_sharing_a_store(
    own_server: AnvilServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Behind a load balancer a client's calls land on either server: its session is the
    store's, and concurrent writes of different keys through both servers keep both."""
    from test_two_servers import sharing

    other = sharing(own_server, tmp_path_factory.mktemp("sessions-other"))
    other.start(wait_for=("sessions",))
    try:
        client = HttpClient(own_server)
        client.call("put", "start", 0)
        through_other = HttpClient(other)
        through_other.token = client.token
        threads = [
            threading.Thread(target=c.call, args=("put", key, i, 1.0))
            for i, (c, key) in enumerate(((client, "a"), (through_other, "b")))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expected = {"start": 0, "a": 0, "b": 1}
        database = Path(own_server.workdir, "jupyter_data_dir", "jupyter_anvil", "anvil.db")
        with sqlite3.connect(database) as db:
            (data,) = db.execute("SELECT data FROM anvil_sessions WHERE data LIKE '%start%'").fetchone()
        assert {k: v["v"] for k, v in json.loads(data).items()} == expected
    finally:
        other.stop()


def test_a_write_through_one_server_is_read_through_the_other(
    own_server: AnvilServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from test_two_servers import sharing

    other = sharing(own_server, tmp_path_factory.mktemp("sessions-reader"))
    other.start(wait_for=("sessions",))
    try:
        client = HttpClient(own_server)
        client.call("put", "seen", 1)
        through_other = HttpClient(other)
        through_other.token = client.token
        through_other.call("put", "seen", 2)
        assert client.call("view")["items"] == {"seen": 2}
    finally:
        other.stop()
