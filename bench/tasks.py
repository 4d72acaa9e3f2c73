"""Background-task benchmark: launch-to-running on a warm task pool, against a cold start.

Run by hand, not by CI:

    python bench/tasks.py                        # 30 warm + 10 cold samples, about 3 minutes
    python bench/tasks.py --samples 10 --cold-samples 3      # quick smoke run
    python bench/tasks.py --json results.json

Both sides run the same notebook, ``tasks_bench.ipynb``: two ``server`` cells (standard
library imports, an in-memory SQLite table, a price dict; then the app's functions) and
one untagged cell that neither side runs. Its background task ``job(x)`` notes the time
its own code begins and returns ``{"x": x, "began": <that time>}``.

* warm: a jupyter-anvil server (``--AnvilApp.task_spares=1``). Each sample POSTs
  ``/anvil/apps/tasks_bench/_/call/start`` ``{"args": [i]}`` (no token), which calls
  ``server.launch_background_task("job", i)``; then reads the admin record
  ``/anvil/api/tasks/<id>`` until it is ``completed``. Launch-to-running is the record's
  ``started - launched`` (both stamped by the server). One task at a time, each launched
  only once the pool holds a warm spare again and the server's process tree is quiet.
* cold: what a notebook-job runner does for every job: ``jupyter_client``'s
  ``AsyncKernelManager`` starts a fresh ipykernel, waits for it to be ready, runs the
  server cells (one ``execute_request`` each, waiting for its reply), then runs
  ``job(i)``. Start-to-running is from "start the kernel" to the moment the ``job(i)``
  request is sent; each kernel is shut down before the next sample.

All in this one process tree; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
from harness import (
    HOST,
    REPO_ROOT,
    ServerFailed,
    ServerProcess,
    descendants,
    free_port,
    git_commit,
    percentile,
    proc_table,
    wait_until,
    write_json,
)
from jupyter_client.manager import AsyncKernelManager

APP = "tasks_bench"
TASK_TIMEOUT_S = 30.0  # one task, launch to completed; a healthy one takes milliseconds
SETTLE_TIMEOUT_S = 60.0  # a spare kernel warm again after a task
KERNEL_TIMEOUT_S = 60.0  # a cold kernel ready, a cell run
MAX_ERRORS_IN_A_ROW = 5
TARGET_WARM_P50_MS = 100.0
TARGET_RATIO = 20.0
TARGETS_DOC = f"""\
targets (each judged twice: to "running" as the server stamps it, and to the job's first line)
  1. warm launch -> running p50 < {TARGET_WARM_P50_MS:.0f} ms
  2. cold start -> running p50 >= {TARGET_RATIO:.0f}x warm launch -> running p50"""

# ---------------------------------------------------------------- the notebook

SETUP_CELL = """\
import csv, dataclasses, datetime, decimal, hashlib, io, json, logging, re, statistics, time, uuid
import email.message, email.utils, http.client, sqlite3, urllib.parse
import xml.etree.ElementTree as ET

log = logging.getLogger("tasks_bench")
CONFIG = json.loads('{"currency": "GBP", "vat": "0.2", "regions": ["uk", "eu", "us"]}')
PRICES = {f"sku-{i:04d}": decimal.Decimal(i) / 4 for i in range(2000)}
DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.execute("create table orders (id integer primary key, sku text, qty integer, day text)")
DB.executemany(
    "insert into orders (sku, qty, day) values (?, ?, ?)",
    [(sku, i % 7 + 1, datetime.date(2024, 1, 1 + i % 28).isoformat()) for i, sku in enumerate(PRICES)],
)
DB.commit()
FEED = ET.fromstring("<feed>" + "".join(f"<item sku='{s}'/>" for s in list(PRICES)[:100]) + "</feed>")
"""

API_CELL = """\
from jupyter_anvil import server

@server.background_task
def job(x):
    began = time.time()  # when the task's own code starts: the benchmark reads it
    return {"x": x, "began": began}

@server.callable
def start(x):
    return server.launch_background_task("job", x)
"""

SCRATCH_CELL = """\
# exploring in the notebook: not a server cell, so neither side runs it
total = DB.execute("select sum(qty) from orders").fetchone()[0]
total
"""

SERVER_CELLS = [SETUP_CELL, API_CELL]


def code_cell(source: str, tags: list[str] | None = None) -> dict:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": uuid.uuid4().hex[:8],
        "metadata": {"tags": tags} if tags else {},
        "outputs": [],
        "source": source,
    }


def write_notebook(folder: Path) -> Path:
    cells = [
        {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": "# Orders: background task benchmark"},
        code_cell(SETUP_CELL, ["server"]),
        code_cell(API_CELL, ["server"]),
        code_cell(SCRATCH_CELL),
    ]
    meta = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    path = folder / f"{APP}.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    return path


# ---------------------------------------------------------------- samples


@dataclass
class WarmSample:
    i: int
    task_id: str = ""
    launched: float = math.nan  # server's time.time() stamps
    started: float = math.nan
    ended: float = math.nan
    began: float = math.nan  # the job's own time.time() on entry, in the task kernel
    post_ms: float = math.nan  # POST .../call/start until its reply
    observed_ms: float = math.nan  # POST sent until a GET of the record says completed
    polls: int = 0
    settle_s: float = math.nan  # waited before this launch for a warm spare and a quiet tree

    @property
    def to_running_ms(self) -> float:
        return (self.started - self.launched) * 1000

    @property
    def to_began_ms(self) -> float:
        return (self.began - self.launched) * 1000

    @property
    def to_completed_ms(self) -> float:
        return (self.ended - self.launched) * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "to_running_ms": self.to_running_ms,
            "to_began_ms": self.to_began_ms,
            "to_completed_ms": self.to_completed_ms,
        }


@dataclass
class ColdSample:
    i: int
    to_ready_ms: float = math.nan  # start requested until wait_for_ready returned
    to_running_ms: float = math.nan  # ... until the server cells ran and job(i) is sent
    to_began_ms: float = math.nan  # ... until job's own code began (kernel clock)
    to_completed_ms: float = math.nan  # ... until job(i)'s execute_reply
    settle_s: float = math.nan


@dataclass
class Phase:
    samples: list[Any] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def failed(self, e: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(e).__name__}: {e}"[:400]
        print(f"    ! sample failed: {type(e).__name__}: {str(e)[:200]}", flush=True)


# ---------------------------------------------------------------- waiting for quiet


def tree_cpu(root: int) -> tuple[float, int]:
    """CPU seconds so far of ``root`` and every process below it, and how many there are."""
    table = proc_table()
    pids = (descendants(table, root) | {root}) & table.keys()
    return sum(table[p].cpu_s for p in pids), len(pids)


async def quiet(root: int, window_s: float = 0.3, busy_below: float = 0.1) -> tuple[bool, int]:
    """Whether the tree under ``root`` used under ``busy_below`` of a core over ``window_s``."""
    cpu0, _ = tree_cpu(root)
    await asyncio.sleep(window_s)
    cpu1, count = tree_cpu(root)
    return (cpu1 - cpu0) < busy_below * window_s, count


# ---------------------------------------------------------------- warm: jupyter-anvil


class AnvilServer:
    def __init__(self, folder: Path, workdir: Path, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://{HOST}:{self.port}"
        self.auth = {"Authorization": f"token {self.token}"}
        self.process = ServerProcess(
            "jupyter-anvil",
            [
                sys.executable,
                "-m",
                "jupyter_anvil",
                str(folder),
                f"--ServerApp.ip={HOST}",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                "--ServerApp.open_browser=False",
                "--AnvilApp.task_spares=1",
                *args.anvil_option,
            ],
            folder,
            workdir / "anvil.log",
        )
        self.last_app: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    async def app_entry(self, s: aiohttp.ClientSession) -> dict[str, Any] | None:
        async with s.get(f"{self.base}/anvil/api/apps", headers=self.auth) as r:
            if r.status != 200:
                return None
            listing = json.loads(await r.read())
        apps = listing.get("apps", []) if isinstance(listing, dict) else listing
        for app in apps:
            if app.get("name") == APP:
                self.last_app = app
                return app
        return None

    @staticmethod
    def spares(app: dict[str, Any] | None) -> int | None:
        """Warm task kernels the app's pool holds; None if the server does not say."""
        pool = (app or {}).get("pool")
        if isinstance(pool, dict) and isinstance(pool.get("task_spares"), int):
            return int(pool["task_spares"])
        return None

    async def ready(self, s: aiohttp.ClientSession) -> bool:
        app = await self.app_entry(s)
        if app is None or app.get("status") != "ready":
            return False
        spares = self.spares(app)
        return spares is None or spares >= 1


async def settle(server: AnvilServer, s: aiohttp.ClientSession, baseline: int) -> float:
    """Wait until the next launch finds a warm spare on a quiet machine: the pool says it
    holds a spare (when it reports spares), the server has no more processes than when
    it was first ready (the last task's kernel is gone), and the server with its kernels
    used under a tenth of a core for 0.3 s (the new spare is not still warming)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SETTLE_TIMEOUT_S:
        server.process.check_alive()
        spares = server.spares(await server.app_entry(s))
        if spares is None or spares >= 1:
            calm, count = await quiet(server.pid)
            if calm and count <= baseline:
                return time.perf_counter() - t0
        else:
            await asyncio.sleep(0.05)
    raise ServerFailed(f"no warm spare and a quiet server after {SETTLE_TIMEOUT_S:.0f}s; app: {server.last_app}")


async def one_task(server: AnvilServer, s: aiohttp.ClientSession, i: int, poll_s: float) -> WarmSample:
    sample = WarmSample(i)
    clock = time.perf_counter
    t0 = clock()
    async with s.post(f"{server.base}/anvil/apps/{APP}/_/call/start", json={"args": [i]}) as r:
        raw = await r.read()
        if r.status != 200:
            raise ServerFailed(f"POST start -> {r.status}: {raw[:300]!r}")
    sample.post_ms = (clock() - t0) * 1000
    reply = json.loads(raw)
    task_id = (reply.get("response") or {}).get("id")
    if not isinstance(task_id, str):
        raise ServerFailed(f"no task id in the reply to start: {raw[:300]!r}")
    sample.task_id = task_id
    record: dict[str, Any] = {}
    give_up = t0 + TASK_TIMEOUT_S
    while clock() < give_up and sample.polls < int(TASK_TIMEOUT_S / max(poll_s, 0.001)) + 10:
        sample.polls += 1
        async with s.get(f"{server.base}/anvil/api/tasks/{task_id}", headers=server.auth) as r:
            body = await r.read()
            if r.status != 200:
                raise ServerFailed(f"GET /anvil/api/tasks/{task_id} -> {r.status}: {body[:300]!r}")
        record = json.loads(body)
        if record.get("status") not in ("queued", "running"):
            break
        await asyncio.sleep(poll_s)
    sample.observed_ms = (clock() - t0) * 1000
    if record.get("status") != "completed":
        raise ServerFailed(f"task {task_id} ended {record.get('status')!r}: {json.dumps(record)[:500]}")
    value = (record.get("result") or {}).get("v") or {}
    if value.get("x") != i:
        raise ServerFailed(f"task {task_id} returned {value!r}, expected x={i}")
    for name in ("launched", "started", "ended"):
        setattr(sample, name, float(record[name]))
    sample.began = float(value["began"])
    return sample


async def bench_warm(args: argparse.Namespace, folder: Path, workdir: Path) -> tuple[Phase, dict[str, Any]]:
    server = AnvilServer(folder, workdir, args)
    phase = Phase()
    info: dict[str, Any] = {}
    server.process.start()
    try:
        try:
            took = await wait_until(server.process, server.ready)
        except ServerFailed as e:
            raise ServerFailed(f"{e}\n    last app entry: {server.last_app}") from None
        info["ready_s"] = round(took, 2)
        spares_reported = server.spares(server.last_app) is not None
        info["spares_reported"] = spares_reported
        print(f"  jupyter-anvil ready in {took:.1f}s on port {server.port}; app: {json.dumps(server.last_app)[:300]}")
        if not spares_reported:
            print("  (the app's pool does not report task_spares: settling on a quiet process tree alone)")
        timeout = aiohttp.ClientTimeout(total=TASK_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as s:
            # the baseline process count: server, app kernels, one warm spare, all quiet
            baseline = 0
            for _ in range(int(SETTLE_TIMEOUT_S / 0.3)):
                calm, baseline = await quiet(server.pid)
                if calm:
                    break
            info["baseline_processes"] = baseline
            total = args.warmup + args.samples
            streak = 0
            for n in range(total):
                measured = n >= args.warmup
                try:
                    waited = await settle(server, s, baseline)
                    sample = await one_task(server, s, n, args.poll_ms / 1000)
                    sample.settle_s = round(waited, 3)
                    streak = 0
                except (ServerFailed, aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as e:
                    phase.failed(e)
                    streak += 1
                    if streak >= MAX_ERRORS_IN_A_ROW:
                        print(f"  ! {streak} failures in a row: warm phase stopped", flush=True)
                        break
                    continue
                if measured:
                    phase.samples.append(sample)
                if args.verbose or n < args.warmup:
                    print(
                        f"    {'warm-up' if not measured else 'sample'} {n}: running {sample.to_running_ms:.1f} ms, "
                        f"began {sample.to_began_ms:.1f} ms, completed {sample.to_completed_ms:.1f} ms, "
                        f"observed {sample.observed_ms:.1f} ms ({sample.polls} polls), settled {waited:.2f}s",
                        flush=True,
                    )
    finally:
        server.process.stop()
    if phase.errors:
        print(server.process.log_tail(25))
    return phase, info


# ---------------------------------------------------------------- cold: a fresh kernel per job


async def execute(client: Any, code: str, user_expressions: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code``; the execute_reply's content once it says ``ok`` (what a job runner waits for)."""
    msg_id = client.execute(code, store_history=False, user_expressions=user_expressions or {})
    give_up = time.perf_counter() + KERNEL_TIMEOUT_S
    for _ in range(10_000):
        left = give_up - time.perf_counter()
        if left <= 0:
            break
        reply = await asyncio.wait_for(client.get_shell_msg(), left)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        content = reply["content"]
        if content.get("status") != "ok":
            raise RuntimeError(f"cell failed: {content.get('ename')}: {content.get('evalue')}")
        return dict(content)
    raise asyncio.TimeoutError(f"no reply to execute_request within {KERNEL_TIMEOUT_S:.0f}s")


def kernel_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_TOKEN", "JUPYTER_PASSWORD")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


async def one_cold_job(i: int, folder: Path, log: Any) -> ColdSample:
    sample = ColdSample(i)
    manager = AsyncKernelManager(kernel_name="python3")
    client = None
    clock = time.perf_counter
    try:
        t0, wall0 = clock(), time.time()
        await manager.start_kernel(env=kernel_env(), cwd=str(folder), stdout=log, stderr=log)
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=KERNEL_TIMEOUT_S)
        sample.to_ready_ms = (clock() - t0) * 1000
        for source in SERVER_CELLS:
            await execute(client, source)
        sample.to_running_ms = (clock() - t0) * 1000
        content = await execute(
            client, f"_bench_result = json.dumps(job({i}))", user_expressions={"r": "_bench_result"}
        )
        sample.to_completed_ms = (clock() - t0) * 1000
        found = content.get("user_expressions", {}).get("r", {})
        value = json.loads(ast.literal_eval(found.get("data", {}).get("text/plain", "''")) or "null")
        if not isinstance(value, dict) or value.get("x") != i:
            raise RuntimeError(f"job({i}) returned {found!r}")
        sample.to_began_ms = (float(value["began"]) - wall0) * 1000
    finally:
        if client is not None:
            client.stop_channels()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(manager.shutdown_kernel(), KERNEL_TIMEOUT_S)
    return sample


async def bench_cold(args: argparse.Namespace, folder: Path, workdir: Path) -> Phase:
    log_path = workdir / "cold-kernels.log"  # the kernels' own stdout and stderr
    with log_path.open("ab") as log:
        phase = await cold_samples(args, folder, log)
    if phase.errors:
        lines = log_path.read_text(errors="replace").splitlines()[-25:]
        print("\n".join("    | " + x for x in lines))
    return phase


async def cold_samples(args: argparse.Namespace, folder: Path, log: Any) -> Phase:
    phase = Phase()
    me = os.getpid()
    streak = 0
    for i in range(args.cold_samples):
        t0 = time.perf_counter()
        for _ in range(int(SETTLE_TIMEOUT_S / 0.3)):  # the last kernel gone, this process idle
            calm, count = await quiet(me)
            if calm and count <= 1:
                break
        waited = time.perf_counter() - t0
        try:
            sample = await one_cold_job(i, folder, log)
            streak = 0
        except Exception as e:
            phase.failed(e)
            streak += 1
            if streak >= MAX_ERRORS_IN_A_ROW:
                print(f"  ! {streak} failures in a row: cold phase stopped", flush=True)
                break
            continue
        sample.settle_s = round(waited, 3)
        phase.samples.append(sample)
        if args.verbose or i == 0:
            print(
                f"    cold {i}: ready {sample.to_ready_ms:.0f} ms, running {sample.to_running_ms:.0f} ms, "
                f"began {sample.to_began_ms:.0f} ms, completed {sample.to_completed_ms:.0f} ms",
                flush=True,
            )
    return phase


# ---------------------------------------------------------------- report


@dataclass
class Stat:
    name: str
    values_ms: list[float]

    def p(self, q: float) -> float:
        return percentile(sorted(v for v in self.values_ms if not math.isnan(v)), q)

    def as_dict(self) -> dict[str, Any]:
        ok = sorted(v for v in self.values_ms if not math.isnan(v))
        return {
            "name": self.name,
            "n": len(ok),
            "p50_ms": self.p(0.5),
            "p90_ms": self.p(0.9),
            "max_ms": ok[-1] if ok else math.nan,
        }


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def stats(warm: Phase, cold: Phase) -> list[Stat]:
    w: list[WarmSample] = warm.samples
    c: list[ColdSample] = cold.samples
    return [
        Stat("warm  launch -> running", [s.to_running_ms for s in w]),
        Stat("warm  launch -> job code begins", [s.to_began_ms for s in w]),
        Stat("warm  launch -> completed", [s.to_completed_ms for s in w]),
        Stat("warm  POST -> reply (task id)", [s.post_ms for s in w]),
        Stat("warm  POST -> client sees completed", [s.observed_ms for s in w]),
        Stat("cold  start -> kernel ready", [s.to_ready_ms for s in c]),
        Stat("cold  start -> running", [s.to_running_ms for s in c]),
        Stat("cold  start -> job code begins", [s.to_began_ms for s in c]),
        Stat("cold  start -> completed", [s.to_completed_ms for s in c]),
    ]


def verdicts(table: list[Stat]) -> list[dict[str, Any]]:
    """Each target, on the server's stamps (``started``) and on the job's own clock."""
    by_name = {s.name: s for s in table}
    out: list[dict[str, Any]] = []
    for label, warm_name, cold_name in (
        ("running", "warm  launch -> running", "cold  start -> running"),
        ("job code begins", "warm  launch -> job code begins", "cold  start -> job code begins"),
    ):
        warm, cold = by_name[warm_name].p(0.5), by_name[cold_name].p(0.5)
        ratio = cold / warm if warm > 0 else math.nan
        out.append(
            {
                "name": f"warm p50, launch -> {label}",
                "value": warm,
                "unit": "ms",
                "target": f"< {TARGET_WARM_P50_MS:.0f} ms",
                "pass": None if math.isnan(warm) else warm < TARGET_WARM_P50_MS,
            }
        )
        out.append(
            {
                "name": f"cold p50 / warm p50, -> {label}",
                "value": ratio,
                "unit": "x",
                "target": f">= {TARGET_RATIO:.0f}x",
                "pass": None if math.isnan(ratio) else ratio >= TARGET_RATIO,
            }
        )
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("ipykernel", "jupyter_client", "jupyter_server", "tornado", "pyzmq", "aiohttp", "jupyter_anvil"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed" if dist != "jupyter_anvil" else "from source tree"
    return out


def print_table(table: list[Stat], rs: list[dict[str, Any]]) -> None:
    print(f"  {'measure':<38}{'n':>4}{'p50 ms':>10}{'p90 ms':>10}{'max ms':>10}")
    for s in table:
        d = s.as_dict()
        print(f"  {s.name:<38}{d['n']:>4}{fmt(d['p50_ms']):>10}{fmt(d['p90_ms']):>10}{fmt(d['max_ms']):>10}")
    print()
    for r in rs:
        mark = "" if r["pass"] is None else ("  PASS" if r["pass"] else "  MISS")
        value = f"{fmt(r['value'])} {r['unit']}" if r["unit"] == "ms" else f"{fmt(r['value'])}x"
        target = f"   target {r['target']}" if r["target"] else ""
        print(f"  {r['name']:<46}{value:>12}{target}{mark}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    meta = {
        "versions": versions(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "samples": args.samples,
        "cold_samples": args.cold_samples,
        "warmup": args.warmup,
        "poll_ms": args.poll_ms,
        "anvil_options": args.anvil_option,
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    v = meta["versions"]
    print("jupyter-anvil background-task benchmark: launch-to-running on a warm task pool vs a cold kernel")
    print(
        f"  python {v['python']}  ipykernel {v['ipykernel']}  jupyter_client {v['jupyter_client']}  "
        f"jupyter_server {v['jupyter_server']}  jupyter_anvil {v['jupyter_anvil']}"
    )
    print(f"  tornado {v['tornado']}  pyzmq {v['pyzmq']}  aiohttp {v['aiohttp']}")
    print(f"  cpus {meta['cpus']}  {meta['platform']}")
    print(f"  load average at start {' '.join(str(x) for x in meta['load_average'])}")
    print(f"  source tree at {meta['git_commit']}; started {meta['started']}")
    print(
        f"  warm: {args.samples} tasks one at a time after {args.warmup} unmeasured, each launched once a spare is warm"
        f" and the server tree is quiet; record polled every {args.poll_ms:g} ms"
    )
    print(f"  cold: {args.cold_samples} fresh kernels one at a time, server cells then job(i), each shut down after")
    if args.anvil_option:
        print(f"  jupyter-anvil options: {' '.join(args.anvil_option)}")
    print(TARGETS_DOC)
    print(flush=True)

    failures: list[str] = []
    warm, cold, warm_info = Phase(), Phase(), {}
    with tempfile.TemporaryDirectory(prefix="anvil-tasks-bench-") as tmp:
        workdir = Path(tmp)
        folder = workdir / "app"
        folder.mkdir()
        write_notebook(folder)
        print("warm (jupyter-anvil)", flush=True)
        try:
            warm, warm_info = await bench_warm(args, folder, workdir)
        except Exception as e:
            failures.append(f"warm: {type(e).__name__}: {e}")
            print(f"  ! {failures[-1]}", flush=True)
        print("cold (fresh kernel per job)", flush=True)
        try:
            cold = await bench_cold(args, folder, workdir)
        except Exception as e:
            failures.append(f"cold: {type(e).__name__}: {e}")
            print(f"  ! {failures[-1]}", flush=True)
    for name, phase in (("warm", warm), ("cold", cold)):
        if phase.errors:
            failures.append(f"{name}: {phase.errors} sample(s) failed; first: {phase.first_error}")

    table = stats(warm, cold)
    rs = verdicts(table)
    settles = sorted(s.settle_s for s in warm.samples)
    print()
    if settles:
        print(
            f"  waited before each warm launch for a warm spare and a quiet tree: "
            f"p50 {percentile(settles, 0.5):.2f}s, max {settles[-1]:.2f}s"
            + ("" if warm_info.get("spares_reported", True) else " (spares not reported: quiet tree only)")
        )
    print()
    print_table(table, rs)
    if failures:
        print()
        print("failures")
        for f in failures:
            print(f"  {f}")
    return {
        "meta": meta,
        "warm_info": warm_info,
        "summary": [s.as_dict() for s in table],
        "targets": rs,
        "warm": [s.as_dict() for s in warm.samples],
        "cold": [asdict(s) for s in cold.samples],
        "failures": failures,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=30, help="measured warm tasks (default 30)")
    p.add_argument("--cold-samples", type=int, default=10, help="cold kernel starts (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured warm tasks first (default 2)")
    p.add_argument("--poll-ms", type=float, default=5.0, help="interval between GETs of a task's record (default 5)")
    p.add_argument(
        "--anvil-option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra option for the jupyter-anvil server, e.g. --anvil-option=--AnvilApp.kernel_transport=tcp",
    )
    p.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON to PATH ('-': stdout)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every sample")
    args = p.parse_args(argv)
    for name in ("samples", "cold_samples", "warmup"):
        if not 0 <= getattr(args, name) <= 10_000:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 10000")
    if not 0.5 <= args.poll_ms <= 1000:
        p.error("--poll-ms must be between 0.5 and 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        write_json(result, args.json)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
