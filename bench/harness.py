"""Measuring calls: the load driver, CPU accounting, server processes and table rows.

Shared by the benchmarks in this folder; nothing here knows what is being called.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # the only address any benchmark talks to
CALL_TIMEOUT_S = 30.0  # a single call; a healthy one takes milliseconds
STARTUP_TIMEOUT_S = 180.0  # server up and kernels warm
STOP_TIMEOUT_S = 20.0
DEFAULT_CALLS = {1: 500, 8: 2000}

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
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    max_ms: float = math.nan
    calls_per_s: float = math.nan
    cpu_bench_ms: float = math.nan  # CPU per call, in ms, of this process
    cpu_server_ms: float = math.nan  # ... of the server process
    cpu_kernels_ms: float = math.nan  # ... of all kernels
    cores_busy: float = math.nan  # CPU seconds of all of them per second of wall time
    cpu_kernel_share: list[float] = field(default_factory=list)  # each kernel's part of the kernels' CPU
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
                if isinstance(e, (ConnectionError, ServerFailed)):
                    await asyncio.sleep(0.05)  # don't spin on a dead server
                continue
            latencies.append(clock() - t0)

    start = clock()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, errors, clock() - start, first_error


async def measure(
    target: str, kernels: int, concurrency: int, call: Call, args: argparse.Namespace, meter: CpuMeter
) -> Cell:
    """Warm up, then measure one cell and print its row."""
    calls = args.calls or DEFAULT_CALLS.get(concurrency, 1000)
    if args.warmup:
        await drive(call, args.warmup, concurrency, args.cell_budget)
    before = meter.snapshot()
    lat, errors, wall, first_error = await drive(call, calls, concurrency, args.cell_budget)
    spent, per_kernel = meter.spent(before, meter.snapshot())
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
        cell.p95_ms = percentile(ms, 0.95)
        cell.p99_ms = percentile(ms, 0.99)
        cell.mean_ms = sum(ms) / len(ms)
        cell.max_ms = ms[-1]
        cell.calls_per_s = len(ms) / wall if wall > 0 else math.nan
        cell.latencies_ms = [round(x, 4) for x in ms] if args.raw else []
        if HAVE_PROC:
            cell.cpu_bench_ms = spent["bench"] * 1000 / len(ms)
            cell.cpu_server_ms = spent["server"] * 1000 / len(ms) if meter.server_pid else math.nan
            cell.cpu_kernels_ms = spent["kernels"] * 1000 / len(ms)
            cell.cores_busy = sum(spent.values()) / wall if wall > 0 else math.nan
            cell.cpu_kernel_share = [round(x / spent["kernels"], 3) for x in per_kernel] if spent["kernels"] else []
    if len(lat) + errors < calls:
        cell.note = f"stopped at the {args.cell_budget:.0f}s budget"
    print(row(cell), flush=True)
    return cell


# ---------------------------------------------------------------- processes and CPU

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
HAVE_PROC = os.path.isdir("/proc/self")


@dataclass(frozen=True)
class Proc:
    ppid: int
    start: int  # start time in clock ticks since boot: tells a pid from its reuse
    cpu_s: float  # user + system


def proc_table() -> dict[int, Proc]:
    """Every process /proc lets us read (Linux); empty elsewhere."""
    table: dict[int, Proc] = {}
    if not HAVE_PROC:
        return table
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) "
        table[int(entry.name)] = Proc(
            ppid=int(fields[1]), start=int(fields[19]), cpu_s=(int(fields[11]) + int(fields[12])) / CLK_TCK
        )
    return table


def descendants(table: dict[int, Proc], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class CpuMeter:
    """CPU seconds spent by this process ("bench"), the server under test and every
    other process below us (the kernels), between two snapshots. ``companions``: other
    serving processes counted with the server (a gateway that relays the kernels)."""

    def __init__(self, server_pid: int | None = None, companions: frozenset[int] = frozenset()) -> None:
        self.server_pid = server_pid
        self.server_pids = companions | ({server_pid} if server_pid is not None else set())

    def snapshot(self) -> dict[int, tuple[int, float]]:
        table = proc_table()
        me = os.getpid()
        pids = descendants(table, me) | {me}
        return {pid: (table[pid].start, table[pid].cpu_s) for pid in pids if pid in table}

    def spent(
        self, before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]]
    ) -> tuple[dict[str, float], list[float]]:
        """Seconds per role, and per kernel (busiest first)."""
        spent = {"bench": 0.0, "server": 0.0, "kernels": 0.0}
        per_kernel: list[float] = []
        me = os.getpid()
        for pid, (start, cpu) in after.items():
            then = before.get(pid)
            delta = cpu - then[1] if then and then[0] == start else cpu
            role = "bench" if pid == me else "server" if pid in self.server_pids else "kernels"
            spent[role] += delta
            if role == "kernels":
                per_kernel.append(delta)
        return spent, sorted(per_kernel, reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server in a session of its own; ``stop`` also ends any process it started."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.companions: frozenset[int] = frozenset()  # pids whose CPU is counted as the server's

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

    def meter(self) -> CpuMeter:
        return CpuMeter(self.proc.pid if self.proc is not None else None, self.companions)

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
        # Kernels run in sessions of their own: note them now, to be sure they are gone after.
        table = proc_table()
        below = {pid: table[pid].start for pid in descendants(table, self.proc.pid)}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(
                    f"  ! {self.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killing it",
                    flush=True,
                )
        # Whatever is left of this group and of the processes it started goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        table = proc_table()
        left = [pid for pid, start in below.items() if pid in table and table[pid].start == start]
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if left:
            print(f"  ! {self.name} left {len(left)} process(es) running after it stopped: killed {left}", flush=True)
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


def fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


TARGET_WIDTH = 37  # "postgresql-async-http-session-write" (store.py) and a space

HEAD = (
    f"  {'target':<{TARGET_WIDTH}}{'kernels':>7}{'C':>3}{'calls':>7}{'errors':>7}"
    f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'calls/s':>8}"
    f"   {'CPU ms per call: bench':>22}{'server':>7}{'kernels':>8}{'cores busy':>11}"
)


def row(c: Cell) -> str:
    line = (
        f"  {c.target:<{TARGET_WIDTH}}{c.kernels:>7}{c.concurrency:>3}{c.calls:>7}{c.errors:>7}"
        f"{fmt(c.p50_ms):>8}{fmt(c.p95_ms):>8}{fmt(c.p99_ms):>8}{fmt(c.calls_per_s, 0):>8}"
        f"   {fmt(c.cpu_bench_ms):>22}{fmt(c.cpu_server_ms):>7}{fmt(c.cpu_kernels_ms):>8}{fmt(c.cores_busy):>11}"
    )
    if len(c.cpu_kernel_share) > 1:
        line += "   split " + "/".join(f"{x * 100:.0f}" for x in c.cpu_kernel_share)
    if c.first_error:
        line += f"\n      first error: {c.first_error}"
    if c.note:
        line += f"\n      note: {c.note}"
    return line


def no_nan(value: object) -> object:
    """NaN is not JSON: missing numbers become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


def write_app_notebook(folder: Path, app: str, source: str, anvil: dict[str, object] | None = None) -> Path:
    """``<folder>/<app>.ipynb``: one ``server`` cell of ``source`` (and ``anvil`` as its
    ``metadata.jupyter_anvil``), written as JSON so the benchmarks need no nbformat."""
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": os.urandom(4).hex(),
        "metadata": {"tags": ["server"]},
        "outputs": [],
        "source": source,
    }
    metadata: dict[str, object] = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    if anvil is not None:
        metadata["jupyter_anvil"] = anvil
    path = folder / f"{app}.ipynb"
    path.write_text(json.dumps({"cells": [cell], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}))
    return path


def git_commit() -> str:
    """The source tree the numbers belong to."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_json(result: object, path: str) -> None:
    """Raw numbers as JSON to ``path`` ('-': stdout)."""
    text = json.dumps(no_nan(result), indent=2, default=str, allow_nan=False)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text)
        print(f"\nraw numbers written to {path}")
