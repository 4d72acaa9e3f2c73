"""Store benchmark: what a session read or write costs on PostgreSQL against SQLite.

Run by hand, not by CI (needs Debian's ``postgresql`` and ``jupyter-anvil[postgresql]``):

    python bench/store.py                      # both parts, about 3 minutes
    python bench/store.py --part store --ops 500 --json out.json
    python bench/store.py --part store --threads 1,4   # also PostgreSQL with 4 store threads
    python bench/store.py --part calls --calls 300     # the end-to-end part alone

Two parts, each over both engines in the one run, on one PostgreSQL cluster it starts:

* ``store``: the ``Store`` methods alone, timed from the event loop (below);
* ``calls``: end to end, a real ``python -m jupyter_anvil`` on each database
  (``--AnvilApp.database_url``), one after the other: bench/calls.py's plain call and its
  ``session_read`` / ``session_write`` calls over HTTP and the WebSocket, each caller in a
  session of its own, every answer checked against the session's counter. Sessions are read
  from the store on every call (no cached copy a write on another server could make stale),
  so a read costs a ``load`` and a write a ``load`` and a ``save``.

The operations are the ``Store`` methods a call uses for its session (host/sessions.py):

* ``insert``: ``insert_session``, a new session (a call's first write);
* ``load``: ``load_session``, a session not in the server's cache (another server wrote
  it last, or this one restarted);
* ``save``: ``save_session_changes`` with one changed key: the read-merge-write
  transaction after a call that wrote the session (``SELECT ... FOR UPDATE`` on PostgreSQL);
* ``touch``: ``save_session_changes`` with nothing changed: the ``last_used`` update.

Each runs ``--ops`` times at C=1 (one caller, each op awaited: the latency a call sees)
and at C=8 (eight callers at once, each on a session of its own: the store's throughput,
through its one worker thread). p50/p99 are of each op's wall time from the event loop;
ops/s is ops over the cell's wall time.

Databases, each a new, empty one on this machine:

* ``sqlite``: a file in a temporary folder, as the default store (WAL, synchronous=NORMAL);
* ``postgresql``: a throwaway cluster (tests/postgres.py, started the same way as in the
  tests but with PostgreSQL's default durability: fsync and synchronous commits on), over
  TCP on loopback, through psycopg 3;
* ``postgresql-async``: the same with ``synchronous_commit=off`` for the connection, the
  durability SQLite's synchronous=NORMAL gives (a power cut may lose the last commits,
  never corrupt).

``--threads 1,4`` also runs PostgreSQL with the Store's work spread over 4 threads
instead of its one (a ThreadPoolExecutor swapped in for this run only), to weigh the
worker thread model: what several connections at once would buy.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from calls import bench_anvil
from calls import summary_order as _summary_order
from harness import HEAD, Cell, git_commit, percentile, row, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pg_cluster import PostgresCluster, find_bin_dir, missing_reason  # the tests' throwaway cluster

from jupyter_anvil.host.store import SessionRecord, Store

OPS = ("insert", "load", "save", "touch")
CONCURRENCY = (1, 8)


class ThreadPoolWorker:
    """Stands in for the Store's one DatabaseThread: ``threads`` threads at once."""

    def __init__(self, threads: int) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bench-store")

    def submit(self, work: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        return self.pool.submit(work)

    def stop(self, timeout: float) -> bool:
        self.pool.shutdown(wait=True)
        return True


def value(n: int) -> dict[str, Any]:
    return {"v": n, "objects": []}


async def run_cell(store: Store, op: str, callers: int, ops: int, prefix: str) -> dict[str, Any]:
    """``ops`` operations by ``callers`` coroutines, each on sessions of its own."""
    now = time.time()
    # sessions to load, save and touch: made first, not timed
    hashes = [f"{prefix}-{op}-{callers}-{i}".ljust(64, "x")[:64] for i in range(callers)]
    if op != "insert":
        for h in hashes:
            await store.insert_session(SessionRecord(h, h[:32], "bench", "browser", {"n": value(0)}, now, now))
    latencies: list[float] = []
    counter = iter(range(ops))

    async def caller(index: int) -> None:
        h = hashes[index]
        for n in counter:
            action: Awaitable[Any]
            if op == "insert":
                fresh = f"{prefix}-new-{callers}-{n}".ljust(64, "y")[:64]
                action = store.insert_session(SessionRecord(fresh, fresh[:32], "bench", "browser", {}, now, now))
            elif op == "load":
                action = store.load_session(h, 0)
            elif op == "save":
                action = store.save_session_changes(h, {"n": value(n)}, [], touch=True)
            else:
                action = store.save_session_changes(h, {}, [], touch=True)
            started = time.perf_counter()
            await action
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    wall = time.perf_counter() - began
    latencies.sort()
    return {
        "op": op,
        "callers": callers,
        "ops": len(latencies),
        "ops_per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


async def bench_database(name: str, url: str, ops: int, threads: int) -> list[dict[str, Any]]:
    store = Store(url)
    store.create_schema()
    if threads > 1:
        store._worker.stop(5)
        store._worker = ThreadPoolWorker(threads)  # type: ignore[assignment]
    cells = []
    try:
        for callers in CONCURRENCY:
            for op in OPS:
                await run_cell(store, op, callers, max(ops // 10, 20), "warm")  # connections, caches, plans
                cell = await run_cell(store, op, callers, ops, "timed")
                cell.update(database=name, threads=threads)
                cells.append(cell)
                print(
                    f"{name:<18} {threads:>3} {callers:>3} {op:<7} {cell['ops_per_s']:>9.0f}"
                    f" {cell['p50_ms']:>8.3f} {cell['p99_ms']:>8.3f}",
                    flush=True,
                )
    finally:
        store.close()
    return cells


DATABASES = ("sqlite", "postgresql", "postgresql-async")


def call_args(args: argparse.Namespace) -> argparse.Namespace:
    """What bench_anvil (calls.py) reads, for the end-to-end part."""
    return argparse.Namespace(
        calls=args.calls,
        warmup=args.warmup,
        concurrency=args.concurrency,
        cell_budget=120.0,
        http_client="aiohttp",
        ws_mux=False,
        work_ms=0.0,
        anvil_option=[],
        targets={"anvil", "session"},
        raw=False,
        verbose=False,
    )


async def bench_calls(urls: dict[str, str], args: argparse.Namespace, workdir: Path) -> list[Cell]:
    """One server per database, one after the other: plain and session calls."""
    cells: list[Cell] = []
    print(f"\ncalls: one server per database, 1 kernel; {args.calls} calls per cell, {args.warmup} warm-up")
    print(HEAD, flush=True)
    for name, url in urls.items():
        cells += await bench_anvil(1, call_args(args), workdir, label=name, options=(f"--AnvilApp.database_url={url}",))
    return cells


def by_database(cell: Cell) -> tuple[Any, ...]:
    """The table grouped by concurrency and target kind, the databases side by side."""
    database = next(d for d in sorted(DATABASES, key=len, reverse=True) if cell.target.startswith(d))
    kind = cell.target[len(database) :]
    return (cell.concurrency, _summary_order(Cell("anvil" + kind, 1, 1)), DATABASES.index(database))


def session_costs(cells: list[Cell]) -> list[dict[str, Any]]:
    """p50 of each session call minus the plain call's on the same server, and its calls/s."""
    plain = {(c.target, c.concurrency): c for c in cells if "-session-" not in c.target and c.calls}
    out = []
    for c in cells:
        family, found, _ = c.target.partition("-session-")
        base = plain.get((family, c.concurrency))
        if found and base is not None and c.calls:
            out.append(
                {
                    "target": c.target,
                    "concurrency": c.concurrency,
                    "p50_ms": c.p50_ms,
                    "p95_ms": c.p95_ms,
                    "p50_added_ms": c.p50_ms - base.p50_ms,
                    "calls_per_s": c.calls_per_s,
                }
            )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="store,calls", help="store, calls or both (default)")
    parser.add_argument("--ops", type=int, default=2000, help="store part: operations per cell (default 2000)")
    parser.add_argument("--threads", default="1", help="store part: store threads to try on PostgreSQL, e.g. 1,4")
    parser.add_argument("--calls", type=int, default=300, help="calls part: measured calls per cell (default 300)")
    parser.add_argument("--warmup", type=int, default=50, help="calls part: warm-up calls per cell (default 50)")
    parser.add_argument(
        "--concurrency", type=lambda t: [int(x) for x in t.split(",")], default=[1, 8], help="calls part: callers"
    )
    parser.add_argument("--json", help="also write the raw numbers here ('-': stdout)")
    args = parser.parse_args()
    parts = {p.strip() for p in args.part.split(",")}
    thread_counts = [int(t) for t in args.threads.split(",")]
    reason = missing_reason()
    bin_dir = find_bin_dir()
    if reason is not None or bin_dir is None:
        sys.exit(f"cannot run: {reason}")
    print(f"store benchmark on {platform.node()} ({git_commit()}), cpus {os.cpu_count()}")
    cells: list[dict[str, Any]] = []
    call_cells: list[Cell] = []
    cluster = PostgresCluster(bin_dir, durable=True)
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            if "store" in parts:
                print(f"\nstore: {args.ops} ops per cell")
                print(f"{'database':<18} {'thr':>3} {'C':>3} {'op':<7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
                cells += await bench_database("sqlite", f"sqlite:///{Path(folder) / 'anvil.db'}", args.ops, 1)
                for threads in thread_counts:
                    cells += await bench_database("postgresql", cluster.create_database(), args.ops, threads)
                    async_commit = cluster.create_database() + "?options=-csynchronous_commit%3Doff"
                    cells += await bench_database("postgresql-async", async_commit, args.ops, threads)
            if "calls" in parts:
                urls = {
                    "sqlite": f"sqlite:///{Path(folder) / 'calls.db'}",
                    "postgresql": cluster.create_database(),
                    "postgresql-async": cluster.create_database() + "?options=-csynchronous_commit%3Doff",
                }
                call_cells = await bench_calls(urls, args, Path(folder))
    finally:
        cluster.stop()
    costs = session_costs(call_cells)
    if call_cells:
        print("\ncalls, the databases side by side")
        print(HEAD)
        for cell in sorted(call_cells, key=by_database):
            print(row(cell))
        print("\nwhat a session adds to a plain call on the same server (p50 ms)")
        for cost in costs:
            print(
                f"  {cost['target']:<36} C={cost['concurrency']:<3} p50 {cost['p50_ms']:>7.2f}"
                f"  added {cost['p50_added_ms']:>+7.2f}  calls/s {cost['calls_per_s']:>6.0f}"
            )
    if args.json:
        result = {"commit": git_commit(), "ops": args.ops, "cells": cells}
        result.update(calls=[asdict(c) for c in call_cells], session_costs=costs)
        write_json(result, args.json)


if __name__ == "__main__":
    asyncio.run(main())
