"""The real-server part of bench/schedules.py: how late scheduled runs fire.

A ``python -m jupyter_anvil`` server serves one app whose background task ``tick`` returns
at once. ``schedules`` schedules firing every second are made through the admin API
(``POST anvil/api/schedules``), left to fire for ``seconds``, then paused; each one's runs
(``GET anvil/api/schedules/<id>/runs``) and its launched tasks (``GET anvil/api/tasks/<id>``)
are read back. For every run, ``launch`` is the run's ``at`` (when the scheduler launched
or skipped it) minus its ``due`` time; for every launched run, ``started`` is the task
record's ``started`` (it took a task kernel) minus ``due``. Both are stamped by the server.

Each background task runs on a fresh kernel of its own (a warm spare when one is ready),
so ``started`` is bounded by how fast the machine starts kernels, not by the scheduler:
with more schedules than spares, a run whose previous task still waits for a kernel is
skipped (never doubled), and the counts of each outcome are reported beside the times.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from harness import HOST, ServerProcess, free_port, wait_until, write_app_notebook

APP = "sched_bench"
CELL = """\
import time
from jupyter_anvil import server

@server.background_task
def tick():
    return time.time()
"""


def write_notebook(folder: Path) -> None:
    write_app_notebook(folder, APP, CELL)


async def _lateness(schedules: int, seconds: float, folder: Path) -> dict[str, Any]:
    port, token = free_port(), secrets.token_hex(16)
    base, auth = f"http://{HOST}:{port}", {"Authorization": f"token {token}"}
    server = ServerProcess(
        "jupyter-anvil",
        [
            sys.executable, "-m", "jupyter_anvil", str(folder), f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
            "--AnvilApp.task_spares=2",
        ],
        folder,
        folder / "anvil.log",
    )  # fmt: skip

    async def ready(s: aiohttp.ClientSession) -> bool:
        async with s.get(f"{base}/anvil/api/apps", headers=auth) as r:
            listing = await r.json() if r.status == 200 else {}
        return any(a.get("name") == APP and a.get("status") == "ready" for a in listing.get("apps", []))

    server.start()
    try:
        await wait_until(server, ready)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), trust_env=False) as s:
            ids = []
            for i in range(schedules):
                body = {"app": APP, "task": "tick", "spec": "every second", "name": f"s{i}", "misfire": "skip"}
                async with s.post(f"{base}/anvil/api/schedules", json=body, headers=auth) as r:
                    if r.status >= 300:
                        raise SystemExit(f"could not make a schedule: {r.status} {await r.text()}")
                    ids.append((await r.json())["id"])
            await asyncio.sleep(seconds)
            for sid in ids:
                async with s.patch(f"{base}/anvil/api/schedules/{sid}", json={"paused": True}, headers=auth) as r:
                    r.raise_for_status()
            await asyncio.sleep(5)  # the last tasks take their kernels
            launch: list[float] = []
            started: list[float] = []
            outcomes: dict[str, int] = {}
            for sid in ids:
                async with s.get(f"{base}/anvil/api/schedules/{sid}/runs?limit=1000", headers=auth) as r:
                    runs = (await r.json())["runs"]
                for run in runs:
                    outcomes[run["outcome"]] = outcomes.get(run["outcome"], 0) + 1
                    launch.append(run["at"] - run["due"])
                    if run["outcome"] == "launched" and run["task_id"]:
                        async with s.get(f"{base}/anvil/api/tasks/{run['task_id']}", headers=auth) as r:
                            task = await r.json()
                        if task.get("started"):
                            started.append(task["started"] - run["due"])
            return {"launch": launch, "started": started, "outcomes": outcomes, "schedules": schedules}
    finally:
        server.stop()


def run_lateness(schedules: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        write_notebook(path)
        result = asyncio.run(_lateness(schedules, seconds, path))
    print(f"## lateness: {schedules} schedules every second for {seconds:.0f} s; runs by outcome {result['outcomes']}")
    return result
