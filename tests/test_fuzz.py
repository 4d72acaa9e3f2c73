"""Malformed calls, generated (hypothesis, bounded), against the real server over HTTP and
the WebSocket: each is the caller's fault, so a clear 4xx (or an error reply to that call
id), never a 500 of the server's own, and every call id gets exactly one reply.

Only ``core``'s ``echo`` is called: it never raises, so any 5xx would be the server's.
The counts by status are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import AnvilServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

KINDS = ["Long", "Float", "DateTime", "Date", "DataMedia", "ValueType", "ClassType", "Primitive", "Nope", ""]
leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(KINDS)
)
json_value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
ODD_VALUES = ["Infinity", "-Infinity", "NaN", "2024-02-28 09:30:00.000000+0000", "2024-02-30", "9" * 5000]
path_step = st.sampled_from(["args", "kwargs", "objects"]) | st.integers(-2, 3) | st.text(max_size=3) | json_value
descriptor = st.fixed_dictionaries(
    {},
    optional={
        "type": st.lists(st.sampled_from(KINDS) | json_value, max_size=3) | st.sampled_from(KINDS) | json_value,
        "path": st.lists(path_step, max_size=4) | json_value,
        "value": json_value | st.sampled_from(ODD_VALUES),
        "id": json_value,
        "typeName": st.sampled_from(["core.Point", "os.system", "no.such.Type", "Point"]) | json_value,
        "base64": st.sampled_from(["aGk=", "not base64!", ""]) | json_value,
        "mime-type": json_value,
        "name": json_value,
    },
)
call_body = st.fixed_dictionaries(
    {},
    optional={
        "args": st.lists(json_value, max_size=3) | json_value,
        "kwargs": st.dictionaries(st.text(max_size=6), json_value, max_size=3) | json_value,
        "objects": st.lists(descriptor | json_value, max_size=3) | json_value,
    },
)


def _nested(depth: int, opener: str) -> str:
    closer = "]" if opener == "[" else "}"
    inner = "1" if opener == "[" else ""
    if opener == "{":
        return '{"args": [' + '{"a":' * depth + "1" + "}" * depth + "]"
    return '{"args": [' + opener * depth + inner + closer * depth + "]"


def _with_surrogate(body: dict[str, Any], escape: str) -> str:
    """A call body whose text holds a lone surrogate escape inside a string."""
    text = json.dumps({"args": ["<S>"], "kwargs": {"<S>": 1}, **body})
    return text.replace("<S>", escape)


#: the inside of a call object: what follows ``{"type": "CALL", "id": ..., "command": ...,``
body_text = st.one_of(
    call_body.map(lambda b: json.dumps(b)[1:]),
    st.builds(lambda d, o: _nested(d, o)[1:] + "}", st.integers(90, 3000), st.sampled_from(["[", "{"])),
    st.builds(
        lambda b, e: _with_surrogate(b, e)[1:],
        st.just({}) | call_body.filter(lambda b: "args" not in b and "kwargs" not in b),
        st.sampled_from(["\\ud800", "\\udfff", "x\\udc00y", "\\ud83d"]),
    ),
    st.integers(300, 6000).map(lambda n: '"args": [' + "9" * n + "]}"),
    st.sampled_from(['"args": [NaN]}', '"args": [Infinity]}', '"args": [1e999]}', '"args": [-1e400]}']),
    st.text(max_size=30).map(lambda t: t + "}"),
)


def http_body() -> st.SearchStrategy[bytes]:
    whole = body_text.map(lambda inner: ("{" + inner).encode("utf-8", "surrogatepass"))
    return st.one_of(whole, json_value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]


@pytest.fixture(scope="module")
def http_statuses() -> Iterator[Counter[int]]:
    counts: Counter[int] = Counter()
    yield counts
    print(f"\nfuzz HTTP: {sum(counts.values())} requests, by status: {dict(sorted(counts.items()))}")


@pytest.fixture(scope="module")
def ws_outcomes() -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    yield counts
    print(f"\nfuzz WebSocket: {sum(counts.values())} messages, by outcome: {dict(sorted(counts.items()))}")


def test_malformed_http_calls_are_4xx(anvil_server: AnvilServer, http_statuses: Counter[int]) -> None:
    url = f"{anvil_server.url}anvil/apps/core/_/call/echo"
    with httpx.Client(timeout=60) as client:

        @FUZZ
        @given(body=http_body(), content_type=st.sampled_from(CONTENT_TYPES))
        def one(body: bytes, content_type: str) -> None:
            response = client.post(url, content=body, headers={"Content-Type": content_type})
            http_statuses[response.status_code] += 1
            assert response.status_code < 500, (body[:300], response.text[:300])
            reply = response.json()
            if response.status_code >= 400:
                assert set(reply) == {"error"} and reply["error"]["message"], reply
                assert "Traceback" not in response.text
            else:
                assert "response" in reply

        one()
        assert client.post(url, json={"args": [1]}).json()["response"] == {"args": [1], "kwargs": {}}


class Replies:
    """Everything the server sends on one socket, by call id."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.by_id: Counter[Any] = Counter()
        self.last: dict[Any, dict[str, Any]] = {}

    def wait_for(self, call_id: str, timeout: float = 60) -> dict[str, Any]:
        while self.by_id[call_id] == 0:
            frame = self.socket.recv(timeout=timeout)
            if isinstance(frame, bytes):
                continue  # Media of a reply
            message = json.loads(frame)
            if message.get("type") == "CHUNK_HEADER":
                continue
            key = message.get("id")
            self.by_id[key if isinstance(key, str) else repr(key)] += 1
            self.last[key if isinstance(key, str) else repr(key)] = message
        return self.last[call_id]


def test_malformed_socket_calls_each_get_one_error_reply(anvil_server: AnvilServer, ws_outcomes: Counter[str]) -> None:
    counter = iter(range(10**9))
    with ws_connect(anvil_server.ws_url("core"), max_size=64 * 1024 * 1024) as socket:
        replies = Replies(socket)

        @FUZZ
        @given(inner=body_text, command=st.just("echo") | json_value, stray=st.binary(max_size=32) | st.none())
        def one(inner: str, command: Any, stray: bytes | None) -> None:
            call_id = f"fuzz-{next(counter)}"
            if stray is not None:
                socket.send(stray)  # a binary frame with no header: dropped
            head = json.dumps({"type": "CALL", "id": call_id, "command": command})[:-1]
            text = head + ("," + inner if inner.strip() not in ("}", "") else "}")
            socket.send(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
            reply = replies.wait_for(call_id)
            if "error" in reply:
                ws_outcomes[reply["error"]["type"]] += 1
                assert reply["error"]["type"] in (
                    "anvil.server.SerializationError",
                    "anvil.server.NoServerFunctionError",
                    "anvil.server.PermissionDenied",
                ), (text[:300], reply)
            else:
                ws_outcomes["response"] += 1

        one()
        # the socket still works, and no call id was answered twice
        socket.send(json.dumps({"type": "CALL", "id": "after", "command": "echo", "args": [2]}))
        assert replies.wait_for("after")["response"] == {"args": [2], "kwargs": {}}
        twice = {k: n for k, n in replies.by_id.items() if n > 1 and str(k).startswith("fuzz-")}
        assert not twice, twice
    assert anvil_server.call("core", "echo", 3) == {"args": [3], "kwargs": {}}


@FUZZ
@given(
    session=json_value
    | st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=43, max_size=43),
    client=json_value | st.sampled_from(["browser", "http"]),
    header=st.dictionaries(st.sampled_from(["requestId", "mediaId", "chunkIndex", "lastChunk"]), json_value),
    frame=st.binary(max_size=64),
)
def _hello_and_chunks(socket: ClientConnection, session: Any, client: Any, header: Any, frame: bytes) -> None:
    # stray chunk headers and frames, then a HELLO: exactly one SESSION answers it
    socket.send(json.dumps({"type": "CHUNK_HEADER", **header}))
    socket.send(frame)
    socket.send(json.dumps({"type": "HELLO", "session": session, "client": client}))
    reply = json.loads(socket.recv(timeout=30))
    assert reply["type"] == "SESSION", reply
    if reply.get("error"):
        assert reply["session"] is None and reply["error"]["type"] == "anvil.server.SessionExpiredError"
    else:  # a fresh session: its token comes once it holds something
        assert reply == {"type": "SESSION", "session": None}, reply


def test_malformed_hellos_and_chunk_headers_each_get_an_answer(anvil_server: AnvilServer) -> None:
    with ws_connect(anvil_server.ws_url("core")) as socket:
        _hello_and_chunks(socket)  # type: ignore[call-arg]
        socket.send(json.dumps({"type": "HELLO", "session": None, "client": "browser"}))
        assert json.loads(socket.recv(timeout=30))["type"] == "SESSION"
        socket.send(json.dumps({"type": "CALL", "id": "after", "command": "echo", "args": [1]}))
        assert json.loads(socket.recv(timeout=30)) == {
            "id": "after",
            "response": {"args": [1], "kwargs": {}},
            "objects": [],
        }
