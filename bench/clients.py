"""Clients of the servers under test, each a ``Call``: one call of ``add(1, 2)``."""

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
JSON_HEADERS = {"Content-Type": "application/json"}


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
        call_id = f"c{next(self._ids)}"
        fut: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        msg = {"type": "CALL", "id": call_id, "command": "add", "args": [1, 2], "kwargs": {}}
        try:
            await self._ws[next(self._next)].send(json.dumps(msg))
            reply = await fut
        except websockets.ConnectionClosed as e:
            raise ServerFailed(f"WebSocket closed: {e}") from None
        finally:
            self._pending.pop(call_id, None)
        if reply.get("response") != 3:
            raise CallFailed(f"unexpected reply {json.dumps(reply)[:200]}")


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
