"""Gateway benchmark: app calls with kernels on Jupyter Enterprise Gateway against local kernels.

Run by hand, not by CI (needs Enterprise Gateway's own venv, made on first use as the tests
make it: tests/eg_gateway.py):

    python bench/gateway.py                              # about 1 minute
    python bench/gateway.py --calls 300 --warmup 50      # a quicker run
    python bench/gateway.py --kernels 2 --json out.json

One run, one machine, one client, the same app (``add(a, b)``, bench/calls.py's) on two
``python -m jupyter_anvil`` servers started one after the other:

* ``local``: the app's kernels are local ipykernels (ZeroMQ over IPC, the default);
* ``gateway``: ``--GatewayClient.url=`` a real Enterprise Gateway on loopback (started by this
  run, beside the servers, with its local process proxy and a kernel spec that runs this
  Python): every call goes server -> WebSocket -> gateway -> ZeroMQ -> kernel and back.

For each, over HTTP (``POST …/_/call/add``) and the WebSocket (``CALL``), at C=1 (sequential:
one caller, each call awaited) and C=N concurrent callers: p50/p95/p99 latency and calls/s.
Then the ratio gateway / local of each. The gateway's own CPU is counted with the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from calls import bench_anvil, find
from harness import DEFAULT_CALLS, HEAD, REPO_ROOT, Cell, fmt, git_commit, row, write_json

sys.path.insert(0, str(REPO_ROOT / "tests"))

from eg_gateway import KERNEL_NAME, VENV, Gateway, GatewayUnavailable, find_or_make_program  # the tests' gateway

SIDES = ("local", "gateway")
TRANSPORTS = ("http", "ws")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return sorted({int(x) for x in text.split(",") if x.strip()})

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=None, help="measured calls per cell (default: 500 at C=1, 2000 at C=8)")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured calls before each cell (default 100)")
    p.add_argument("--kernels", type=int, default=1, help="kernels of the app, on both sides (default 1)")
    p.add_argument("--concurrency", type=ints, default=[1, 8], help="concurrent callers, e.g. 1,8 (default)")
    p.add_argument("--cell-budget", type=float, default=120.0, help="seconds a cell may take (default 120)")
    p.add_argument("--http-client", choices=("aiohttp", "httpx"), default="aiohttp")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON to PATH ('-': stdout)")
    p.add_argument("--raw", action="store_true", help="include every latency in the JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    # what bench_anvil reads besides: plain calls only, one WebSocket per caller, a trivial add
    args.targets = {"anvil"}
    args.ws_mux = False
    args.work_ms = 0.0
    args.anvil_option = []
    return args


def ratios(cells: list[Cell], args: argparse.Namespace) -> list[dict[str, object]]:
    """gateway / local, for each transport and concurrency: latencies and calls/s."""
    out: list[dict[str, object]] = []
    for transport in TRANSPORTS:
        for c in args.concurrency:
            local = find(cells, f"local-{transport}", args.kernels, c)
            gateway = find(cells, f"gateway-{transport}", args.kernels, c)
            if local is None or gateway is None:
                continue
            out.append(
                {
                    "transport": transport,
                    "concurrency": c,
                    **{
                        f"{q}_ratio": getattr(gateway, f"{q}_ms") / getattr(local, f"{q}_ms")
                        for q in ("p50", "p95", "p99")
                    },
                    "calls_per_s_ratio": gateway.calls_per_s / local.calls_per_s,
                    "p50_added_ms": gateway.p50_ms - local.p50_ms,
                }
            )
    return out


async def run(args: argparse.Namespace, gateway: Gateway, workdir: Path) -> list[Cell]:
    cells: list[Cell] = []
    cells += await bench_anvil(args.kernels, args, workdir, label="local")
    assert gateway.process is not None
    options = (f"--GatewayClient.url={gateway.url}", f"--AnvilApp.kernel_name={KERNEL_NAME}")
    cells += await bench_anvil(
        args.kernels, args, workdir, label="gateway", options=options, companions=frozenset({gateway.process.pid})
    )
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"gateway benchmark on {platform.node()} ({git_commit()}), started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"  add(1, 2) on {args.kernels} kernel(s): local kernels, then kernels on Enterprise Gateway ({VENV})")
    print(f"  calls per cell: {args.calls or DEFAULT_CALLS}; warm-up: {args.warmup}; cpus {os.cpu_count()}")
    print("  CPU ms per call: server = jupyter-anvil (+ the gateway process on the gateway side)")
    # the gateway's kernels run this Python: they need this tree's jupyter_anvil first on their path
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="anvil-bench-gw-") as tmp:
        workdir = Path(tmp)
        try:
            find_or_make_program()
        except GatewayUnavailable as e:
            print(f"cannot run: {e}", file=sys.stderr)
            return 2
        gateway = Gateway(workdir / "eg")
        gateway.start()
        print(f"  Enterprise Gateway on {gateway.url}\n")
        print(HEAD, flush=True)
        try:
            cells = asyncio.run(run(args, gateway, workdir))
        finally:
            gateway.stop()
    print("\nsummary")
    print(HEAD)
    for cell in cells:
        print(row(cell))
    rs = ratios(cells, args)
    print("\ngateway / local (latency ratios > 1: slower through the gateway; calls/s ratio < 1: fewer)")
    print(f"  {'transport':<10}{'C':>3}{'p50':>8}{'p95':>8}{'p99':>8}{'calls/s':>9}{'p50 added ms':>14}")
    for r in rs:
        print(
            f"  {r['transport']:<10}{r['concurrency']:>3}{fmt(r['p50_ratio']):>8}{fmt(r['p95_ratio']):>8}"
            f"{fmt(r['p99_ratio']):>8}{fmt(r['calls_per_s_ratio']):>9}{fmt(r['p50_added_ms']):>14}"
        )
    if args.json:
        write_json({"commit": git_commit(), "cells": [asdict(c) for c in cells], "ratios": rs}, args.json)
    return 1 if any(c.errors for c in cells) or len(rs) < len(TRANSPORTS) * len(args.concurrency) else 0


if __name__ == "__main__":
    sys.exit(main())
