"""What one WebSocket client can make the server hold is bounded, and freed when it goes:
sessions a HELLO starts (not stored, and no token handed out, until they hold something), calls waiting for Media,
Media bytes per connection and across the server, replies the client never reads.

The server's RSS numbers are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import AnvilServer, private_server
from notebook_files import write_notebook
from raw_websocket import raw_socket_client, text_frame

MIB = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def stored_sessions(server: AnvilServer) -> int:
    database = Path(server.workdir, "jupyter_data_dir", "jupyter_anvil", "anvil.db")
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM anvil_sessions").fetchone()[0])


async def connect(server: AnvilServer, app: str = "core") -> Any:
    return await websockets.connect(server.ws_url(app), max_size=64 * MIB)


async def hello(socket: Any, token: str | None) -> dict[str, Any]:
    await socket.send(json.dumps({"type": "HELLO", "session": token, "client": "browser"}))
    return dict(json.loads(await socket.recv()))


async def call(socket: Any, call_id: str, command: str, *args: Any) -> dict[str, Any]:
    await socket.send(json.dumps({"type": "CALL", "id": call_id, "command": command, "args": list(args)}))
    while True:
        message = json.loads(await socket.recv())
        if message.get("id") == call_id:
            return dict(message)


# -- 2.6: a HELLO stores nothing, and hands out no token, until its session holds something --
async def call_told(socket: Any, call_id: str, command: str, *args: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A call's reply, and the messages that came before it."""
    await socket.send(json.dumps({"type": "CALL", "id": call_id, "command": command, "args": list(args)}))
    before = []
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), 30))
        if message.get("id") == call_id:
            return before, dict(message)
        before.append(message)


async def test_hellos_store_no_session_and_hand_out_no_token(anvil_server: AnvilServer) -> None:
    before = stored_sessions(anvil_server)
    async with await connect(anvil_server, "sessions") as ws:
        for _ in range(3000):
            await ws.send(json.dumps({"type": "HELLO", "session": None, "client": "browser"}))
        answers = [json.loads(await ws.recv()) for _ in range(3000)]
        assert answers == [{"type": "SESSION", "session": None}] * 3000
        # calls on the fresh session run normally; reading it stores nothing, tells nothing
        told, view = await call_told(ws, "v", "view")
        assert told == [] and view["response"]["items"] == {}
    assert stored_sessions(anvil_server) == before
    # a reconnect without a token (none was handed out) starts afresh: nothing lost, no error
    async with await connect(anvil_server, "sessions") as ws:
        assert await hello(ws, None) == {"type": "SESSION", "session": None}
        told, view = await call_told(ws, "v", "view")
        assert told == [] and view.get("error") is None
    assert stored_sessions(anvil_server) == before


async def test_the_call_that_stores_a_session_tells_its_token_first(anvil_server: AnvilServer) -> None:
    before = stored_sessions(anvil_server)
    async with await connect(anvil_server, "sessions") as ws:
        assert await hello(ws, None) == {"type": "SESSION", "session": None}
        session_id = (await call_told(ws, "v", "view"))[1]["response"]["id"]
        told, reply = await call_told(ws, "p", "put", "a", 1)
        assert len(told) == 1 and reply == {"id": "p", "response": None, "objects": []}
        token = told[0]["session"]
        assert told == [{"type": "SESSION", "session": token, "call": "p"}] and len(token) == 43
        assert stored_sessions(anvil_server) == before + 1  # stored before the page heard of it
        told, _ = await call_told(ws, "p2", "put", "b", 2)
        assert told == []  # told once
    async with await connect(anvil_server, "sessions") as ws:  # a new connection resumes it
        assert await hello(ws, token) == {"type": "SESSION", "session": token}
        told, view = await call_told(ws, "v", "view")
        assert told == [] and view["response"]["id"] == session_id
        assert view["response"]["items"] == {"a": 1, "b": 2}
    assert stored_sessions(anvil_server) == before + 1


async def test_a_session_the_connection_left_is_not_told(anvil_server: AnvilServer) -> None:
    """A call stores the session the connection ran on when it began; a HELLO moved the
    connection on meanwhile (the page reset its session): the page must not get the old
    session's token back."""
    async with await connect(anvil_server, "sessions") as ws:
        assert await hello(ws, None) == {"type": "SESSION", "session": None}
        await ws.send(json.dumps({"type": "CALL", "id": "slow", "command": "put", "args": ["k", 1, 1.0]}))
        await asyncio.sleep(0.3)
        assert await hello(ws, None) == {"type": "SESSION", "session": None}
        told, reply = await call_told(ws, "v", "view")
        assert told == [] and reply["response"]["items"] == {}
        assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"id": "slow", "response": None, "objects": []}
        told, _ = await call_told(ws, "p", "put", "j", 2)  # the new session is told when stored
        assert [m["call"] for m in told] == ["p"]


# -- 2.5: calls waiting for Media, and Media bytes, are bounded ---------------------------------
def media_call(call_id: str) -> str:
    descriptor = {"type": ["DataMedia"], "path": ["args", 0], "id": "m", "mime-type": "x/y", "name": "n"}
    return json.dumps(
        {"type": "CALL", "id": call_id, "command": "describe_media", "args": [None], "objects": [descriptor]}
    )


async def send_chunk(ws: Any, call_id: str, size: int, last: bool = False) -> None:
    header = {"type": "CHUNK_HEADER", "requestId": call_id, "mediaId": "m", "chunkIndex": 0, "lastChunk": last}
    await ws.send(json.dumps(header))
    await ws.send(b"m" * size)


async def next_reply(ws: Any, timeout: float = 30) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def no_reply(ws: Any, wait: float = 0.5) -> None:
    try:
        message = await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected reply {message!r}")


async def test_calls_waiting_for_media_and_their_bytes_are_bounded(anvil_server: AnvilServer) -> None:
    pid = anvil_server.process.pid  # type: ignore[union-attr]
    start = rss_mib(pid)
    a, b, c = [await connect(anvil_server) for _ in range(3)]
    try:
        # at most 16 calls wait for Media on one connection
        for i in range(16):
            await a.send(media_call(f"a{i}"))
        await no_reply(a)
        await a.send(media_call("a16"))
        refused = await next_reply(a)
        assert refused["id"] == "a16" and refused["error"]["type"] == "anvil.server.QuotaExceededError"
        assert "Too many calls waiting for Media" in refused["error"]["message"]
        # at most 128 MiB of Media in flight per connection
        for _ in range(16):
            await send_chunk(a, "a0", 8 * MIB)
        await no_reply(a)
        await send_chunk(a, "a1", 8 * MIB)
        refused = await next_reply(a)
        assert refused["id"] == "a1" and "on this connection" in refused["error"]["message"]
        # at most 256 MiB across the server
        await b.send(media_call("b0"))
        for _ in range(16):
            await send_chunk(b, "b0", 8 * MIB)
        await no_reply(b)
        await c.send(media_call("c0"))
        await send_chunk(c, "c0", 8 * MIB)
        refused = await next_reply(c)
        assert refused["id"] == "c0" and "The server holds too much Media" in refused["error"]["message"]
        held = rss_mib(pid)
    finally:
        await a.close()
        await b.close()
    # the closed connections' bytes are free again: a Media call goes through
    deadline = time.monotonic() + 30
    while True:
        await c.send(media_call("c1"))
        await send_chunk(c, "c1", 8 * MIB, last=True)
        reply = await next_reply(c)
        if reply.get("error", {}).get("type") != "anvil.server.QuotaExceededError" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await c.close()
    assert reply["id"] == "c1" and reply["response"] == ["x/y", "n", 8 * MIB, "mmmmm"], reply
    deadline = time.monotonic() + 20
    while (after := rss_mib(pid)) - start >= 64 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    print(f"\nMedia bounds: server RSS {start:.0f} MiB before, {held:.0f} MiB holding 256 MiB, {after:.0f} MiB after")
    assert held - start < 256 + 160, (start, held)
    assert after - start < 64, (start, after)  # what the closed connections held is back


MEDIA_APP = """
from jupyter_anvil import server
from jupyter_anvil.media import BlobMedia

@server.callable
def size(m):
    return len(m.get_bytes())

@server.callable
def blob(n):
    return BlobMedia("application/octet-stream", b"b" * n, name="big.bin")

@server.callable
def text(n):
    return "t" * n
"""


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    def write_app(root: Path) -> None:
        write_notebook(root / "media.ipynb", [MEDIA_APP], {"kernels": {"min": 1, "max": 1}})

    with private_server(tmp_path_factory, "media", write_app, "--AnvilApp.websocket_media_mib=8") as server:
        yield server


async def test_the_server_wide_media_bound_is_configurable(media_server: AnvilServer) -> None:
    async with await connect(media_server, "media") as ws:
        descriptor = {"type": ["DataMedia"], "path": ["args", 0], "id": "m"}
        message = {"type": "CALL", "command": "size", "args": [None], "objects": [descriptor]}
        await ws.send(json.dumps({**message, "id": "fits"}))
        await send_chunk(ws, "fits", 8 * MIB, last=True)
        assert (await next_reply(ws))["response"] == 8 * MIB
        await ws.send(json.dumps({**message, "id": "over"}))
        await send_chunk(ws, "over", 8 * MIB)
        await send_chunk(ws, "over", 1 * MIB, last=True)
        refused = await next_reply(ws)
        assert refused["id"] == "over" and "the limit is 8 MiB" in refused["error"]["message"], refused


async def test_big_replies_reach_a_client_that_reads(media_server: AnvilServer) -> None:
    """The bound on unread replies is no bound on a reply's size: a reading client gets
    a 96 MiB download, and while it comes, a 24 MiB string and a small reply."""
    pid = media_server.process.pid  # type: ignore[union-attr]
    start = rss_mib(pid)
    async with await connect(media_server, "media") as ws:
        await ws.send(json.dumps({"type": "CALL", "id": "b", "command": "blob", "args": [96 * MIB]}))
        received: dict[str, Any] = {}

        async def receive_all() -> int:
            media = 0
            while len(received) < 3 or media < 96 * MIB:
                frame = await ws.recv()
                if isinstance(frame, bytes):
                    media += len(frame)
                    continue
                message = json.loads(frame)
                if message.get("type") == "CHUNK_HEADER":
                    continue
                received[message["id"]] = message
                if message["id"] == "b":  # the download has begun: more calls meanwhile
                    for call_id, n in [("t", 24 * MIB), ("s", 5)]:
                        await ws.send(json.dumps({"type": "CALL", "id": call_id, "command": "text", "args": [n]}))
            return media

        media = await asyncio.wait_for(receive_all(), 120)  # (asyncio.timeout is Python 3.11+)
    assert media == 96 * MIB
    assert received["s"]["response"] == "ttttt"
    assert len(received["t"]["response"]) == 24 * MIB
    print(f"\nbig replies: server RSS {start:.0f} MiB before, {rss_mib(pid):.0f} MiB after")


# -- 3.5: a client that never reads its replies is cut off, and its memory freed ----------------
def read_to_end(raw: socket.socket, timeout: float) -> bool:
    """Drain the socket; True if the server closed it within ``timeout``."""
    raw.settimeout(timeout)
    try:
        while raw.recv(1 << 20):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def test_a_client_that_never_reads_is_closed_and_its_memory_freed(anvil_server: AnvilServer) -> None:
    pid = anvil_server.process.pid  # type: ignore[union-attr]
    start = rss_mib(pid)
    raw = raw_socket_client(anvil_server, "/anvil/apps/core/_/ws")
    big = "x" * (4 * MIB)
    peak = start
    cut_off = False
    try:
        for i in range(60):  # 240 MiB of replies, if all were kept
            raw.sendall(text_frame(json.dumps({"type": "CALL", "id": f"c{i}", "command": "echo", "args": [big]})))
            time.sleep(0.15)  # the app has one kernel: keep within its queue
            peak = max(peak, rss_mib(pid))
    except OSError:
        cut_off = True  # the server closed the connection while we were still sending
    closed = read_to_end(raw, 30)
    raw.close()
    # calls it left queued for the app's kernel still run (their replies dropped): give
    # them a moment, then what the connection held must be back
    deadline = time.monotonic() + 20
    while (after := rss_mib(pid)) - start >= 48 and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"\nunread replies: server RSS {start:.0f} MiB before, peak {peak:.0f} MiB, {after:.0f} MiB after close")
    assert cut_off or closed
    assert peak - start < 32 + 120, (start, peak)
    assert after - start < 48, (start, after)
    assert anvil_server.call("core", "echo", 1) == {"args": [1], "kwargs": {}}
