"""Clients of the servers under test, each a ``Call``: one call of ``add(1, 2)``, or of
``session_read()`` / ``session_write()`` in a session of the caller's own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import websockets
from harness import CALL_TIMEOUT_S, Call, CallFailed, ServerFailed

BODY = json.dumps({"args": [1, 2]}).encode()
EMPTY_BODY = json.dumps({"args": []}).encode()
JSON_HEADERS = {"Content-Type": "application/json"}
SESSION_HEADER = "X-Anvil-Session"


class HttpClient:
    """One keep-alive HTTP client, sized for ``concurrency`` connections."""

    def __init__(self, kind: str, concurrency: int) -> None:
        self.kind = kind
        if kind == "aiohttp":
            connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
            self._aiohttp = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S),
                trust_env=False,
            )
        else:
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            self._httpx = httpx.AsyncClient(limits=limits, timeout=CALL_TIMEOUT_S, trust_env=False)

    async def close(self) -> None:
        if self.kind == "aiohttp":
            await self._aiohttp.close()
        else:
            await self._httpx.aclose()

    def poster(self, url: str, check: Callable[[bytes], None]) -> Call:
        """A call that POSTs the add body to ``url`` and checks the answer."""
        if self.kind == "aiohttp":
            session = self._aiohttp

            async def call() -> None:
                async with session.post(url, data=BODY, headers=JSON_HEADERS) as resp:
                    raw = await resp.read()
                    if resp.status != 200:
                        raise CallFailed(f"HTTP {resp.status}: {raw[:200]!r}")
                    check(raw)

            return call
        client = self._httpx

        async def call_httpx() -> None:
            resp = await client.post(url, content=BODY, headers=JSON_HEADERS)
            if resp.status_code != 200:
                raise CallFailed(f"HTTP {resp.status_code}: {resp.content[:200]!r}")
            check(resp.content)

        return call_httpx


class WsCaller:
    """Calls over anvil's WebSocket: replies are matched to calls by ``id``."""

    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        self.connections = connections
        self._ws: list[websockets.ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []
        self._pending: dict[str, asyncio.Future[dict]] = {}
        self._ids = itertools.count()
        self._next = itertools.cycle(range(connections))

    async def open(self) -> None:
        for _ in range(self.connections):
            ws = await websockets.connect(self.url, compression=None, open_timeout=CALL_TIMEOUT_S, max_size=2**24)
            self._ws.append(ws)
            self._readers.append(asyncio.create_task(self._read(ws)))

    async def close(self) -> None:
        for ws in self._ws:
            await ws.close()
        for task in self._readers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _read(self, ws: websockets.ClientConnection) -> None:
        try:
            async for text in ws:
                msg = json.loads(text)
                fut = self._pending.pop(msg.get("id"), None) if isinstance(msg, dict) else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ServerFailed("WebSocket closed"))

    async def call(self) -> None:
        msg = {"type": "CALL", "command": "add", "args": [1, 2], "kwargs": {}}
        reply = await self.send(self._ws[next(self._next)], msg)
        if reply.get("response") != 3:
            raise CallFailed(f"unexpected reply {json.dumps(reply)[:200]}")

    async def send(self, ws: websockets.ClientConnection, msg: dict) -> dict:
        """Send ``msg`` (given an ``id`` here) on ``ws``; the reply with the same ``id``."""
        call_id = msg["id"] = f"c{next(self._ids)}"
        fut: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        try:
            await ws.send(json.dumps(msg))
            return await fut
        except websockets.ConnectionClosed as e:
            raise ServerFailed(f"WebSocket closed: {e}") from None
        finally:
            self._pending.pop(call_id, None)


class CommCaller:
    """Calls over comms opened straight from an ``AsyncKernelClient``."""

    def __init__(self, kc: Any) -> None:
        self.kc = kc
        self._pending: dict[str, dict[int, asyncio.Future[dict]]] = {}
        self._ids = itertools.count()
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        while True:
            try:
                msg = await self.kc.iopub_channel.get_msg(timeout=0.5)
            except queue.Empty:
                continue
            if msg["msg_type"] != "comm_msg":
                continue
            content = msg["content"]
            pending = self._pending.get(content.get("comm_id"))
            fut = pending.pop(content["data"].get("id"), None) if pending is not None else None
            if fut is not None and not fut.done():
                fut.set_result(content["data"])

    def open(self, target: str) -> Call:
        comm_id = uuid.uuid4().hex
        pending: dict[int, asyncio.Future[dict]] = {}
        self._pending[comm_id] = pending
        kc = self.kc
        kc.shell_channel.send(kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": target, "data": {}}))
        ids = self._ids

        async def call() -> None:
            i = next(ids)
            fut: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
            pending[i] = fut
            try:
                kc.shell_channel.send(
                    kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"id": i, "args": [1, 2]}})
                )
                data = await fut
            finally:
                pending.pop(i, None)
            if data.get("response") != 3:
                raise CallFailed(f"unexpected reply {data}")

        return call


# ---------------------------------------------------------------- sessions


class Slot:
    """One caller's session: its token (or WebSocket), and the counter it should hold."""

    def __init__(self, token: str, n: int, ws: websockets.ClientConnection | None = None) -> None:
        self.token = token
        self.n = n
        self.ws = ws
        self.headers = {**JSON_HEADERS, SESSION_HEADER: token}  # built once, not per call


class SessionCaller:
    """Calls that read or write ``server.session``, each caller with a session of its own.

    A call takes a free slot (a session no other call is using), makes its call in that
    session and gives the slot back, so C concurrent callers use C sessions and no two
    calls of one session overlap. ``session_write`` increments the session's counter and
    ``session_read`` returns it; both are checked against what the slot expects, so a
    session that was not restored (or a write that was lost) fails the call.
    """

    def __init__(self, write: bool) -> None:
        self.command = "session_write" if write else "session_read"
        self.write = write
        self._free: list[Slot] = []

    async def prepare(self, sessions: int) -> None:
        """Make ``sessions`` sessions before anything is timed."""
        slots = [await self._new_slot() for _ in range(sessions)]
        self._free.extend(slots)

    async def call(self) -> None:
        slot = self._free.pop() if self._free else await self._new_slot()
        value = await self._call(slot, self.command)
        expected = slot.n + 1 if self.write else slot.n
        if value != expected:
            raise CallFailed(f"{self.command} returned {value!r}, expected {expected} (session {slot.token[:4]}…)")
        slot.n = value
        self._free.append(slot)  # only after success: a failed call's session is dropped

    async def _new_slot(self) -> Slot:
        raise NotImplementedError

    async def _call(self, slot: Slot, command: str) -> Any:
        raise NotImplementedError


class HttpSessionCaller(SessionCaller):
    """Over HTTP: the first ``session_write`` gets the token in ``X-Anvil-Session``,
    every later call sends it back."""

    def __init__(self, client: HttpClient, base: str, write: bool) -> None:
        super().__init__(write)
        self.client = client
        self.urls = {c: f"{base}/{c}" for c in ("session_read", "session_write")}

    async def _new_slot(self) -> Slot:
        value, token = await self._post(self.urls["session_write"], JSON_HEADERS)
        if value != 1 or not token:
            raise CallFailed(f"a new session's first session_write returned {value!r}, token {token!r}")
        return Slot(token, 1)

    async def _call(self, slot: Slot, command: str) -> Any:
        value, token = await self._post(self.urls[command], slot.headers)
        if token != slot.token:
            raise CallFailed(f"X-Anvil-Session came back as {token!r}, not the token sent")
        return value

    async def _post(self, url: str, headers: dict[str, str]) -> tuple[Any, str | None]:
        if self.client.kind == "aiohttp":
            async with self.client._aiohttp.post(url, data=EMPTY_BODY, headers=headers) as resp:
                raw = await resp.read()
                status, back = resp.status, resp.headers.get(SESSION_HEADER)
        else:
            r = await self.client._httpx.post(url, content=EMPTY_BODY, headers=headers)
            raw, status, back = r.content, r.status_code, r.headers.get(SESSION_HEADER)
        if status != 200:
            raise CallFailed(f"HTTP {status}: {raw[:200]!r}")
        return json.loads(raw).get("response"), back


class WsSessionCaller(SessionCaller):
    """Over the WebSocket: one connection per session, opened with
    ``{"type": "HELLO", "session": null}`` and answered with ``SESSION``; then a
    ``session_write`` so the session holds the counter (and is stored)."""

    def __init__(self, url: str, write: bool) -> None:
        super().__init__(write)
        self.url = url
        self._calls = WsCaller(url, 0)

    async def _new_slot(self) -> Slot:
        ws = await websockets.connect(self.url, compression=None, open_timeout=CALL_TIMEOUT_S, max_size=2**24)
        self._calls._ws.append(ws)
        await ws.send(json.dumps({"type": "HELLO", "session": None}))
        hello = json.loads(await asyncio.wait_for(ws.recv(), CALL_TIMEOUT_S))
        # a fresh session has no token until a call stores it (the SESSION message before
        # that call's reply): the connection is the session, so none is needed here
        if hello.get("type") != "SESSION":
            raise CallFailed(f"HELLO was answered with {json.dumps(hello)[:200]}")
        self._calls._readers.append(asyncio.create_task(self._calls._read(ws)))
        slot = Slot(hello.get("session") or "new", 0, ws)
        value = await self._call(slot, "session_write")
        if value != 1:
            raise CallFailed(f"a new session's first session_write returned {value!r}")
        slot.n = 1
        return slot

    async def _call(self, slot: Slot, command: str) -> Any:
        assert slot.ws is not None
        reply = await self._calls.send(slot.ws, {"type": "CALL", "command": command, "args": [], "kwargs": {}})
        if "response" not in reply:
            raise CallFailed(f"unexpected reply {json.dumps(reply)[:200]}")
        return reply["response"]

    async def close(self) -> None:
        await self._calls.close()
