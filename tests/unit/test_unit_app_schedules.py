"""The app manager tells the scheduler's side (its ``listener``) of every version it serves
and of apps it no longer serves, in order, even when a save overtakes a load while that
load's schedules are synced; the problems it is told are kept with the app.
Notebooks on a temporary root, pools of fake kernels, a real app log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from notebook_files import write_notebook

from jupyter_anvil.host.apps import AppDefaults, AppManager
from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.notebooks import AppSpec
from jupyter_anvil.host.pool import KernelPool, PoolLimits
from jupyter_anvil.host.store import Store

from .conftest import Starter


class Listener:
    """Records what it is told; ``hold`` keeps ``served`` waiting (a slow store)."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str, str]] = []  # (what, app, first line of the version's cell)
        self.hold: asyncio.Event | None = None
        self.problems: list[str] = []

    async def served(self, app: str, spec: AppSpec, pool: KernelPool) -> list[str]:
        self.told.append(("served", app, spec.cells[0]["source"].splitlines()[0]))
        if self.hold is not None:
            await self.hold.wait()
        return list(self.problems)

    def unserved(self, app: str) -> None:
        self.told.append(("unserved", app, ""))


@pytest.fixture
async def manager(tmp_path: Path, store: Store) -> AsyncIterator[tuple[AppManager, Listener]]:
    pools: list[KernelPool] = []

    def make_pool(spec: AppSpec, limits: PoolLimits, env: object = None) -> KernelPool:
        pool = KernelPool(spec.name, PoolLimits(min=1, max=1, task_spares=0), Starter(spec.name))
        pools.append(pool)
        return pool

    apps = AppManager(tmp_path, AppDefaults(), AppLog(store), make_pool)
    listener = Listener()
    apps.listener = listener
    yield apps, listener
    await apps.stop_all()
    for pool in pools:
        await pool.drain(0)


def version(root: Path, n: int) -> None:
    write_notebook(root / "app.ipynb", [f"# version {n}\nx = {n}"])


async def loaded(apps: AppManager) -> None:
    await asyncio.gather(*await apps.sync())


async def test_each_version_served_is_told_and_its_problems_shown(
    manager: tuple[AppManager, Listener], tmp_path: Path, settle: Callable[..., Any]
) -> None:
    apps, listener = manager
    listener.problems = ["schedule 'x' (job): 'every blue moon' is not a schedule"]
    version(tmp_path, 1)
    await loaded(apps)
    app = apps.apps["app"]
    assert app.status == "ready" and listener.told == [("served", "app", "# version 1")]
    assert app.schedule_problems == ["schedule 'x' (job): 'every blue moon' is not a schedule"]
    assert app.describe_error() is None  # the app is well: only that schedule cannot run
    await apps.app_log.flush()
    texts = [r["text"] for r in await apps.app_log.read("app")]
    assert "schedules: schedule 'x' (job): 'every blue moon' is not a schedule" in texts
    listener.problems = []
    version(tmp_path, 2)
    await loaded(apps)
    assert listener.told[-1] == ("served", "app", "# version 2") and app.schedule_problems == []
    (tmp_path / "app.ipynb").unlink()
    await loaded(apps)
    assert listener.told[-1] == ("unserved", "app", "")


async def test_a_save_that_overtakes_a_sync_leaves_the_newer_version_told_last(
    manager: tuple[AppManager, Listener], tmp_path: Path, settle: Callable[..., Any]
) -> None:
    apps, listener = manager
    version(tmp_path, 1)
    await loaded(apps)
    listener.hold = asyncio.Event()
    version(tmp_path, 2)
    second = await apps.sync()
    await settle(lambda: listener.told[-1] == ("served", "app", "# version 2"))  # held in its sync
    version(tmp_path, 3)
    third = await apps.sync()
    await asyncio.sleep(0.05)
    listener.hold.set()
    await asyncio.gather(*second, *third)
    # version 2 was overtaken mid-sync: version 1 (still served) was told again, then version 3
    assert listener.told[1:] == [
        ("served", "app", "# version 2"),
        ("served", "app", "# version 1"),
        ("served", "app", "# version 3"),
    ]
    assert apps.apps["app"].spec is not None and apps.apps["app"].spec.cells[0]["source"].startswith("# version 3")


async def test_a_first_load_overtaken_mid_sync_is_not_left_served(
    manager: tuple[AppManager, Listener], tmp_path: Path, settle: Callable[..., Any]
) -> None:
    apps, listener = manager
    listener.hold = asyncio.Event()
    version(tmp_path, 1)
    first = await apps.sync()
    await settle(lambda: bool(listener.told))
    (tmp_path / "app.ipynb").unlink()  # removed while its first version's schedules were synced
    await asyncio.gather(*await apps.sync())
    listener.hold.set()
    await asyncio.gather(*first)
    assert listener.told[0] == ("served", "app", "# version 1") and listener.told[-1] == ("unserved", "app", "")
    assert "app" not in apps.apps


async def test_a_listener_that_raises_is_a_problem_not_a_failed_load(
    manager: tuple[AppManager, Listener], tmp_path: Path
) -> None:
    apps, listener = manager

    async def broken(app: str, spec: AppSpec, pool: KernelPool) -> list[str]:
        raise RuntimeError("store down")

    listener.served = broken  # type: ignore[method-assign]
    version(tmp_path, 1)
    await loaded(apps)
    app = apps.apps["app"]
    assert app.status == "ready" and app.schedule_problems == ["RuntimeError: store down"]
