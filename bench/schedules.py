"""Scheduler benchmark: what 10,000 schedules cost the server, and how late runs fire.

Run by hand, not by CI:

    python bench/schedules.py                    # both parts, about 2 minutes
    python bench/schedules.py --part overhead    # the scheduler alone, about 40 s
    python bench/schedules.py --part lateness --schedules 100 --seconds 20
    python bench/schedules.py --json results.json

``overhead``: the scheduler alone, in this process, on a SQLite store in a temporary
folder, with the real spec parser and a launcher that only counts (no kernels: the
cost measured is the scheduler's own). 10,000 schedules across 100 apps, a mix of
phrases, cron lines and Anvil ``time_spec`` dicts in several zones, none due during
the run. It reports:

* the first load (every app's ``sync_app``: parse, next runs, inserts);
* a restart: a new scheduler over the same file (parse again, next runs, nothing to
  write), the "time to compute next runs at start-up";
* the memory the scheduler holds for them (RSS before and after, and the Python
  allocations of one more scheduler loading them, from ``tracemalloc``);
* CPU per second while idle (the loop sleeping until the next due run, re-reading the
  store every ``refresh_seconds``), over ``--idle`` seconds.

``lateness``: a real ``python -m jupyter_anvil`` server with one app whose background
task notes nothing but returns; ``--schedules`` schedules firing every second, made
through the admin API. For each run the lateness is the task record's ``started``
(the task took a kernel) minus the run's ``due`` time, both stamped by the server;
and separately the run row's ``at`` (the launch) minus ``due``. p50/p99/max of both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from harness import git_commit, percentile, write_json

from jupyter_anvil.host.schedules.records import ScheduleDefinition, definition_id
from jupyter_anvil.host.schedules.service import Scheduler
from jupyter_anvil.host.store import Store

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
SPECS: list[Any] = [
    "every day at 03:15",
    "every monday at 08:30",
    "every 2 weeks on friday at 17:00",
    "every month on day 1 at 06:00",
    "every hour at :15",
    "0 9 * * mon-fri",
    "30 2 * * *",
    "*/30 * * * *",
    {"every": "day", "n": 1, "at": {"hour": 3, "minute": 0}},
    {"every": "week", "n": 1, "at": {"day": 2, "hour": 10, "minute": 0}},
]


class CountingLauncher:
    """Launches nothing: the overhead part measures the scheduler alone."""

    def __init__(self) -> None:
        self.launched = 0

    async def launch(self, app: str, task: str, args: list[Any], kwargs: dict[str, Any], schedule_id: str) -> str:
        self.launched += 1
        return f"t{self.launched}"

    async def is_running(self, task_id: str) -> bool:
        return False


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def definitions(apps: int, per_app: int) -> dict[str, list[ScheduleDefinition]]:
    out: dict[str, list[ScheduleDefinition]] = {}
    for a in range(apps):
        app = f"app{a:03d}"
        out[app] = [
            ScheduleDefinition(
                id=definition_id(app, "notebook", f"s{i}"),
                app=app,
                task="job",
                name=f"s{i}",
                spec=SPECS[(a + i) % len(SPECS)],
                tz="UTC" if isinstance(SPECS[(a + i) % len(SPECS)], dict) else ZONES[i % len(ZONES)],
            )
            for i in range(per_app)
        ]
    return out


async def load(scheduler: Scheduler, declared: dict[str, list[ScheduleDefinition]]) -> float:
    began = time.perf_counter()
    for app, defs in declared.items():
        problems: list[str] = []
        await scheduler.sync_app(app, defs, problems, background_tasks={"job"})
        if problems:
            raise SystemExit(f"unexpected problems in {app}: {problems[:3]}")
    return time.perf_counter() - began


async def overhead(args: argparse.Namespace) -> dict[str, Any]:
    declared = definitions(args.apps, args.schedules_per_app)
    total = sum(len(d) for d in declared.values())
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'anvil.db'}"
        store = Store(url)
        store.create_schema()
        rss_before = rss_mib()
        first = Scheduler(store, CountingLauncher(), history_limit=100)
        first_load = await load(first, declared)
        await first.stop()
        store.close()

        # a restart: a new store connection and scheduler over the same file
        store = Store(url)
        store.create_schema()
        launcher = CountingLauncher()
        scheduler = Scheduler(store, launcher, history_limit=100)
        restart_load = await load(scheduler, declared)
        rss_after = rss_mib()

        # what the scheduler's Python objects take, from a third one over the same store
        # (tracemalloc slows Python several times over: not while timing)
        tracemalloc.start()
        traced_scheduler = Scheduler(store, CountingLauncher(), history_limit=100)
        await load(traced_scheduler, declared)
        traced, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del traced_scheduler

        scheduler.start()
        await asyncio.sleep(1.0)  # the start-up pass (misfire check) before measuring idle
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(args.idle)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        await scheduler.stop()
        store.close()
    return {
        "schedules": total,
        "apps": args.apps,
        "first_load_s": first_load,
        "restart_load_s": restart_load,
        "per_schedule_restart_us": restart_load / total * 1e6,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_after,
        "python_allocations_mib": traced / 2**20,
        "idle_cpu_ms_per_s": cpu / wall * 1000,
        "idle_seconds": wall,
        "launched_while_idle": launcher.launched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["overhead", "lateness", "all"], default="all")
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--schedules-per-app", type=int, default=100)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement")
    parser.add_argument("--schedules", type=int, default=100, help="lateness: schedules firing every second")
    parser.add_argument("--seconds", type=float, default=30.0, help="lateness: how long they fire")
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "commit": git_commit(),
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    if args.part in ("overhead", "all"):
        o = asyncio.run(overhead(args))
        result["overhead"] = o
        print(f"## scheduler overhead: {o['schedules']} schedules across {o['apps']} apps (no kernels)")
        print(f"first load (parse, next runs, inserts)  {o['first_load_s']:.2f} s")
        print(f"restart (parse, next runs, no writes)   {o['restart_load_s']:.2f} s "
              f"({o['per_schedule_restart_us']:.0f} µs per schedule)")  # fmt: skip
        print(f"RSS                                     {o['rss_before_mib']:.0f} -> {o['rss_after_mib']:.0f} MiB")
        print(f"Python allocations of one scheduler     {o['python_allocations_mib']:.1f} MiB")
        print(f"idle CPU                                {o['idle_cpu_ms_per_s']:.2f} ms per second "
              f"(over {o['idle_seconds']:.0f} s; {o['launched_while_idle']} launches)")  # fmt: skip
    if args.part in ("lateness", "all"):
        from lateness import run_lateness  # the real-server part, beside this file

        lateness = run_lateness(args.schedules, args.seconds)
        result["lateness"] = lateness
        for what in ("launch", "started"):
            values = sorted(lateness[what])
            if values:
                print(f"{what} - due over {len(values)} runs: p50 {percentile(values, 0.5) * 1000:.0f} ms, "
                      f"p99 {percentile(values, 0.99) * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms")  # fmt: skip
    if args.json:
        write_json(result, args.json)
    print(json.dumps({"commit": result["commit"]}))


if __name__ == "__main__":
    main()
