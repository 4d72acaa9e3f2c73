"""Environments per app: what a first build costs, and what a cached one adds to a kernel start.

Run by hand, not by CI:

    python bench/envs.py                  # about a minute
    python bench/envs.py --repeat 5 --json envs.json

For each installer (uv, pip) and each app size (1 and 5 small requirements: wheels made
here, installed with ``--no-index --find-links``, so nothing is downloaded):

* ``first build``: ``EnvService.ensure`` on an empty cache (venv, install, the layering
  ``.pth``, the smoke check), in seconds;
* ``cached ensure``: a new ``EnvService`` over the same folder, ``start`` + ``ensure``
  (what a server restart pays per app: no installer runs, which is checked);
* ``kernel start``: a real ipykernel started with the env's kernel spec until it answers
  ``kernel_info``, against the same with the server's own ``python3`` spec (p50 of
  ``--repeat`` starts each): the difference is what a cached env adds to a kernel start.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, git_commit, write_json
from jupyter_client.manager import AsyncKernelManager

sys.path.insert(0, str(REPO_ROOT / "tests"))
from wheels import make_wheel

from jupyter_anvil.host.envs.request import EnvRequest
from jupyter_anvil.host.envs.service import EnvService


async def kernel_start(kernel_name: str, specs: Any | None) -> float:
    options: dict[str, Any] = {"kernel_name": kernel_name}
    if specs is not None:
        options["kernel_spec_manager"] = specs
    manager = AsyncKernelManager(**options)
    t0 = time.perf_counter()
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        return time.perf_counter() - t0
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


async def measure(installer: str, size: int, wheels: Path, repeat: int) -> dict[str, Any]:
    requirements = tuple(f"bench-pkg-{i}==1.0" for i in range(size))
    args = ["--no-index", "--find-links", str(wheels)]
    with tempfile.TemporaryDirectory() as root:
        service = EnvService(Path(root), installer=installer, installer_args=args)
        await service.start()
        t0 = time.perf_counter()
        env = await service.ensure(EnvRequest(requirements), "bench")
        first = time.perf_counter() - t0
        await service.stop()
        again = EnvService(Path(root), installer=installer, installer_args=args)
        t0 = time.perf_counter()
        await again.start()
        await again.ensure(EnvRequest(requirements), "bench")
        cached = time.perf_counter() - t0
        assert again.installer_runs == 0, "a cached env ran the installer"
        in_env = [await kernel_start(env.kernel_name, again.kernel_specs) for _ in range(repeat)]
        plain = [await kernel_start("python3", None) for _ in range(repeat)]
        await again.stop()
    return {
        "installer": installer,
        "requirements": size,
        "first_build_s": first,
        "cached_ensure_ms": cached * 1000,
        "kernel_start_env_s": statistics.median(in_env),
        "kernel_start_default_s": statistics.median(plain),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="kernel starts timed per row (p50 reported)")
    parser.add_argument("--installers", default="uv,pip")
    parser.add_argument("--json", help="also write the raw numbers to this file ('-': stdout)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        wheels = Path(folder)
        for i in range(5):
            make_wheel(wheels, f"bench-pkg-{i}", "1.0")
        for installer in args.installers.split(","):
            for size in (1, 5):
                rows.append(asyncio.run(measure(installer, size, wheels, args.repeat)))
    print("## envs: first build, cached ensure, kernel start in the env vs the default kernel (p50)")
    for r in rows:
        print(
            f"  {r['installer']:<4} {r['requirements']} req  first build {r['first_build_s']:6.2f} s"
            f"   cached ensure {r['cached_ensure_ms']:6.1f} ms"
            f"   kernel start {r['kernel_start_env_s']:5.2f} s vs {r['kernel_start_default_s']:5.2f} s"
            f" ({r['kernel_start_env_s'] - r['kernel_start_default_s']:+.2f} s)"
        )
    if args.json:
        write_json({"commit": git_commit(), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
