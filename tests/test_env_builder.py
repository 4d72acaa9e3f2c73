"""Real environment builds, with uv and with pip, of tiny wheels the tests make themselves
(``--no-index --find-links <dir>``: no network), and real kernels started in them."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager
from wheels import make_wheel

from jupyter_anvil.host.envs.builder import MAX_LIVE_OUTPUT, SERVER_PTH, BuildLog, find_uv
from jupyter_anvil.host.envs.cache import venv_python
from jupyter_anvil.host.envs.request import EnvRequest, EnvRequestError
from jupyter_anvil.host.envs.service import EnvBuildFailed, EnvInfo, EnvService

PROBE = "anvil_probe_pkg"


#: every EnvService a test starts is stopped after it (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("stop_env_services")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, PROBE, "1.0")
    make_wheel(folder, PROBE, "2.0")
    make_wheel(folder, "anvil_probe_dep", "1.0")
    make_wheel(folder, "anvil_probe_user", "1.0", requires=["anvil_probe_dep>=1.0"])
    # depends on a kernel package at a version that is not the server's: the constraints refuse it
    make_wheel(folder, "anvil_probe_breaker", "1.0", requires=["traitlets==1.0.0"])
    make_wheel(folder, "traitlets", "1.0.0")
    # would bring another jupyter-anvil, shadowing the kernel runtime the host talks to
    make_wheel(folder, "anvil_probe_anvil_breaker", "1.0", requires=["jupyter-anvil==99.0"])
    make_wheel(folder, "jupyter_anvil", "99.0")
    # a .pth run at every start of the env's python that makes ipykernel unimportable
    make_wheel(
        folder,
        "anvil_probe_kernel_breaker",
        "1.0",
        extra_files={"anvil_probe_kernel_breaker.pth": "import sys; sys.modules['ipykernel'] = None\n"},
    )
    return folder


def offline_args(wheels: Path) -> list[str]:
    return ["--no-index", "--find-links", str(wheels)]


@pytest.fixture(params=["uv", "pip"])
def installer(request: pytest.FixtureRequest) -> str:
    if request.param == "uv":
        assert find_uv() is not None, "uv is missing: install the test extra (pip install -e .[test])"
    return str(request.param)


@pytest.fixture
async def service(tmp_path: Path, installer: str, wheels: Path) -> AsyncIterator[EnvService]:
    envs = EnvService(tmp_path / "envs", installer=installer, installer_args=offline_args(wheels))
    await envs.start()
    yield envs
    await envs.stop()


def without_pythonpath() -> dict[str, str]:
    """The environment minus PYTHONPATH (which the tests set to the checkout): what the layering
    alone makes reachable."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run_in(info: EnvInfo, envs: EnvService, code: str, env: dict[str, str] | None = None) -> str:
    python = envs.kernel_specs.get_kernel_spec(info.kernel_name).argv[0]
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_env_has_the_package_the_server_lacks(service: EnvService) -> None:
    info = await service.ensure(EnvRequest((f"{PROBE}==1.0",)), "app1")
    assert info.status == "ready" and info.kernel_name == f"anvil-env-{info.id}"
    assert info.requirements == (f"{PROBE}==1.0",) and info.apps == ["app1"]
    assert info.size_bytes and info.size_bytes > 0 and info.created
    assert run_in(info, service, f"import {PROBE}; print({PROBE}.__version__)") == "1.0"
    # the layering: the server's packages are reachable after the env's own
    assert run_in(info, service, "import ipykernel, jupyter_anvil.kernel.runtime; print('ok')") == "ok"
    assert run_in(info, service, "import jupyter_anvil.kernel.runtime; print('ok')", without_pythonpath()) == "ok"
    server = subprocess.run([sys.executable, "-c", f"import {PROBE}"], capture_output=True, text=True)
    assert server.returncode != 0 and "No module named" in server.stderr
    assert (service.cache.folder(info.id) / "build.log").read_text().count("$ ") >= 2
    text, offset = service.log(info.id) or ("", 0)
    assert "anvil-probe-pkg" in text.replace("_", "-")
    assert offset == len((service.cache.folder(info.id) / "build.log").read_bytes())


async def test_two_versions_in_two_envs(service: EnvService) -> None:
    one, two = await asyncio.gather(
        service.ensure(EnvRequest((f"{PROBE}==1.0",)), "a"),
        service.ensure(EnvRequest((f"{PROBE}==2.0",)), "b"),
    )
    assert one.id != two.id
    assert run_in(one, service, f"import {PROBE}; print({PROBE}.__version__)") == "1.0"
    assert run_in(two, service, f"import {PROBE}; print({PROBE}.__version__)") == "2.0"
    assert {e.id for e in service.list()} == {one.id, two.id}


async def test_dependencies_are_installed_too(service: EnvService) -> None:
    info = await service.ensure(EnvRequest(("anvil_probe_user",)), "a")
    assert run_in(info, service, "import anvil_probe_dep, anvil_probe_user; print('ok')") == "ok"


async def test_concurrent_callers_share_one_build(service: EnvService) -> None:
    request = EnvRequest((f"{PROBE}==1.0",))
    first, second = await asyncio.gather(service.ensure(request, "a"), service.ensure(request, "b"))
    assert first.id == second.id
    assert service.installer_runs == 2  # one venv, one install: the second caller joined the build


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        (f"{PROBE}==3.0", "3.0"),  # a version that does not exist
        ("anvil_no_such_package", "anvil_no_such_package"),  # a package that does not exist
    ],
)
async def test_unresolvable_gives_the_installers_message(service: EnvService, requirement: str, message: str) -> None:
    events: list[dict[str, Any]] = []
    service._on_event = events.append
    with pytest.raises(EnvBuildFailed) as failed:
        await service.ensure(EnvRequest((requirement,)), "a")
    text = str(failed.value)
    assert message.replace("_", "-") in text.replace("_", "-")
    assert "no version" in text.lower() or "could not find" in text.lower() or "not found" in text.lower()
    info = service.list()[0]
    assert info.status == "failed" and info.error == text
    assert [e["env"]["status"] for e in events if e["type"] == "env"] == ["building", "failed"]
    assert any(e["type"] == "env_output" for e in events)
    # the failed build left no folder that could look ready, and its log stays readable
    assert [p.name for p in service.cache.root.iterdir() if not p.name.endswith(".failed.log")] == []
    log_text, _ = service.log(info.id) or ("", 0)
    assert message.replace("_", "-") in log_text.replace("_", "-")


async def test_a_requirement_pip_cannot_read_never_reaches_the_installer(service: EnvService) -> None:
    with pytest.raises(EnvRequestError, match="not a valid requirement"):
        await service.ensure(EnvRequest((f"{PROBE} >= = 1",)), "a")
    assert service.installer_runs == 0


@pytest.mark.parametrize(
    ("requirement", "package"), [("anvil_probe_breaker", "traitlets"), ("anvil_probe_anvil_breaker", "jupyter-anvil")]
)
async def test_a_kernel_package_at_another_version_is_refused(
    service: EnvService, requirement: str, package: str
) -> None:
    # the other version is there to be found: the constraints (the server's versions) refuse it
    with pytest.raises(EnvBuildFailed) as failed:
        await service.ensure(EnvRequest((requirement,)), "a")
    assert package in str(failed.value).replace("_", "-")
    assert "smoke check" not in str(failed.value)  # the resolver refused it: nothing was installed


async def test_smoke_check_failure_fails_the_build(service: EnvService) -> None:
    with pytest.raises(EnvBuildFailed, match="smoke check") as failed:
        await service.ensure(EnvRequest(("anvil_probe_kernel_breaker",)), "a")
    assert "ipykernel" in str(failed.value)  # the check's own output
    assert service.list()[0].status == "failed"


async def test_a_second_service_reuses_the_env_and_runs_no_installer(
    tmp_path: Path, installer: str, wheels: Path
) -> None:
    root = tmp_path / "envs"
    first = EnvService(root, installer=installer, installer_args=offline_args(wheels))
    await first.start()
    built = await first.ensure(EnvRequest((f"{PROBE}==2.0",)), "a")
    assert first.installer_runs == 2
    await first.stop()

    second = EnvService(root, installer=installer, installer_args=offline_args(wheels))
    await second.start()
    assert [e.id for e in second.list()] == [built.id] and second.list()[0].status == "ready"
    again = await second.ensure(EnvRequest((f"{PROBE}==2.0",)), "a")
    assert again.id == built.id and second.installer_runs == 0
    assert run_in(again, second, f"import {PROBE}; print({PROBE}.__version__)") == "2.0"
    # other installer args are another environment
    third = EnvService(root, installer=installer, installer_args=[*offline_args(wheels), "--no-deps"])
    await third.start()
    assert third.env_id(EnvRequest((f"{PROBE}==2.0",))) != built.id


async def test_kernel_spec_starts_a_real_kernel_in_the_env(service: EnvService, installer: str) -> None:
    if installer == "pip":
        pytest.skip("the kernel start does not depend on the installer")
    info = await service.ensure(EnvRequest((f"{PROBE}==2.0",)), "a")
    manager = AsyncKernelManager(kernel_name=info.kernel_name, kernel_spec_manager=service.kernel_specs)
    await manager.start_kernel(env=without_pythonpath())  # jupyter_anvil reached through the layering alone
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        outputs: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                outputs.append(msg["content"]["text"])

        code = f"import {PROBE}, sys, jupyter_anvil.kernel.runtime; print({PROBE}.__version__, sys.prefix)"
        reply = await client.execute_interactive(code, output_hook=collect, timeout=60)
        assert reply["content"]["status"] == "ok"
        version, prefix = "".join(outputs).split()
        assert version == "2.0"
        assert Path(prefix) == service.cache.folder(info.id) / "venv"
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)
    # a kernel started in it is its last use
    assert service.get(info.id) is not None and service.get(info.id).last_used is not None  # type: ignore[union-attr]


async def test_layering_file_names_the_servers_site_packages(service: EnvService) -> None:
    info = await service.ensure(EnvRequest((f"{PROBE}==1.0",)), "a")
    python = venv_python(service.cache.folder(info.id) / "venv")
    site_dir = run_in(info, service, "import sysconfig; print(sysconfig.get_path('purelib'))")
    line = (Path(site_dir) / SERVER_PTH).read_text()
    assert line.startswith("import site;")
    path = run_in(info, service, "import sys; print('\\n'.join(sys.path))").splitlines()
    # the env's own packages come before the server's: an app's pin shadows the server's version
    assert path.index(site_dir) < min(path.index(p) for p in path if p.startswith(sys.prefix) and "site-packages" in p)
    assert python.exists() and os.access(python, os.X_OK)


def installer_processes(root: Path) -> list[int]:
    """Processes whose command line names a folder under root (an installer still running)."""
    marker = str(root).encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int(proc.name) != os.getpid() and marker in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def silent_index() -> Iterator[str]:
    """An index URL that accepts connections and never answers: an installer reading it hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"


async def test_a_hanging_build_is_killed_at_build_timeout(tmp_path: Path, installer: str, silent_index: str) -> None:
    root = tmp_path / "envs"
    envs = EnvService(
        root, installer=installer, installer_args=["--no-index", "--find-links", silent_index], build_timeout=3
    )
    await envs.start()
    started = time.monotonic()
    with pytest.raises(EnvBuildFailed, match=r"took longer than 3 s.*env_build_timeout"):
        await envs.ensure(EnvRequest((f"{PROBE}==1.0",)), "a")
    assert time.monotonic() - started < 20
    assert envs.list()[0].status == "failed"
    # the installer and what it started are gone, and so is the half-built folder
    for _ in range(50):
        if not installer_processes(root):
            break
        await asyncio.sleep(0.1)
    assert installer_processes(root) == []
    assert [p.name for p in root.iterdir() if not p.name.endswith(".failed.log")] == []
    assert "took longer" in (envs.log(envs.list()[0].id) or ("", 0))[0]


async def test_stop_kills_a_build_under_way(tmp_path: Path, silent_index: str) -> None:
    root = tmp_path / "envs"
    envs = EnvService(root, installer_args=["--no-index", "--find-links", silent_index])
    await envs.start()
    ensure = asyncio.create_task(envs.ensure(EnvRequest((f"{PROBE}==1.0",)), "a"))
    for _ in range(100):
        if envs.installer_runs >= 2:  # the install is running
            break
        await asyncio.sleep(0.05)
    assert envs.list()[0].status == "building" and envs.list()[0].apps == ["a"]
    await envs.stop()
    with pytest.raises(asyncio.CancelledError):
        await ensure
    assert installer_processes(root) == []
    assert list(root.iterdir()) == []


async def test_a_python_the_machine_lacks_is_a_clear_error(service: EnvService) -> None:
    with pytest.raises(EnvBuildFailed, match=r"python 9\.9 is not on this machine.*it has python .*3\.\d+") as e:
        await service.ensure(EnvRequest((f"{PROBE}==1.0",), python="9.9"), "a")
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in str(e.value)
    assert service.installer_runs == 0


def test_python_2_7_is_refused_before_any_build() -> None:
    with pytest.raises(EnvRequestError, match=r"python 2\.7 is too old"):
        EnvRequest((f"{PROBE}==1.0",), python="2.7")


async def test_an_unknown_installer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="env_installer must be one of auto, uv, pip"):
        EnvService(tmp_path, installer="conda")


async def test_a_second_build_after_a_failure_retries(tmp_path: Path, installer: str, wheels: Path) -> None:
    later = tmp_path / "later"
    later.mkdir()
    envs = EnvService(tmp_path / "envs", installer=installer, installer_args=offline_args(later))
    await envs.start()
    request = EnvRequest((f"{PROBE}==1.0",))
    with pytest.raises(EnvBuildFailed):
        await envs.ensure(request, "a")
    events: list[dict[str, Any]] = []
    envs._on_event = events.append
    make_wheel(later, PROBE, "1.0")  # the package published meanwhile
    info = await envs.ensure(request, "a")
    assert info.status == "ready" and info.error is None
    assert [e["env"]["status"] for e in events if e["type"] == "env"] == ["building", "ready"]
    assert run_in(info, envs, f"import {PROBE}; print({PROBE}.__version__)") == "1.0"
    # the failed build's log went with its success
    assert [p.name for p in (tmp_path / "envs").iterdir()] == [info.id]


async def test_an_env_removed_under_the_service_is_built_again(service: EnvService) -> None:
    request = EnvRequest((f"{PROBE}==1.0",))
    info = await service.ensure(request, "a")
    shutil.rmtree(service.cache.folder(info.id))
    again = await service.ensure(request, "a")
    assert again.id == info.id and service.installer_runs == 4
    assert run_in(again, service, f"import {PROBE}; print({PROBE}.__version__)") == "1.0"


def test_live_output_is_coalesced_and_bounded(tmp_path: Path) -> None:
    chunks: list[str] = []
    log = BuildLog(tmp_path / "build.log", lambda text, offset: chunks.append(text))
    for _ in range(10):
        log.write(b"x" * 100)  # small pieces in quick succession: held back
    assert chunks == []
    log.write(b"y" * 5000)
    assert len(chunks) == 1 and len(chunks[0]) == 6000
    for _ in range(400):
        log.write(b"z" * 4096 + b"\n")
    log.close()
    assert sum(len(c) for c in chunks) < MAX_LIVE_OUTPUT + 10_000
    assert chunks[-1].endswith("[more output in the build log]\n")
    assert (tmp_path / "build.log").stat().st_size == 6000 + 400 * 4097
    assert log.tail().splitlines()[-1] == "z" * 2000  # the error quotes at most 40 lines of 2000 characters
    assert len(log.tail().splitlines()) == 40


def test_live_output_tells_the_log_offset_after_each_chunk(tmp_path: Path) -> None:
    """Each live chunk carries build.log's byte offset after it (as ``log()`` counts it), so a
    reader that fetched the log up to N can skip what it holds instead of repeating it."""
    path = tmp_path / "build.log"
    told: list[tuple[str, int]] = []
    log = BuildLog(path, lambda text, offset: told.append((text, offset)))
    euro = "€".encode()
    log.write(b"a" * 5000 + euro[:1])  # a character cut between two reads
    log.write(euro[1:] + "é\n".encode())
    log.new_section()
    log.write(b"b" * 9000)
    log.close()
    data = path.read_bytes()
    assert len(told) >= 2
    assert told[-1][1] == len(data)
    for text, offset in told:
        start = offset - len(text.encode())
        assert data[start:offset].decode() == text


def test_the_offset_counts_the_files_bytes_not_the_text_shown(tmp_path: Path) -> None:
    """An installer's byte that is not UTF-8 is shown as U+FFFD (three bytes in UTF-8) but is
    one byte of build.log, and the live-only note past the live bound is in no file: the
    offsets told stay build.log's, or a panel would skip or repeat output."""
    path = tmp_path / "build.log"
    told: list[tuple[str, int]] = []
    log = BuildLog(path, lambda text, offset: told.append((text, offset)))
    log.write(b"bad \xff\xfe bytes\n")
    log.new_section()
    log.write(b"x" * (MAX_LIVE_OUTPUT + 10))
    log.new_section()
    log.close()
    data = path.read_bytes()
    assert told[0] == ("bad \ufffd\ufffd bytes\n", len(b"bad \xff\xfe bytes\n"))
    assert "more output in the build log" in told[-1][0]
    assert told[-1][1] == len(data)


@pytest.mark.skipif(
    not os.environ.get("ANVIL_TEST_OTHER_PYTHON"), reason="set ANVIL_TEST_OTHER_PYTHON=3.N (needs an index)"
)
async def test_another_python_gets_a_plain_env_with_its_own_kernel(
    tmp_path: Path, installer: str, wheels: Path
) -> None:
    """Opt-in: a python3.N on PATH, and an index reachable for ipykernel's wheels of that Python."""
    version = os.environ["ANVIL_TEST_OTHER_PYTHON"]
    envs = EnvService(tmp_path / "envs", installer=installer, installer_args=["--find-links", str(wheels)])
    await envs.start()
    info = await envs.ensure(EnvRequest((f"{PROBE}==1.0",), python=version), "a")
    assert info.python == version
    code = f"import sys, {PROBE}, jupyter_anvil.kernel.runtime; print('%d.%d' % sys.version_info[:2])"
    assert run_in(info, envs, code, without_pythonpath()) == version  # jupyter_anvil linked or copied in


async def test_a_local_wheel_path_is_a_requirement(service: EnvService, wheels: Path) -> None:
    wheel = wheels / f"{PROBE}-2.0-py3-none-any.whl"
    info = await service.ensure(EnvRequest((str(wheel),)), "a")
    assert run_in(info, service, f"import {PROBE}; print({PROBE}.__version__)") == "2.0"


async def test_a_conflict_gives_the_installers_message(service: EnvService) -> None:
    with pytest.raises(EnvBuildFailed) as failed:
        await service.ensure(EnvRequest((f"{PROBE}==1.0", f"{PROBE}==2.0")), "a")
    text = str(failed.value).lower()
    assert "1.0" in text and "2.0" in text
    assert "conflict" in text or "unsatisfiable" in text or "cannot install" in text


async def test_output_is_told_live_while_building(tmp_path: Path, silent_index: str) -> None:
    events: list[dict[str, Any]] = []
    envs = EnvService(
        tmp_path / "envs", installer_args=["--no-index", "--find-links", silent_index], on_event=events.append
    )
    await envs.start()
    ensure = asyncio.create_task(envs.ensure(EnvRequest((f"{PROBE}==1.0",)), "a"))
    for _ in range(100):
        if any(e["type"] == "env_output" and "install" in e["text"] for e in events):
            break
        await asyncio.sleep(0.05)
    assert not ensure.done() and envs.list()[0].status == "building"
    output = "".join(e["text"] for e in events if e["type"] == "env_output")
    assert "venv" in output and "install" in output
    text, offset = envs.log(envs.list()[0].id) or ("", 0)
    assert "install" in text and offset > 0
    await envs.stop()
    with pytest.raises(asyncio.CancelledError):
        await ensure


CRASHING_SERVER = """
import asyncio, sys
from pathlib import Path
from jupyter_anvil.host.envs.request import EnvRequest
from jupyter_anvil.host.envs.service import EnvService

async def main():
    envs = EnvService(Path(sys.argv[1]), installer_args=["--no-index", "--find-links", sys.argv[2]])
    await envs.start()
    await envs.ensure(EnvRequest(("anvil_probe_pkg==1.0",)), "a")

asyncio.run(main())
"""


async def test_a_server_killed_mid_build_leaves_nothing_that_looks_ready(tmp_path: Path, silent_index: str) -> None:
    root = tmp_path / "envs"
    crashing = subprocess.Popen([sys.executable, "-c", CRASHING_SERVER, str(root), silent_index])
    try:
        for _ in range(200):
            building = [p for p in root.glob("*.building-*") if (p / "venv").exists()] if root.exists() else []
            if building:
                break
            await asyncio.sleep(0.05)
        assert building, "the build did not start"
    finally:
        crashing.kill()  # SIGKILL: no clean-up of its own
        crashing.wait()
    for pid in installer_processes(root):  # its installer, orphaned in its own session
        os.kill(pid, 9)
    envs = EnvService(root)
    await envs.start()
    assert envs.list() == [] and list(root.iterdir()) == []
