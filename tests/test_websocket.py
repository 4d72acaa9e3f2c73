"""Many calls over one WebSocket, in the uplink protocol's message shapes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from conftest import AnvilServer
from notebook_files import write_notebook


class Connection:
    """A minimal client of the protocol: replies by id, Media by CHUNK_HEADER pairs."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.replies: dict[str, dict[str, Any]] = {}
        self.media: dict[tuple[str, str], bytes] = {}
        self.unmatched: list[dict[str, Any]] = []

    async def send_call(
        self, call_id: str, command: str, *args: Any, objects: Any = (), media: Any = None, **kwargs: Any
    ) -> None:
        message = {
            "type": "CALL",
            "id": call_id,
            "command": command,
            "args": list(args),
            "kwargs": kwargs,
            "objects": list(objects),
        }
        await self.socket.send(json.dumps(message))
        for media_id, content in (media or {}).items():
            chunks = [content[i : i + 65536] for i in range(0, len(content), 65536)] or [b""]
            for index, chunk in enumerate(chunks):
                header = {
                    "type": "CHUNK_HEADER",
                    "requestId": call_id,
                    "mediaId": media_id,
                    "chunkIndex": index,
                    "lastChunk": index == len(chunks) - 1,
                }
                await self.socket.send(json.dumps(header))
                await self.socket.send(chunk)

    async def receive_until(self, ids: set[str], timeout: float = 60) -> None:
        """Read until every call in ``ids`` has its reply and all of the replies' Media."""
        await asyncio.wait_for(self._receive_until(ids), timeout)  # (asyncio.timeout is Python 3.11+)

    async def _receive_until(self, ids: set[str]) -> None:
        header: dict[str, Any] | None = None
        incomplete: set[tuple[str, str]] = set()
        while not ids.issubset(self.replies) or incomplete or header is not None:
            frame = await self.socket.recv()
            if isinstance(frame, bytes):
                assert header is not None, "a binary frame without a CHUNK_HEADER"
                key = (header["requestId"], header["mediaId"])
                self.media[key] = self.media.get(key, b"") + frame
                if header["lastChunk"]:
                    incomplete.discard(key)
                header = None
                continue
            message = json.loads(frame)
            if message.get("type") == "CHUNK_HEADER":
                header = message
            elif message.get("id") in ids:
                self.replies[message["id"]] = message
                for o in message.get("objects", []):
                    if o["type"][0] == "DataMedia":
                        incomplete.add((message["id"], o["id"]))
            else:
                self.unmatched.append(message)


async def connect(anvil_server: AnvilServer, app: str = "core") -> Any:
    return await websockets.connect(anvil_server.ws_url(app), max_size=64 * 1024 * 1024)


async def test_many_concurrent_calls_on_one_socket(anvil_server: AnvilServer) -> None:
    async with await connect(anvil_server) as socket:
        connection = Connection(socket)
        # 24 fit the test app's one kernel (4 running) and its queue (20 waiting)
        ids = {f"call-{i}" for i in range(24)}
        for i in range(24):
            await connection.send_call(f"call-{i}", "add", i, 1000)
        await connection.receive_until(ids)
    for i in range(24):
        assert connection.replies[f"call-{i}"] == {"id": f"call-{i}", "response": i + 1000, "objects": []}


async def test_replies_come_as_they_finish_not_in_order(anvil_server: AnvilServer) -> None:
    async with await connect(anvil_server) as socket:
        connection = Connection(socket)
        await connection.send_call("slow", "sleep", 1.0)
        await connection.send_call("fast", "add", 1, 2)
        await connection.receive_until({"fast"}, timeout=0.9)
        assert "slow" not in connection.replies
        await connection.receive_until({"slow"})


async def test_errors_and_special_values_over_the_socket(anvil_server: AnvilServer) -> None:
    async with await connect(anvil_server) as socket:
        connection = Connection(socket)
        await connection.send_call("e", "boom")
        await connection.send_call("m", "no_such_function")
        await connection.send_call("s", "scoped:name")
        await connection.send_call("v", "special_values")
        await connection.send_call(
            "d",
            "inspect_args",
            None,
            objects=[{"type": ["DateTime"], "path": ["args", 0], "value": "2024-01-02 03:04:05.678900+0100"}],
        )
        await connection.receive_until({"e", "m", "s", "v", "d"})
    assert connection.replies["e"]["error"] == {
        "type": "ValueError",
        "message": "bad value",
        "trace": [["core.ipynb cell 3", 4]],
    }
    assert connection.replies["m"]["error"]["type"] == "anvil.server.NoServerFunctionError"
    assert connection.replies["s"]["error"]["type"] == "anvil.server.PermissionDenied"
    kinds = {o["path"][-1]: o["type"][0] for o in connection.replies["v"]["objects"]}
    assert kinds == {
        "big": "Long",
        "neg_big": "Long",
        "inf": "Float",
        "ninf": "Float",
        "nan": "Float",
        "when": "DateTime",
        "day": "Date",
    }
    date_reply = connection.replies["d"]
    assert date_reply["response"]["types"] == ["datetime"]
    assert date_reply["objects"][0]["value"] == "2024-01-02 03:04:05.678900+0100"


async def test_media_travels_as_chunks_both_ways(anvil_server: AnvilServer) -> None:
    content = bytes(range(256)) * 1000  # 256 000 bytes: four chunks
    async with await connect(anvil_server) as socket:
        connection = Connection(socket)
        descriptor = {
            "type": ["DataMedia"],
            "path": ["args", 0],
            "id": "up",
            "mime-type": "application/octet-stream",
            "name": "blob.bin",
        }
        await connection.send_call("up", "describe_media", None, objects=[descriptor], media={"up": content})
        await connection.send_call(
            "empty", "describe_media", None, objects=[{**descriptor, "id": "e"}], media={"e": b""}
        )
        await connection.send_call("down", "make_media")
        await connection.receive_until({"up", "down", "empty"})
    assert connection.replies["up"]["response"] == [
        "application/octet-stream",
        "blob.bin",
        256000,
        bytes(range(5)).decode(),
    ]
    assert connection.replies["empty"]["response"][2] == 0
    (media,) = connection.replies["down"]["objects"]
    assert media["type"] == ["DataMedia"] and media["name"] == "h.txt"
    assert connection.media[("down", media["id"])] == b"hello media"


async def test_bad_messages_get_clear_errors_and_the_socket_lives_on(anvil_server: AnvilServer) -> None:
    async with await connect(anvil_server) as socket:
        await socket.send("not json")
        assert json.loads(await socket.recv())["error"]["message"] == "Messages must be JSON objects"
        await socket.send(json.dumps({"type": "CALL", "command": "add"}))
        assert "string 'id'" in json.loads(await socket.recv())["error"]["message"]
        await socket.send(json.dumps({"type": "CALL", "id": "x", "command": "add", "args": "nope"}))
        reply = json.loads(await socket.recv())
        assert reply["id"] == "x" and reply["error"]["message"] == "'args' must be a JSON array"
        await socket.send(json.dumps({"type": "LAUNCH_MISSILES", "id": "y"}))
        assert "Unknown message type" in json.loads(await socket.recv())["error"]["message"]
        await socket.send(b"\x00 stray binary frame")
        connection = Connection(socket)
        await connection.send_call("ok", "add", 2, 2)
        await connection.receive_until({"ok"})
        assert connection.replies["ok"]["response"] == 4


async def test_a_cross_site_page_cannot_open_the_socket(anvil_server: AnvilServer) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await websockets.connect(anvil_server.ws_url("core"), origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


async def test_malformed_calls_each_get_an_error_reply(anvil_server: AnvilServer) -> None:
    """Each of these once left its call without a reply (or crashed the writer)."""
    deep = "[" * 5000 + "]" * 5000
    messages = {
        "deep": '{"type": "CALL", "id": "deep", "command": "echo", "args": [' + deep + "]}",
        "deep-ish": '{"type": "CALL", "id": "deep-ish", "command": "echo", "args": [' + deep[4850:5150] + "]}",
        "surrogate": '{"type": "CALL", "id": "surrogate", "command": "echo", "args": ["\\ud800"]}',
        "kind-list": json.dumps(
            {
                "type": "CALL",
                "id": "kind-list",
                "command": "echo",
                "args": [None],
                "objects": [{"type": [["DataMedia"]], "path": ["args", 0]}],
            }
        ),
        "kind-int": json.dumps(
            {
                "type": "CALL",
                "id": "kind-int",
                "command": "echo",
                "args": [None],
                "objects": [{"type": 7, "path": ["args", 0]}],
            }
        ),
        "nan": '{"type": "CALL", "id": "nan", "command": "echo", "args": [NaN]}',
        "broken": '{"type": "CALL", "id": "broken", "command": "echo", "args": [1,',
    }
    async with await connect(anvil_server) as socket:
        connection = Connection(socket)
        for text in messages.values():
            await socket.send(text)
        await connection.send_call("ok", "echo", 1)
        await connection.receive_until({*messages, "ok"}, timeout=30)
        assert not connection.unmatched
        for call_id in messages:
            error = connection.replies[call_id]["error"]
            assert error["type"] == "anvil.server.SerializationError", (call_id, error)
        assert "nested more than 100 levels" in connection.replies["deep"]["error"]["message"]
        assert "surrogate" in connection.replies["surrogate"]["error"]["message"]
        assert connection.replies["ok"]["response"] == {"args": [1], "kwargs": {}}


SURROGATES = """
from jupyter_anvil import server

@server.callable
def lone():
    return {"text": "a" + chr(0xD800) + "b", chr(0xDFFF): 1}

@server.callable
def lone_error():
    raise ValueError("bad " + chr(0xD800))
"""


@pytest.fixture(scope="module")
def surrogates_app(anvil_server: AnvilServer) -> str:
    write_notebook(anvil_server.root / "surrogates.ipynb", [SURROGATES], {"kernels": {"min": 1, "max": 1}})
    anvil_server.wait_until_loaded(("surrogates",))
    return "surrogates"


async def test_a_reply_holding_a_lone_surrogate_still_arrives(anvil_server: AnvilServer, surrogates_app: str) -> None:
    """Server code can make a string that is not Unicode: it arrives with U+FFFD in place
    of the lone surrogate, instead of the reply being lost (the call hung until timeout)."""
    replacement = {"text": "a\ufffdb", "\ufffd": 1}
    response = anvil_server.post(surrogates_app, "lone", timeout=20)
    assert response.status_code == 200 and response.json()["response"] == replacement
    failed = anvil_server.post(surrogates_app, "lone_error", timeout=20)
    assert failed.status_code == 500 and failed.json()["error"]["message"] == "bad \ufffd"
    async with await connect(anvil_server, surrogates_app) as socket:
        connection = Connection(socket)
        await connection.send_call("ok", "lone")
        await connection.send_call("err", "lone_error")
        await connection.receive_until({"ok", "err"}, timeout=20)
    assert connection.replies["ok"]["response"] == replacement
    assert connection.replies["err"]["error"]["type"] == "ValueError"
