"""Server-call benchmark: jupyter-anvil against Jupyter Kernel Gateway and a bare comm.

Run by hand, not by CI:

    python bench/calls.py                  # everything, 2-3 minutes
    python bench/calls.py --targets kg,comm --calls 200 --kernels 1
    python bench/calls.py --targets session --kernels 1   # sessions beside plain anvil calls
    python bench/calls.py --json results.json

Every target serves the same function, ``add(a, b) -> a + b``, called with (1, 2):

* ``anvil-http``  POST /anvil/apps/bench/_/call/add on a jupyter-anvil server
* ``anvil-ws``    CALL messages on /anvil/apps/bench/_/ws of the same server
* ``kg-http``     POST /add on Jupyter Kernel Gateway's notebook-http personality
* ``comm-*``      a bare comm round trip to ipykernels from jupyter_client's asyncio
                  client, no server in between: the floor anvil's calls sit on
                  (``-thr``: the add runs on a worker thread, as anvil's kernels run calls)

and, to show what sessions cost beside the plain anvil calls, on the same anvil server:

* ``anvil-{http,ws}-session-read``   ``session_read()``: returns ``server.session["n"]``
* ``anvil-{http,ws}-session-write``  ``session_write()``: increments it (one store write)

each caller in a session of its own (``X-Anvil-Session`` over HTTP, ``HELLO`` on the
WebSocket), every answer checked against the counter the caller expects.

All targets run in this one process tree, one server at a time, so the ratios are
fair on the same machine. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import secrets
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import aiohttp
import websockets
from clients import CommCaller, HttpClient, HttpSessionCaller, WsCaller, WsSessionCaller
from harness import (
    DEFAULT_CALLS,
    HEAD,
    HOST,
    Call,
    CallFailed,
    Cell,
    CpuMeter,
    ServerFailed,
    ServerProcess,
    free_port,
    git_commit,
    measure,
    row,
    wait_until,
    write_json,
)
from jupyter_client.manager import AsyncKernelManager

APP = "bench"
# What a run is judged against; ratios() marks each PASS or MISS.
TARGETS_DOC = """\
targets
  1. C=1: anvil p50 <= 1/3 of KG p50
  2. C=8, 1 kernel: anvil calls/s >= 3x KG calls/s
  3. anvil, C=8: 2 kernels >= 1.6x the calls/s of 1 kernel
  4. anvil-ws p50 <= 1.5x bare comm p50 (C=1, 1 kernel, same transport as anvil's kernels: ipc)
  5. C=1: a session read, and a session write, add <= 1 ms to the p50 of a plain anvil call
     (same transport, same server)"""

# ---------------------------------------------------------------- clients


def check_anvil_reply(raw: bytes) -> None:
    reply = json.loads(raw)
    if reply.get("response") != 3:
        raise CallFailed(f"unexpected reply {raw[:200]!r}")


def check_kg_reply(raw: bytes) -> None:
    if raw.strip() != b"3":
        raise CallFailed(f"unexpected reply {raw[:200]!r}")


# ---------------------------------------------------------------- bare comm floor


def spin(indent: str, work_ms: float) -> str:
    """Source that keeps the CPU (and the GIL) busy for ``work_ms``: nothing if 0."""
    if not work_ms:
        return ""
    lines = [
        f'_end = __import__("time").perf_counter() + {work_ms / 1000!r}',
        'while __import__("time").perf_counter() < _end:',
        "    pass",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)


ECHO_TARGETS = """
import threading
from concurrent.futures import ThreadPoolExecutor

def _bench_add_target(comm, open_msg):
    @comm.on_msg
    def _add(msg):
        data = msg["content"]["data"]
{spin8}        a, b = data["args"]
        comm.send({"id": data["id"], "response": a + b})

# The same add run the way anvil's kernel runtime runs calls: on a worker thread,
# replies sent under a lock. The difference between the two is that hand-off.
_bench_workers = ThreadPoolExecutor(max_workers=64)
_bench_send_lock = threading.Lock()

def _bench_add_thread_target(comm, open_msg):
    def _run(data):
{spin8}        a, b = data["args"]
        with _bench_send_lock:
            comm.send({"id": data["id"], "response": a + b})

    @comm.on_msg
    def _add(msg):
        _bench_workers.submit(_run, msg["content"]["data"])

_cm = get_ipython().kernel.comm_manager
_cm.register_target("bench_add", _bench_add_target)
_cm.register_target("bench_add_thread", _bench_add_thread_target)
"""


def spread(calls: list[Call]) -> Call:
    """One call that goes to each of ``calls`` in turn."""
    if len(calls) == 1:
        return calls[0]
    turn = itertools.cycle(calls)

    async def call() -> None:
        await next(turn)()

    return call


async def start_comm_kernel(
    transport: str, name: str, workdir: Path, stack: contextlib.AsyncExitStack, work_ms: float
) -> CommCaller:
    """A kernel with the bench comm targets registered; ``stack`` shuts it down."""
    km = AsyncKernelManager(kernel_name="python3", transport=transport, connection_file=str(workdir / f"{name}.json"))
    log = stack.enter_context((workdir / f"{name}.log").open("wb"))
    await km.start_kernel(cwd=str(workdir), stdout=log, stderr=log)
    stack.push_async_callback(km.shutdown_kernel, now=True)
    kc = km.client()
    kc.start_channels()
    stack.callback(kc.stop_channels)
    await kc.wait_for_ready(timeout=60)
    reply = await kc.execute(ECHO_TARGETS.replace("{spin8}", spin(" " * 8, work_ms)), reply=True, timeout=30)
    if reply["content"]["status"] != "ok":
        raise ServerFailed(f"registering the comm targets failed: {reply['content']}")
    comms = CommCaller(kc)
    comms.start()
    stack.push_async_callback(comms.stop)
    return comms


async def bench_comm(args: argparse.Namespace, workdir: Path) -> list[Cell]:
    """The floor: comm_msg → comm_msg reply, straight from jupyter_client, no server.

    The floor transport (the first) runs with every kernel count and concurrency,
    calls spread over the kernels in turn; the others at 1 kernel and C=1.
    """
    cells: list[Cell] = []
    meter = CpuMeter()
    for transport in args.comm_transports:
        floor = transport == args.comm_transports[0]
        counts = args.kernels if floor else [1]
        async with contextlib.AsyncExitStack() as stack:
            kernels = [
                await start_comm_kernel(transport, f"kernel-comm-{transport}-{k}", workdir, stack, args.work_ms)
                for k in range(max(counts))
            ]
            variants = [(f"comm-{transport}", [k.open("bench_add") for k in kernels])]
            if floor:
                variants.append((f"comm-{transport}-thr", [k.open("bench_add_thread") for k in kernels]))
            for target, calls in variants:
                for n in counts:
                    for c in args.concurrency if floor else [1]:
                        cells.append(await measure(target, n, c, spread(calls[:n]), args, meter))
    return cells


# ---------------------------------------------------------------- servers


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
{spin4}    return a + b

@server.callable
def session_read():
{spin4}    return server.session.get("n", 0)

@server.callable
def session_write():
{spin4}    server.session["n"] = server.session.get("n", 0) + 1
    return server.session["n"]
"""

KG_SEED_CELL = "import json"
KG_ADD_CELL = """\
# POST /add
req = json.loads(REQUEST)
a, b = req["body"]["args"]
{spin0}print(a + b)
"""


async def bench_kg(kernels: int, args: argparse.Namespace, workdir: Path) -> list[Cell]:
    folder = workdir / f"kg-{kernels}"
    folder.mkdir()
    nb = folder / "bench.ipynb"
    nb.write_text(
        json.dumps(
            notebook([code_cell(KG_SEED_CELL), code_cell(KG_ADD_CELL.replace("{spin0}", spin("", args.work_ms)))])
        )
    )
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
                cells.append(await measure("kg-http", kernels, c, call, args, server.meter()))
            finally:
                await client.close()
            server.check_alive()
    finally:
        server.stop()
    return cells


def failed_cell(target: str, kernels: int, conc: int, e: Exception) -> Cell:
    """A cell that could not be measured: its row says why, and the run goes on."""
    cell = Cell(target, kernels, conc, errors=1, first_error=f"{type(e).__name__}: {e}"[:300])
    print(row(cell), flush=True)
    return cell


async def bench_http_session(
    url: str,
    write: bool,
    kernels: int,
    conc: int,
    args: argparse.Namespace,
    server: ServerProcess,
    label: str = "anvil",
) -> Cell:
    """``session_read`` / ``session_write`` over HTTP, each caller with its own token."""
    target = f"{label}-http-session-{'write' if write else 'read'}"
    client = HttpClient(args.http_client, conc)
    try:
        caller = HttpSessionCaller(client, url, write)
        await caller.prepare(conc)  # a session per caller, made before the warm-up
        cell = await measure(target, kernels, conc, caller.call, args, server.meter())
    except (CallFailed, OSError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        cell = failed_cell(target, kernels, conc, e)
    finally:
        await client.close()
    server.check_alive()
    return cell


async def bench_ws_session(
    url: str,
    write: bool,
    kernels: int,
    conc: int,
    args: argparse.Namespace,
    server: ServerProcess,
    label: str = "anvil",
) -> Cell:
    """The same over the WebSocket: a connection per caller, each opened with HELLO.
    (``--ws-mux`` does not apply: one connection is one session.)"""
    target = f"{label}-ws-session-{'write' if write else 'read'}"
    caller = WsSessionCaller(url, write)
    try:
        await caller.prepare(conc)
        cell = await measure(target, kernels, conc, caller.call, args, server.meter())
    except (CallFailed, ServerFailed, OSError, websockets.WebSocketException, asyncio.TimeoutError, ValueError) as e:
        cell = failed_cell(target, kernels, conc, e)
    finally:
        await caller.close()
    server.check_alive()
    return cell


async def bench_anvil(
    kernels: int,
    args: argparse.Namespace,
    workdir: Path,
    label: str = "anvil",
    options: tuple[str, ...] = (),
    companions: frozenset[int] = frozenset(),
) -> list[Cell]:
    """The anvil targets on one server of ``kernels`` kernels. ``label`` names the targets
    (``<label>-http``, ``<label>-ws``, ...) and the server's folder, so that other benchmarks
    (gateway.py, store.py) can run several anvil servers in one table; ``options`` are added to
    ``--anvil-option``s; ``companions``: processes whose CPU is counted as the server's."""
    folder = workdir / f"{label}-{kernels}"
    folder.mkdir()
    meta = {"jupyter_anvil": {"kernels": {"min": kernels, "max": kernels}}}
    nb = notebook([code_cell(ANVIL_SERVER_CELL.replace("{spin4}", spin(" " * 4, args.work_ms)), tags=["server"])], meta)
    (folder / f"{APP}.ipynb").write_text(json.dumps(nb))
    port = free_port()
    token = secrets.token_hex(16)
    server = ServerProcess(
        f"jupyter-anvil{'' if label == 'anvil' else ' ' + label} ({kernels} kernel{'s' if kernels > 1 else ''})",
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
            *options,
        ],
        folder,
        workdir / f"{label}-{kernels}.log",
    )
    server.companions = companions
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
        calls_url = f"{base}/anvil/apps/{APP}/_/call"
        ws_url = f"ws://{HOST}:{port}/anvil/apps/{APP}/_/ws"
        for c in args.concurrency:
            client = HttpClient(args.http_client, c)
            try:
                call = client.poster(f"{calls_url}/add", check_anvil_reply)
                cells.append(await measure(f"{label}-http", kernels, c, call, args, server.meter()))
            finally:
                await client.close()
            server.check_alive()
            if "session" in args.targets:
                for write in (False, True):
                    cells.append(await bench_http_session(calls_url, write, kernels, c, args, server, label))
            ws = WsCaller(ws_url, 1 if args.ws_mux else c)
            try:
                await ws.open()
                cells.append(await measure(f"{label}-ws", kernels, c, ws.call, args, server.meter()))
            finally:
                await ws.close()
            server.check_alive()
            if "session" in args.targets:
                for write in (False, True):
                    cells.append(await bench_ws_session(ws_url, write, kernels, c, args, server, label))
    finally:
        server.stop()
    if any(cell.errors for cell in cells):
        print(server.log_tail(15))
    return cells


# ---------------------------------------------------------------- report


def find(cells: list[Cell], target: str, kernels: int, conc: int) -> Cell | None:
    for c in cells:
        if (c.target, c.kernels, c.concurrency) == (target, kernels, conc) and c.calls:
            return c
    return None


def ratios(cells: list[Cell], args: argparse.Namespace) -> list[dict]:
    """The comparisons the targets are about, each with its verdict (None: for information).

    Most are ratios (``unit`` "x"); what sessions add to a call's p50 is a difference
    (``unit`` "ms"), since the target is an absolute budget.
    """
    out: list[dict] = []

    def add(
        name: str, num: Cell | None, den: Cell | None, attr: str, op: str, bound: float | None = None, unit: str = "x"
    ) -> None:
        if num is None or den is None:
            return
        a, b = getattr(num, attr), getattr(den, attr)
        value = a - b if unit == "ms" else a / b
        verdict = None
        if bound is not None:
            verdict = value <= bound if op == "<=" else value >= bound
        out.append({"name": name, "value": value, "op": op, "bound": bound, "pass": verdict, "unit": unit})

    cmin, cmax = min(args.concurrency), max(args.concurrency)
    anvil = ("anvil-http", "anvil-ws")
    for n in args.kernels:
        for t in anvil:
            bound = 1 / 3 if cmin == 1 else None
            add(f"p50 {t} / kg-http, C={cmin}, {n}k", find(cells, t, n, cmin), find(cells, "kg-http", n, cmin),
                "p50_ms", "<=", bound)  # fmt: skip
        for t in anvil:
            bound = 3.0 if n == 1 and cmax == 8 else None
            add(f"calls/s {t} / kg-http, C={cmax}, {n}k", find(cells, t, n, cmax), find(cells, "kg-http", n, cmax),
                "calls_per_s", ">=", bound)  # fmt: skip
    floor = f"comm-{args.comm_transports[0]}" if args.comm_transports else None
    if 1 in args.kernels and 2 in args.kernels:
        for t in (*anvil, "kg-http", floor, f"{floor}-thr"):
            bound = 1.6 if t in anvil else None
            add(f"calls/s {t} 2k / 1k, C={cmax}", find(cells, t, 2, cmax), find(cells, t, 1, cmax),
                "calls_per_s", ">=", bound)  # fmt: skip
    for transport in args.comm_transports:
        comm = f"comm-{transport}"
        for t in anvil:
            bound = 1.5 if t == "anvil-ws" and comm == floor else None
            add(f"p50 {t} / {comm}, C=1, 1k", find(cells, t, 1, 1), find(cells, comm, 1, 1), "p50_ms", "<=", bound)
    if floor:
        add(f"p50 anvil-ws / {floor}-thr, C=1, 1k", find(cells, "anvil-ws", 1, 1), find(cells, f"{floor}-thr", 1, 1),
            "p50_ms", "<=")  # fmt: skip
        add(f"p50 {floor}-thr / {floor}, C=1, 1k", find(cells, f"{floor}-thr", 1, 1), find(cells, floor, 1, 1),
            "p50_ms", "<=")  # fmt: skip
    for t in anvil:
        for n in args.kernels:
            for c in args.concurrency:
                for kind in ("read", "write"):
                    add(f"p50 added by session {kind}: {t}, C={c}, {n}k", find(cells, f"{t}-session-{kind}", n, c),
                        find(cells, t, n, c), "p50_ms", "<=", 1.0 if c == 1 else None, unit="ms")  # fmt: skip
            add(f"calls/s {t}-session-write / {t}, C={cmax}, {n}k", find(cells, f"{t}-session-write", n, cmax),
                find(cells, t, n, cmax), "calls_per_s", ">=")  # fmt: skip
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
    p.add_argument(
        "--targets",
        default="comm,kg,anvil,session",
        help="any of comm,kg,anvil,session (default: all); session: the session_read/session_write "
        "targets, which run on the anvil servers and bring the plain anvil ones for comparison",
    )
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
    p.add_argument(
        "--work-ms",
        type=float,
        default=0.0,
        help="make add() keep the CPU busy this long in every target (default 0: a trivial add); "
        "shows whether more kernels add capacity when the calls, not the plumbing, cost",
    )
    p.add_argument("--raw", action="store_true", help="include every latency in the JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.targets = {t.strip() for t in args.targets.split(",") if t.strip()}
    unknown = args.targets - {"comm", "kg", "anvil", "session"}
    if unknown:
        p.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    if "session" in args.targets:
        args.targets.add("anvil")  # what sessions add is read against the plain calls
    return args


def summary_order(c: Cell) -> tuple:
    """Floors, KG, then anvil by transport; each session target right after the plain
    call of the same kernels and concurrency."""
    order = {"comm-ipc": 0, "comm-ipc-thr": 1, "comm-tcp": 2, "comm-tcp-thr": 3, "kg-http": 4, "anvil-http": 5}
    family, _, variant = c.target.partition("-session-")
    return (order.get(family, 6), c.kernels, c.concurrency, ("", "read", "write").index(variant))


async def run(args: argparse.Namespace) -> dict:
    meta = {
        "versions": versions(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "http_client": args.http_client,
        "ws_connections": "1 (mux)" if args.ws_mux else "one per caller",
        "calls": args.calls or DEFAULT_CALLS,
        "warmup": args.warmup,
        "work_ms": args.work_ms,
        "anvil_options": args.anvil_option,
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    v = meta["versions"]
    print("jupyter-anvil call benchmark: add(1, 2) served four ways" + (
        "; session_read() and session_write() on anvil" if "session" in args.targets else ""))  # fmt: skip
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
    print(f"  source tree at {meta['git_commit']}; started {meta['started']}")
    if args.work_ms:
        print(f"  add() keeps the CPU busy for {args.work_ms:g} ms per call in every target")
    if args.anvil_option:
        print(f"  jupyter-anvil options: {' '.join(args.anvil_option)}")
    print("  CPU ms per call: CPU time of this process (bench), the server, and all kernels, per call;")
    print("  cores busy: their CPU seconds per second. p50/p99 are per call, calls/s over the cell.")
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

    print()
    print("summary")
    print(HEAD)
    for c in sorted(cells, key=summary_order):
        print(row(c))
    print()
    print("ratios (targets marked; 'k' = kernels; 'added': session call p50 minus plain call p50)")
    rs = ratios(cells, args)
    for r in rs:
        mark = "" if r["pass"] is None else ("  PASS" if r["pass"] else "  MISS")
        ms = r["unit"] == "ms"
        unit = " ms" if ms else ""
        bound = "" if r["bound"] is None else f"   target {r['op']} {r['bound']:.2f}{unit}"
        value = f"{r['value']:>+7.2f}" if ms else f"{r['value']:>7.2f}"
        print(f"  {r['name']:<52}{value}{unit}{bound}{mark}")
    if failures:
        print()
        print("failures")
        for f in failures:
            print(f"  {f}")
    return {"meta": meta, "cells": [asdict(c) for c in cells], "ratios": rs, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        write_json(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
