"""The environment cache on disk, and EnvService's bookkeeping over it, with environments
written by hand (no installer runs here: tests/test_env_builder.py builds real ones)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_client.kernelspec import NoSuchKernel

from jupyter_anvil.host.envs.cache import EnvCache, env_id, folder_size, id_material, is_env_id
from jupyter_anvil.host.envs.request import EnvRequest
from jupyter_anvil.host.envs.service import EnvService

DAY = 86400.0


#: every EnvService a test starts is stopped after it (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("stop_env_services")


def fake_ready_env(root: Path, request: EnvRequest, args: tuple[str, ...] = (), last_used: float | None = None) -> str:
    """A folder that looks like a finished build (its python is the server's own)."""
    eid = env_id(request, args)
    cache = EnvCache(root)
    building = cache.new_building_folder(eid)
    bin_dir = building / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    cache.write_request(building, id_material(request, args))
    (building / "build.log").write_text("built by hand\n")
    published = cache.publish(building, eid)
    assert published is not None
    if last_used is not None:
        (published.folder / "last_used").touch()
        os.utime(published.folder / "last_used", (last_used, last_used))
    return eid


def test_id_is_stable_and_depends_on_what_was_asked() -> None:
    one = EnvRequest(("a==1", "b"))
    assert env_id(one, ()) == env_id(EnvRequest(("a==1", "b", "a==1")), ())
    assert is_env_id(env_id(one, ()))
    others = {
        env_id(EnvRequest(("b", "a==1")), ()),  # order is kept: installers may resolve differently
        env_id(EnvRequest(("a==2", "b")), ()),
        env_id(one, ("--no-index",)),
        env_id(EnvRequest(("a==1", "b"), python="3.99"), ()),
    }
    assert env_id(one, ()) not in others and len(others) == 4
    material = id_material(one, ())
    assert material["server_python"] == list(sys.version_info[:2]) and material["platform"] == sys.platform
    assert any(pin.startswith("ipykernel==") for pin in material["kernel_pins"])


def test_publish_writes_ready_last_and_reads_back(tmp_path: Path) -> None:
    eid = fake_ready_env(tmp_path, EnvRequest(("a",)))
    ready = EnvCache(tmp_path).read(eid)
    assert ready is not None and ready.requirements == ("a",) and ready.python is None
    assert ready.size_bytes is not None and ready.created is not None and ready.last_used is None
    assert [p.name for p in tmp_path.iterdir()] == [eid]
    assert not (tmp_path / eid / "ready.tmp").exists()


def test_a_folder_without_ready_is_not_an_env(tmp_path: Path) -> None:
    eid = env_id(EnvRequest(("a",)), ())
    (tmp_path / eid / "venv").mkdir(parents=True)
    (tmp_path / eid / "request.json").write_text("{}")
    assert EnvCache(tmp_path).read(eid) is None and EnvCache(tmp_path).ready_envs() == []
    (tmp_path / eid / "ready").write_text("not json")
    assert EnvCache(tmp_path).read(eid) is None


def test_publish_over_another_servers_copy_keeps_theirs(tmp_path: Path) -> None:
    request = EnvRequest(("a",))
    eid = fake_ready_env(tmp_path, request)
    theirs = (tmp_path / eid / "ready").read_text()
    cache = EnvCache(tmp_path)
    ours = cache.new_building_folder(eid)
    cache.write_request(ours, id_material(request, ()))
    assert cache.publish(ours, eid) is not None
    assert (tmp_path / eid / "ready").read_text() == theirs
    assert [p.name for p in tmp_path.iterdir()] == [eid]


def test_leftovers_of_gone_processes_removed_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{'a' * 16}.building-{gone.pid}-1234abcd"
    dead.mkdir()
    (dead / "ready").write_text("{}")
    half_removed = tmp_path / f"{'b' * 16}.removing-{gone.pid}-1234abcd"
    half_removed.mkdir()
    alive = tmp_path / f"{'c' * 16}.building-{os.getppid()}-1234abcd"  # another server, still running
    alive.mkdir()
    removed = EnvCache(tmp_path).remove_leftovers()
    assert sorted(removed) == sorted([dead.name, half_removed.name])
    assert [p.name for p in tmp_path.iterdir()] == [alive.name]


def test_folder_size_counts_hard_links_once_and_skips_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "c").symlink_to(tmp_path / "a")
    assert folder_size(tmp_path) == 1000


async def test_service_finds_envs_and_serves_their_kernel_specs(tmp_path: Path) -> None:
    eid = fake_ready_env(tmp_path, EnvRequest(("a",)))
    envs = EnvService(tmp_path)
    await envs.start()
    assert [(e.id, e.status, e.kernel_name) for e in envs.list()] == [(eid, "ready", f"anvil-env-{eid}")]
    spec = envs.kernel_specs.get_kernel_spec(f"anvil-env-{eid}")
    assert spec.argv == [
        str(tmp_path / eid / "venv" / "bin" / "python"),
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    assert spec.language == "python"
    # starting a kernel is a use
    assert envs.get(eid) is not None and envs.get(eid).last_used is not None  # type: ignore[union-attr]
    assert (tmp_path / eid / "last_used").exists()
    with pytest.raises(NoSuchKernel):
        envs.kernel_specs.get_kernel_spec("anvil-env-0000000000000000")
    with pytest.raises(NoSuchKernel):
        envs.kernel_specs.get_kernel_spec("no-such-kernel-here")
    # other names are the normal lookup
    assert envs.kernel_specs.get_kernel_spec("python3").language == "python"
    assert envs.get("0000000000000000") is None and envs.log("../../etc/passwd") is None
    assert envs.log(eid) == ("built by hand\n", len("built by hand\n"))
    assert envs.log(eid, 6) == ("by hand\n", len("built by hand\n"))


async def test_cached_ensure_runs_no_installer_and_is_fast(tmp_path: Path) -> None:
    request = EnvRequest(("a",))
    eid = fake_ready_env(tmp_path, request)
    envs = EnvService(tmp_path, installer="pip")
    await envs.start()
    started = time.monotonic()
    info = await envs.ensure(request, "app")
    assert time.monotonic() - started < 0.5
    assert info.id == eid and envs.installer_runs == 0


async def test_ensure_finds_an_env_another_server_built_meanwhile(tmp_path: Path) -> None:
    envs = EnvService(tmp_path)
    await envs.start()
    request = EnvRequest(("a",))
    eid = fake_ready_env(tmp_path, request)
    events: list[dict[str, object]] = []
    envs._on_event = events.append
    info = await envs.ensure(request, "app")
    assert info.id == eid and envs.installer_runs == 0
    assert events and events[0]["type"] == "env"


async def test_ensure_refuses_an_empty_request(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default kernel"):
        await EnvService(tmp_path).ensure(EnvRequest(()), "app")


async def test_use_and_prune(tmp_path: Path) -> None:
    now = time.time()
    old_unused = fake_ready_env(tmp_path, EnvRequest(("a",)), last_used=now - 20 * DAY)
    old_used = fake_ready_env(tmp_path, EnvRequest(("b",)), last_used=now - 20 * DAY)
    recent = fake_ready_env(tmp_path, EnvRequest(("c",)), last_used=now - 1 * DAY)
    events: list[dict[str, object]] = []
    envs = EnvService(tmp_path, keep_days=14, on_event=events.append)
    await envs.start()
    envs.use("app1", old_used)
    # use() touched it, and it is in use
    assert envs.get(old_used).apps == ["app1"]  # type: ignore[union-attr]
    assert events[-1] == {"type": "env", "env": envs.get(old_used).to_json()}  # type: ignore[union-attr]
    os.utime(tmp_path / old_used / "last_used", (now - 20 * DAY, now - 20 * DAY))
    assert await envs.prune() == 1
    assert sorted(e.id for e in envs.list()) == sorted([old_used, recent])
    assert not (tmp_path / old_unused).exists()
    envs.use("app1", None)
    assert envs.get(old_used).apps == []  # type: ignore[union-attr]
    # an env no app uses any more is kept until its last use is keep_days old (use() just touched it)
    assert await envs.prune() == 0
    envs.keep_days = 0
    assert await envs.prune() == 2 and envs.list() == []
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"installer_args": "--no-index"}, TypeError),
        ({"installer_args": ["--no-index", 3]}, TypeError),
        ({"build_timeout": 0}, ValueError),
        ({"keep_days": -1}, ValueError),
        ({"installer": "conda"}, ValueError),
    ],
)
def test_bad_configuration_refused(tmp_path: Path, kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        EnvService(tmp_path, **kwargs)  # type: ignore[arg-type]


async def test_prune_runs_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_anvil.host.envs import service as service_module

    monkeypatch.setattr(service_module, "PRUNE_FIRST_DELAY", 0.05)
    monkeypatch.setattr(service_module, "PRUNE_INTERVAL", 0.05)
    old = fake_ready_env(tmp_path, EnvRequest(("a",)), last_used=time.time() - 20 * DAY)
    envs = EnvService(tmp_path)
    await envs.start()
    for _ in range(100):
        if envs.get(old) is None:
            break
        await asyncio.sleep(0.02)
    assert envs.get(old) is None and not (tmp_path / old).exists()
