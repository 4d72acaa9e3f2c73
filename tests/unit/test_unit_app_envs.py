"""The app manager builds an app's environment before loading it: ``building`` while it
builds, the env handed to the pool factory, a failed build an error (the previous version
serving on), ``use`` told of the env served. Notebooks on a temporary root, pools of fake
kernels, a stand-in environment service (the real one: tests/test_envs.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from notebook_files import write_notebook

from jupyter_anvil.host.apps import AppDefaults, AppManager
from jupyter_anvil.host.envs.request import EnvRequest
from jupyter_anvil.host.envs.service import EnvBuildFailed, EnvInfo
from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.notebooks import AppSpec
from jupyter_anvil.host.pool import KernelPool, PoolLimits
from jupyter_anvil.host.store import Store

from .conftest import Starter


class StandInEnvs:
    """Builds nothing: each request's build waits for ``release`` and fails if it asks for
    a requirement named in ``bad``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.bad: set[str] = set()
        self.building: dict[str, EnvInfo] = {}
        self.used: list[tuple[str, str | None]] = []

    def env_id(self, request: EnvRequest) -> str:
        return f"{abs(hash(request)) % 10**16:016d}"

    def _info(self, request: EnvRequest, status: str) -> EnvInfo:
        env_id = self.env_id(request)
        return EnvInfo(
            env_id, request.requirements, request.python, status, None, None, None, None, [], f"anvil-env-{env_id}"
        )  # type: ignore[arg-type]

    async def ensure(self, request: EnvRequest, app: str) -> EnvInfo:
        info = self._info(request, "building")
        self.building[info.id] = info
        await self.release.wait()
        del self.building[info.id]
        if self.bad & set(request.requirements):
            raise EnvBuildFailed(f"No solution found when resolving dependencies: {sorted(self.bad)[0]} was not found")
        return self._info(request, "ready")

    def use(self, app: str, env_id: str | None) -> None:
        self.used.append((app, env_id))

    def get(self, env_id: str) -> EnvInfo | None:
        return self.building.get(env_id)


@pytest.fixture
async def manager(tmp_path: Path, store: Store) -> AsyncIterator[tuple[AppManager, StandInEnvs, list[EnvInfo | None]]]:
    pools: list[KernelPool] = []
    envs_given: list[EnvInfo | None] = []

    def make_pool(spec: AppSpec, limits: PoolLimits, env: EnvInfo | None) -> KernelPool:
        envs_given.append(env)
        pool = KernelPool(spec.name, PoolLimits(min=1, max=1, task_spares=0), Starter(spec.name))
        pools.append(pool)
        return pool

    envs = StandInEnvs()
    apps = AppManager(tmp_path, AppDefaults(), AppLog(store), make_pool, envs)
    yield apps, envs, envs_given
    await apps.stop_all()
    for pool in pools:
        await pool.drain(0)


def notebook(root: Path, requirements: list[str] | None) -> None:
    metadata = {"requirements": requirements} if requirements is not None else {}
    write_notebook(root / "app.ipynb", ["x = 1"], metadata)


async def test_building_then_ready_with_the_env_given_to_the_pool(manager, tmp_path: Path) -> None:
    apps, envs, given = manager
    notebook(tmp_path, ["tinypkg==1.0"])
    loads = await apps.sync()
    await asyncio.sleep(0.05)
    app = apps.apps["app"]
    assert app.status == "building"
    shown = app.to_json()["env"]
    assert shown is not None and shown["status"] == "building" and shown["id"] is not None
    envs.release.set()
    await asyncio.gather(*loads)
    assert app.status == "ready" and given[-1] is not None and given[-1].requirements == ("tinypkg==1.0",)
    assert envs.used[-1] == ("app", given[-1].id)
    assert app.to_json()["requirements"] == ["tinypkg==1.0"] and app.to_json()["requirements_source"] == "metadata"


async def test_no_requirements_no_env(manager, tmp_path: Path) -> None:
    apps, _envs, given = manager
    notebook(tmp_path, None)
    await asyncio.gather(*await apps.sync())
    assert apps.apps["app"].status == "ready" and given == [None] and apps.apps["app"].to_json()["env"] is None


async def test_a_failed_first_build_is_an_error_with_the_installer_message(manager, tmp_path: Path) -> None:
    apps, envs, given = manager
    envs.bad = {"nosuchpkg"}
    envs.release.set()
    notebook(tmp_path, ["nosuchpkg"])
    await asyncio.gather(*await apps.sync())
    app = apps.apps["app"]
    assert app.status == "error" and given == []
    assert "nosuchpkg was not found" in (app.error or "")
    shown = app.to_json()["env"]
    assert shown is not None and shown["status"] == "failed"  # its id: the build's log


async def test_a_failed_rebuild_leaves_the_previous_version_serving(manager, tmp_path: Path) -> None:
    apps, envs, _given = manager
    envs.bad = {"nosuchpkg"}
    envs.release.set()
    notebook(tmp_path, ["tinypkg==1.0"])
    await asyncio.gather(*await apps.sync())
    app = apps.apps["app"]
    served = app.pool
    notebook(tmp_path, ["tinypkg==1.0", "nosuchpkg"])
    await asyncio.gather(*await apps.sync())
    assert app.status == "ready" and app.pool is served
    assert "still serving the previous version" in (app.error or "") and "nosuchpkg was not found" in (app.error or "")
    assert app.spec is not None and app.spec.requirements == ("tinypkg==1.0",)


async def test_a_changed_request_switches_only_once_built(manager, tmp_path: Path) -> None:
    apps, envs, given = manager
    envs.release.set()
    notebook(tmp_path, ["tinypkg==1.0"])
    await asyncio.gather(*await apps.sync())
    app = apps.apps["app"]
    served = app.pool
    envs.release.clear()
    notebook(tmp_path, ["tinypkg==2.0"])
    loads = await apps.sync()
    await asyncio.sleep(0.05)
    assert app.status == "ready" and app.pool is served  # the old version serves while the new env builds
    shown = app.to_json()["env"]
    assert shown is not None and shown["status"] == "building"
    envs.release.set()
    await asyncio.gather(*loads)
    assert app.pool is not served and given[-1] is not None and given[-1].requirements == ("tinypkg==2.0",)


async def test_removing_the_app_stops_its_env_use(manager, tmp_path: Path) -> None:
    apps, envs, _given = manager
    envs.release.set()
    notebook(tmp_path, ["tinypkg==1.0"])
    await asyncio.gather(*await apps.sync())
    (tmp_path / "app.ipynb").unlink()
    await asyncio.gather(*await apps.sync())
    assert envs.used[-1] == ("app", None)


async def test_without_env_support_an_app_with_requirements_fails_clearly(tmp_path: Path, store: Store) -> None:
    def make_pool(spec: AppSpec, limits: PoolLimits, env: EnvInfo | None) -> KernelPool:
        raise AssertionError("no pool without its environment")

    apps = AppManager(tmp_path, AppDefaults(), AppLog(store), make_pool)
    notebook(tmp_path, ["tinypkg"])
    await asyncio.gather(*await apps.sync())
    assert apps.apps["app"].status == "error" and "no support" in (apps.apps["app"].error or "")
    await apps.stop_all()
