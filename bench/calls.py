"""Server-call benchmark: jupyter-anvil against Jupyter Kernel Gateway and a bare comm.

Run by hand, not by CI:

    python bench/calls.py                  # everything, about 2-4 minutes
    python bench/calls.py --targets kg,comm --calls 200 --kernels 1
    python bench/calls.py --json results.json

Every target serves the same function, ``add(a, b) -> a + b``, called with (1, 2):

* ``anvil-http``  POST /anvil/apps/bench/_/call/add on a jupyter-anvil server
* ``anvil-ws``    CALL messages on /anvil/apps/bench/_/ws of the same server
* ``kg-http``     POST /add on Jupyter Kernel Gateway's notebook-http personality
* ``comm``        a bare comm echo to an ipykernel from jupyter_client's asyncio
                  client, no server in between: the floor anvil's calls sit on

All targets run in this one process tree, one server at a time, so the ratios are
fair on the same machine. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import queue
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import aiohttp
import httpx
import websockets
from jupyter_client.manager import AsyncKernelManager

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
APP = "bench"
CALL_TIMEOUT_S = 30.0  # a single call; a healthy one takes milliseconds
STARTUP_TIMEOUT_S = 180.0  # server up and kernels warm
STOP_TIMEOUT_S = 20.0
DEFAULT_CALLS = {1: 500, 8: 2000}
BODY = json.dumps({"args": [1, 2]}).encode()
JSON_HEADERS = {"Content-Type": "application/json"}

# The targets the brief sets; each is (label, lhs, op, rhs) checked after the run.
TARGETS_DOC = """\
targets
  1. C=1: anvil p50 <= 1/3 of KG p50
  2. C=8, 1 kernel: anvil calls/s >= 3x KG calls/s
  3. anvil, C=8: 2 kernels >= 1.6x the calls/s of 1 kernel
  4. anvil-ws p50 <= 1.5x bare comm p50 (C=1, 1 kernel, same transport as anvil's kernels: ipc)"""

Call = Callable[[], Awaitable[None]]


class CallFailed(Exception):
    """A call came back, but not with the right answer."""


class ServerFailed(Exception):
    """A server did not start or stopped answering."""


# ---------------------------------------------------------------- measurement


@dataclass
class Cell:
    """One measured (target, kernels, concurrency) cell of the table."""

    target: str
    kernels: int
    concurrency: int
    calls: int = 0
    errors: int = 0
    wall_s: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    max_ms: float = math.nan
    calls_per_s: float = math.nan
    first_error: str | None = None
    note: str | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


if sys.version_info >= (3, 11):

    async def bounded(call: Call) -> None:
        async with asyncio.timeout(CALL_TIMEOUT_S):  # no extra task per call, unlike wait_for
            await call()

else:

    async def bounded(call: Call) -> None:
        await asyncio.wait_for(call(), CALL_TIMEOUT_S)


async def drive(
    call: Call, calls: int, concurrency: int, budget_s: float
) -> tuple[list[float], int, float, str | None]:
    """Run ``calls`` calls from ``concurrency`` callers; stop early at ``budget_s``.

    Returns (latencies in seconds of the calls that succeeded, error count, wall
    time, first error).
    """
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    issued = 0
    clock = time.perf_counter
    give_up_at = clock() + budget_s

    async def caller() -> None:
        nonlocal issued, errors, first_error
        while issued < calls and clock() < give_up_at:
            issued += 1
            t0 = clock()
            try:
                await bounded(call)
            except Exception as e:
                errors += 1
                if first_error is None:
                    first_error = f"{type(e).__name__}: {e}"[:300]
                if isinstance(e, (ConnectionError, ServerFailed, websockets.ConnectionClosed)):
                    await asyncio.sleep(0.05)  # don't spin on a dead server
                continue
            latencies.append(clock() - t0)

    start = clock()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, errors, clock() - start, first_error


async def measure(target: str, kernels: int, concurrency: int, call: Call, args: argparse.Namespace) -> Cell:
    """Warm up, then measure one cell and print its row."""
    calls = args.calls or DEFAULT_CALLS.get(concurrency, 1000)
    if args.warmup:
        await drive(call, args.warmup, concurrency, args.cell_budget)
    lat, errors, wall, first_error = await drive(call, calls, concurrency, args.cell_budget)
    cell = Cell(
        target,
        kernels,
        concurrency,
        calls=len(lat),
        errors=errors,
        wall_s=wall,
        first_error=first_error,
    )
    if lat:
        ms = sorted(x * 1000 for x in lat)
        cell.p50_ms = percentile(ms, 0.50)
        cell.p99_ms = percentile(ms, 0.99)
        cell.mean_ms = sum(ms) / len(ms)
        cell.max_ms = ms[-1]
        cell.calls_per_s = len(ms) / wall if wall > 0 else math.nan
        cell.latencies_ms = [round(x, 4) for x in ms] if args.raw else []
    if len(lat) + errors < calls:
        cell.note = f"stopped at the {args.cell_budget:.0f}s budget"
    print(row(cell), flush=True)
    return cell


# ---------------------------------------------------------------- clients


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


def check_anvil_reply(raw: bytes) -> None:
    reply = json.loads(raw)
    if reply.get("response") != 3:
        raise CallFailed(f"unexpected reply {raw[:200]!r}")


def check_kg_reply(raw: bytes) -> None:
    if raw.strip() != b"3":
        raise CallFailed(f"unexpected reply {raw[:200]!r}")


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
        finally:
            self._pending.pop(call_id, None)
        if reply.get("response") != 3:
            raise CallFailed(f"unexpected reply {json.dumps(reply)[:200]}")


# ---------------------------------------------------------------- bare comm floor

ECHO_TARGET = """
def _bench_add_target(comm, open_msg):
    @comm.on_msg
    def _add(msg):
        data = msg["content"]["data"]
        a, b = data["args"]
        comm.send({"id": data["id"], "response": a + b})

get_ipython().kernel.comm_manager.register_target("bench_add", _bench_add_target)
"""


async def bench_comm(args: argparse.Namespace, workdir: Path) -> list[Cell]:
    """The floor: comm_msg → echoed comm_msg, straight from jupyter_client."""
    cells: list[Cell] = []
    for transport in args.comm_transports:
        km = AsyncKernelManager(
            kernel_name="python3",
            transport=transport,
            connection_file=str(workdir / f"kernel-comm-{transport}.json"),
        )
        kernel_log = (workdir / f"kernel-comm-{transport}.log").open("wb")
        await km.start_kernel(cwd=str(workdir), stdout=kernel_log, stderr=kernel_log)
        kc = km.client()
        kc.start_channels()
        pending: dict[int, asyncio.Future[dict]] = {}
        comm_id = uuid.uuid4().hex
        stop = asyncio.Event()

        async def read_iopub(kc=kc, comm_id=comm_id, pending=pending, stop=stop) -> None:
            while not stop.is_set():
                try:
                    msg = await kc.iopub_channel.get_msg(timeout=0.5)
                except queue.Empty:
                    continue
                content = msg["content"]
                if msg["msg_type"] == "comm_msg" and content.get("comm_id") == comm_id:
                    fut = pending.pop(content["data"].get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(content["data"])

        reader = None
        try:
            await kc.wait_for_ready(timeout=60)
            reply = await kc.execute(ECHO_TARGET, reply=True, timeout=30)
            if reply["content"]["status"] != "ok":
                raise ServerFailed(f"registering the comm target failed: {reply['content']}")
            reader = asyncio.create_task(read_iopub())
            opener = kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "bench_add", "data": {}})
            kc.shell_channel.send(opener)
            ids = itertools.count()

            async def call(kc=kc, comm_id=comm_id, pending=pending, ids=ids) -> None:
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

            for c in args.concurrency:
                if transport != args.comm_transports[0] and c != 1:
                    continue  # the other transports are shown for reference at C=1 only
                cells.append(await measure(f"comm-{transport}", 1, c, call, args))
        finally:
            stop.set()
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            kernel_log.close()
    return cells


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def code_cell(source: str, tags: list[str] | None = None) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": uuid.uuid4().hex[:8],
        "metadata": {"tags": tags} if tags else {},
        "outputs": [],
        "source": source,
    }


def notebook(cells: list[dict], extra_metadata: dict | None = None) -> dict:
    meta = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        **(extra_metadata or {}),
    }
    return {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}


ANVIL_SERVER_CELL = """\
from jupyter_anvil import server

@server.callable
def add(a, b):
    return a + b
"""

KG_SEED_CELL = "import json"
KG_ADD_CELL = """\
# POST /add
req = json.loads(REQUEST)
a, b = req["body"]["args"]
print(a + b)
"""


class ServerProcess:
    """A server started in its own process group, so its kernels go with it."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["JUPYTER_RUNTIME_DIR"] = str(self.cwd / ".runtime")
        env["JUPYTER_DATA_DIR"] = str(self.cwd / ".data")
        env["PYTHONUNBUFFERED"] = "1"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerFailed(f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + x for x in text[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(
                    f"  ! {self.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killing it",
                    flush=True,
                )
        # Whatever is left of this group (a kernel the server failed to stop) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()


async def wait_until(server: ServerProcess, probe: Callable[[aiohttp.ClientSession], Awaitable[bool]]) -> float:
    """Poll ``probe`` until it is true; return the seconds it took."""
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), trust_env=False) as s:
        while time.perf_counter() - t0 < STARTUP_TIMEOUT_S:
            server.check_alive()
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                if await probe(s):
                    return time.perf_counter() - t0
            await asyncio.sleep(0.25)
    raise ServerFailed(f"{server.name} not ready after {STARTUP_TIMEOUT_S:.0f}s\n{server.log_tail()}")


async def bench_kg(kernels: int, args: argparse.Namespace, workdir: Path) -> list[Cell]:
    folder = workdir / f"kg-{kernels}"
    folder.mkdir()
    nb = folder / "bench.ipynb"
    nb.write_text(json.dumps(notebook([code_cell(KG_SEED_CELL), code_cell(KG_ADD_CELL)])))
    port = free_port()
    server = ServerProcess(
        f"kernel gateway ({kernels} kernel{'s' if kernels > 1 else ''})",
        [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.api=kernel_gateway.notebook_http",
            f"--KernelGatewayApp.seed_uri={nb}",
            f"--KernelGatewayApp.ip={HOST}",
            f"--KernelGatewayApp.port={port}",
            "--KernelGatewayApp.port_retries=0",
            f"--KernelGatewayApp.prespawn_count={kernels}",
        ],
        folder,
        workdir / f"kg-{kernels}.log",
    )
    base = f"http://{HOST}:{port}"

    async def probe(s: aiohttp.ClientSession) -> bool:
        async with s.get(f"{base}/_api/spec/swagger.json") as r:
            return r.status == 200

    server.start()
    cells = []
    try:
        took = await wait_until(server, probe)
        print(f"  {server.name} ready in {took:.1f}s on port {port}", flush=True)
        for c in args.concurrency:
            client = HttpClient(args.http_client, c)
            try:
                call = client.poster(f"{base}/add", check_kg_reply)
                cells.append(await measure("kg-http", kernels, c, call, args))
            finally:
                await client.close()
            server.check_alive()
    finally:
        server.stop()
    return cells


async def bench_anvil(kernels: int, args: argparse.Namespace, workdir: Path) -> list[Cell]:
    folder = workdir / f"anvil-{kernels}"
    folder.mkdir()
    meta = {"jupyter_anvil": {"kernels": {"min": kernels, "max": kernels}}}
    nb = notebook([code_cell(ANVIL_SERVER_CELL, tags=["server"])], meta)
    (folder / f"{APP}.ipynb").write_text(json.dumps(nb))
    port = free_port()
    token = secrets.token_hex(16)
    server = ServerProcess(
        f"jupyter-anvil ({kernels} kernel{'s' if kernels > 1 else ''})",
        [
            sys.executable,
            "-m",
            "jupyter_anvil",
            str(folder),
            f"--ServerApp.ip={HOST}",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.token={token}",
            "--ServerApp.open_browser=False",
            *args.anvil_option,
        ],
        folder,
        workdir / f"anvil-{kernels}.log",
    )
    base = f"http://{HOST}:{port}"
    last_seen: list[object] = []

    async def probe(s: aiohttp.ClientSession) -> bool:
        headers = {"Authorization": f"token {token}"}
        async with s.get(f"{base}/anvil/api/apps", headers=headers) as r:
            if r.status != 200:
                return False
            listing = json.loads(await r.read())
        last_seen[:] = [listing]
        # a list of apps, or {"apps": [...], "problems": [...]}
        apps = listing.get("apps", []) if isinstance(listing, dict) else listing
        for app in apps:
            if app.get("name") == APP and app.get("status") == "ready":
                # when the app reports its pool, wait for all N kernels to be warm
                pool = app.get("pool")
                if not isinstance(pool, dict) or "kernels" not in pool:
                    return True
                return pool["kernels"] >= kernels and not pool.get("starting")
        return False

    server.start()
    cells = []
    try:
        try:
            took = await wait_until(server, probe)
        except ServerFailed as e:
            raise ServerFailed(f"{e}\n    last /anvil/api/apps: {last_seen}") from None
        print(f"  {server.name} ready in {took:.1f}s on port {port}", flush=True)
        if args.verbose:
            print(f"    /anvil/api/apps: {json.dumps(last_seen[0])[:400]}")
        for c in args.concurrency:
            client = HttpClient(args.http_client, c)
            try:
                call = client.poster(f"{base}/anvil/apps/{APP}/_/call/add", check_anvil_reply)
                cells.append(await measure("anvil-http", kernels, c, call, args))
            finally:
                await client.close()
            server.check_alive()
            ws = WsCaller(f"ws://{HOST}:{port}/anvil/apps/{APP}/_/ws", 1 if args.ws_mux else c)
            try:
                await ws.open()
                cells.append(await measure("anvil-ws", kernels, c, ws.call, args))
            finally:
                await ws.close()
            server.check_alive()
    finally:
        server.stop()
    if any(cell.errors for cell in cells):
        print(server.log_tail(15))
    return cells


# ---------------------------------------------------------------- report


def fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


HEAD = f"  {'target':<12}{'kernels':>8}{'C':>4}{'calls':>7}{'errors':>7}{'p50 ms':>9}{'p99 ms':>9}{'calls/s':>9}"


def row(c: Cell) -> str:
    line = (
        f"  {c.target:<12}{c.kernels:>8}{c.concurrency:>4}{c.calls:>7}{c.errors:>7}"
        f"{fmt(c.p50_ms):>9}{fmt(c.p99_ms):>9}{fmt(c.calls_per_s, 0):>9}"
    )
    if c.first_error:
        line += f"\n      first error: {c.first_error}"
    if c.note:
        line += f"\n      note: {c.note}"
    return line


def find(cells: list[Cell], target: str, kernels: int, conc: int) -> Cell | None:
    for c in cells:
        if (c.target, c.kernels, c.concurrency) == (target, kernels, conc) and c.calls:
            return c
    return None


def ratios(cells: list[Cell], args: argparse.Namespace) -> list[dict]:
    """The comparisons the targets are about, each with its verdict."""
    out: list[dict] = []

    def add(name: str, num: Cell | None, den: Cell | None, attr: str, op: str, bound: float | None) -> None:
        if num is None or den is None:
            return
        value = getattr(num, attr) / getattr(den, attr)
        verdict = None
        if bound is not None:
            verdict = value <= bound if op == "<=" else value >= bound
        out.append({"name": name, "value": value, "op": op, "bound": bound, "pass": verdict})

    cmin, cmax = min(args.concurrency), max(args.concurrency)
    for n in args.kernels:
        for t in ("anvil-http", "anvil-ws"):
            add(
                f"p50 {t} / kg-http, C={cmin}, {n}k",
                find(cells, t, n, cmin),
                find(cells, "kg-http", n, cmin),
                "p50_ms",
                "<=",
                1 / 3 if cmin == 1 else None,
            )
        for t in ("anvil-http", "anvil-ws"):
            add(
                f"calls/s {t} / kg-http, C={cmax}, {n}k",
                find(cells, t, n, cmax),
                find(cells, "kg-http", n, cmax),
                "calls_per_s",
                ">=",
                3.0 if n == 1 and cmax == 8 else None,
            )
    if 1 in args.kernels and 2 in args.kernels:
        for t in ("anvil-http", "anvil-ws", "kg-http"):
            bound = 1.6 if t.startswith("anvil") else None
            add(
                f"calls/s {t} 2k / 1k, C={cmax}",
                find(cells, t, 2, cmax),
                find(cells, t, 1, cmax),
                "calls_per_s",
                ">=",
                bound,
            )
    for transport in args.comm_transports:
        add(
            f"p50 anvil-ws / comm-{transport}, C=1, 1k",
            find(cells, "anvil-ws", 1, 1),
            find(cells, f"comm-{transport}", 1, 1),
            "p50_ms",
            "<=",
            1.5 if transport == args.comm_transports[0] else None,
        )
        add(
            f"p50 anvil-http / comm-{transport}, C=1, 1k",
            find(cells, "anvil-http", 1, 1),
            find(cells, f"comm-{transport}", 1, 1),
            "p50_ms",
            "<=",
            None,
        )
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "ipykernel",
        "jupyter_client",
        "jupyter_server",
        "jupyter_kernel_gateway",
        "tornado",
        "pyzmq",
        "aiohttp",
        "httpx",
        "websockets",
        "jupyter_anvil",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed" if dist != "jupyter_anvil" else "from source tree"
    return out


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return sorted({int(x) for x in text.split(",") if x.strip()})

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--calls",
        type=int,
        default=None,
        help="measured calls per cell (default: 500 at C=1, 2000 at C=8)",
    )
    p.add_argument("--warmup", type=int, default=100, help="unmeasured calls before each cell (default 100)")
    p.add_argument("--kernels", type=ints, default=[1, 2], help="kernel counts, e.g. 1,2 (default)")
    p.add_argument("--concurrency", type=ints, default=[1, 8], help="concurrent callers, e.g. 1,8 (default)")
    p.add_argument("--targets", default="comm,kg,anvil", help="any of comm,kg,anvil (default: all)")
    p.add_argument(
        "--comm-transports",
        default="ipc,tcp",
        type=lambda s: [x for x in s.split(",") if x],
        help="transports for the bare comm floor; the first is the floor of target 4 and is measured "
        "at every concurrency, the others at C=1 (default ipc,tcp: anvil's kernels use ipc by default)",
    )
    p.add_argument(
        "--http-client",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="HTTP client for both servers (default aiohttp, the faster of the two)",
    )
    p.add_argument(
        "--ws-mux",
        action="store_true",
        help="send all concurrent WebSocket calls over one connection "
        "(default: one connection per caller, like the HTTP clients)",
    )
    p.add_argument(
        "--cell-budget",
        type=float,
        default=120.0,
        help="seconds a cell may take before it is cut short (default 120)",
    )
    p.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON to PATH ('-': stdout)")
    p.add_argument(
        "--anvil-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra option for the jupyter-anvil server, e.g. --anvil-option=--AnvilApp.kernel_transport=tcp",
    )
    p.add_argument("--raw", action="store_true", help="include every latency in the JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.targets = {t.strip() for t in args.targets.split(",") if t.strip()}
    unknown = args.targets - {"comm", "kg", "anvil"}
    if unknown:
        p.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    return args


async def run(args: argparse.Namespace) -> dict:
    meta = {
        "versions": versions(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "http_client": args.http_client,
        "ws_connections": "1 (mux)" if args.ws_mux else "one per caller",
        "calls": args.calls or DEFAULT_CALLS,
        "warmup": args.warmup,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    v = meta["versions"]
    print("jupyter-anvil call benchmark: add(1, 2) served four ways")
    print(
        f"  python {v['python']}  ipykernel {v['ipykernel']}  jupyter_client {v['jupyter_client']}  "
        f"jupyter_server {v['jupyter_server']}  kernel_gateway {v['jupyter_kernel_gateway']}  "
        f"jupyter_anvil {v['jupyter_anvil']}"
    )
    print(f"  tornado {v['tornado']}  pyzmq {v['pyzmq']}  cpus {meta['cpus']}  {meta['platform']}")
    calls_text = args.calls if args.calls else "500 at C=1, 2000 at C=8"
    print(
        f"  client: {args.http_client} {v[args.http_client]} (keep-alive, one connection per caller), "
        f"websockets {v['websockets']} ({meta['ws_connections']})"
    )
    print(f"  calls per cell: {calls_text}; warm-up: {args.warmup} calls before each cell")
    print(TARGETS_DOC)
    print()
    print(HEAD, flush=True)

    cells: list[Cell] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="anvil-bench-") as tmp:
        workdir = Path(tmp)
        if "comm" in args.targets:
            try:
                cells += await bench_comm(args, workdir)
            except Exception as e:
                failures.append(f"bare comm: {type(e).__name__}: {e}")
                print(f"  ! {failures[-1]}", flush=True)
        for name, bench in (("kg", bench_kg), ("anvil", bench_anvil)):
            if name not in args.targets:
                continue
            for n in args.kernels:
                try:
                    cells += await bench(n, args, workdir)
                except Exception as e:
                    failures.append(f"{name} with {n} kernel(s): {type(e).__name__}: {e}")
                    print(f"  ! {failures[-1]}", flush=True)

    order = {"comm-ipc": 0, "comm-tcp": 1, "kg-http": 2, "anvil-http": 3, "anvil-ws": 4}
    print()
    print("summary")
    print(HEAD)
    for c in sorted(cells, key=lambda c: (order.get(c.target, 9), c.kernels, c.concurrency)):
        print(row(c))
    print()
    print("ratios (targets marked; 'k' = kernels)")
    rs = ratios(cells, args)
    for r in rs:
        mark = "" if r["pass"] is None else ("  PASS" if r["pass"] else "  MISS")
        bound = "" if r["bound"] is None else f"   target {r['op']} {r['bound']:.2f}"
        print(f"  {r['name']:<44}{r['value']:>7.2f}{bound}{mark}")
    if failures:
        print()
        print("failures")
        for f in failures:
            print(f"  {f}")
    return {"meta": meta, "cells": [asdict(c) for c in cells], "ratios": rs, "failures": failures}


def no_nan(value: object) -> object:
    """NaN is not JSON: missing numbers become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        text = json.dumps(no_nan(result), indent=2, default=str, allow_nan=False)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
            print(f"\nraw numbers written to {args.json}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
