"""Python packages per app, end to end: a real server building real environments (with the
installer ``auto`` picks: uv here) from tiny wheels the test makes (``--no-index
--find-links``: no network), real kernels importing from them, the admin routes and the
live feed, and a restart that reuses what was built."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer, free_port, private_server
from notebook_files import write_notebook
from wheels import make_wheel

PKG = "anvil_demo_pkg"
OTHER = "anvil_demo_other"
AUTH = {"Authorization": "token test-token-not-for-apps"}

#: server code: the version of the package this app's kernels import, and a task doing the same
APP = f"""
import sys
from jupyter_anvil import server

def _version():
    try:
        import {PKG}
    except ModuleNotFoundError:
        return "missing"
    return {PKG}.__version__

@server.callable
def version():
    return _version()

@server.callable
def other():
    import {OTHER}
    return {OTHER}.__version__

@server.background_task
def task_version():
    return {{"version": _version(), "prefix": sys.prefix}}

@server.callable
def launch():
    return server.launch_background_task("task_version").get_id()
"""


def app_notebook(root: Path, name: str, requirements: list[str] | None) -> None:
    metadata: dict[str, Any] = {"requirements": requirements} if requirements is not None else {}
    write_notebook(root / f"{name}.ipynb", [APP], metadata)


def write_apps(root: Path) -> None:
    app_notebook(root, "one", [f"{PKG}==1.0"])
    app_notebook(root, "two", None)
    (root / "two.requirements.txt").write_text(f"# the file's way\n{PKG}==2.0\n")
    app_notebook(root, "plain", None)
    app_notebook(root, "switcher", [f"{PKG}==1.0"])


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, PKG, "1.0")
    make_wheel(folder, PKG, "2.0")
    make_wheel(folder, OTHER, "1.0")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> Iterator[AnvilServer]:
    args = json.dumps(["--no-index", "--find-links", str(wheels)])
    with private_server(
        tmp_path_factory, "envs", write_apps, f"--AnvilApp.env_installer_args={args}", "--AnvilApp.kernels_min=1"
    ) as running:
        wait_for(running, lambda apps: all(apps[n]["status"] == "ready" for n in ("one", "two", "plain", "switcher")))
        yield running


def wait_for(server: AnvilServer, check: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 240) -> Any:
    """Poll ``anvil/api/apps`` until ``check`` holds; the apps then."""
    deadline = time.monotonic() + timeout
    apps: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        try:
            apps = server.apps()
            if check(apps):
                return apps
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"not reached in {timeout}s: {json.dumps(apps, indent=1)[:3000]}\n{server.log_tail()}")


def envs_folder(server: AnvilServer) -> Path:
    return server.workdir / "jupyter_data_dir" / "jupyter_anvil" / "envs"


def post_requirements(server: AnvilServer, app: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}anvil/api/apps/{app}/requirements", json=body, headers=AUTH, timeout=30)


# -- importing what the server lacks -----------------------------------------------------------


def test_an_app_imports_a_package_the_server_lacks(server: AnvilServer) -> None:
    assert importlib.util.find_spec(PKG) is None  # not in the server's Python
    assert server.call("one", "version") == "1.0"
    assert server.call("plain", "version") == "missing"  # declared nothing: the default kernel


def test_two_apps_two_versions_each_their_own(server: AnvilServer) -> None:
    assert server.call("one", "version") == "1.0"
    assert server.call("two", "version") == "2.0"  # from two.requirements.txt


def test_the_apps_list_shows_env_and_requirements(server: AnvilServer) -> None:
    apps = server.apps()
    one, two, plain = apps["one"], apps["two"], apps["plain"]
    assert one["env"]["status"] == "ready" and len(one["env"]["id"]) == 16
    assert one["requirements"] == [f"{PKG}==1.0"] and one["requirements_source"] == "metadata"
    assert two["requirements_source"] == "file" and two["env"]["id"] != one["env"]["id"]
    assert plain["env"] is None and plain["requirements"] == []


def test_a_background_task_runs_in_the_apps_environment(server: AnvilServer) -> None:
    task_id = server.call("one", "launch")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = server.admin(f"anvil/api/tasks/{task_id}")
        if record["status"] in ("completed", "failed", "killed"):
            break
        time.sleep(0.2)
    assert record["status"] == "completed", record
    env_id = server.apps()["one"]["env"]["id"]
    assert record["result"]["version"] == "1.0" and env_id in record["result"]["prefix"]


# -- the admin routes --------------------------------------------------------------------------


def test_the_envs_list_and_a_builds_log(server: AnvilServer) -> None:
    apps = server.apps()
    listed = {e["id"]: e for e in server.admin("anvil/api/envs")["envs"]}
    one = listed[apps["one"]["env"]["id"]]
    assert one["status"] == "ready" and one["requirements"] == [f"{PKG}==1.0"] and "one" in one["apps"]
    assert one["size_bytes"] > 0 and one["created"] and one["python"] is None
    log = server.admin(f"anvil/api/envs/{one['id']}/log")
    assert log["building"] is False and log["offset"] >= len(log["text"]) > 0
    assert "anvil-demo-pkg==1.0" in log["text"].replace("_", "-")  # what the installer installed
    rest = server.admin(f"anvil/api/envs/{one['id']}/log", offset=log["offset"])
    assert rest["text"] == "" and rest["offset"] == log["offset"]
    # a known environment whose log is not there (being moved into the cache) has no output yet: not a 404
    (build_log,) = (p for p in server.workdir.rglob("build.log") if p.parent.name == one["id"])
    build_log.rename(build_log.with_name("build.log.aside"))
    try:
        assert server.admin(f"anvil/api/envs/{one['id']}/log", offset=7) == {"text": "", "offset": 7, "building": False}
    finally:
        build_log.with_name("build.log.aside").rename(build_log)
    for path, status in [
        ("anvil/api/envs/0123456789abcdef/log", 404),
        (f"anvil/api/envs/{one['id']}/log?offset=x", 400),
        (f"anvil/api/envs/{one['id']}/log?offset=-1", 400),
    ]:
        response = httpx.get(server.url + path, headers=AUTH, timeout=30)
        assert response.status_code == status, (path, response.text)
        assert "Traceback" not in response.text
    assert httpx.get(server.url + "anvil/api/envs", timeout=30).status_code == 403  # Jupyter's auth


def test_the_requirements_route_refuses_bad_bodies_by_name(server: AnvilServer) -> None:
    for body, status, says in [
        ({"add": ["anvil_demo_other>="]}, 400, "anvil_demo_other>="),
        ({"add": "anvil_demo_other"}, 400, "add"),
        ({"add": ["--index-url=http://evil.example"]}, 400, "env_installer_args"),
        ({"remove": ["numpy"]}, 400, "numpy"),
        ({"replace": []}, 400, "replace"),
        ({}, 400, "add or remove"),
        ([], 400, "object"),
    ]:
        response = post_requirements(server, "plain", body)
        assert response.status_code == status and says in response.json()["message"], (body, response.text)
    response = httpx.post(f"{server.url}anvil/api/apps/plain/requirements", content=b"{nope", headers=AUTH, timeout=30)
    assert response.status_code == 400
    assert post_requirements(server, "nosuchapp", {"add": ["six"]}).status_code == 404
    assert server.apps()["plain"]["requirements"] == []  # nothing was written


def test_building_is_shown_live_then_the_post_round_trip_serves_the_package(server: AnvilServer) -> None:
    """The requirements POST writes the notebook; the save rebuilds; the app shows its env
    building (and the feed the build's events) and then serves with the package."""
    events: list[dict[str, Any]] = []
    seen: list[str] = []

    def building_then_ready(apps: dict[str, dict[str, Any]]) -> bool:
        env = apps["plain"]["env"]
        if env is not None:
            seen.append(env["status"])
        return apps["plain"]["requirements"] == [f"{OTHER}==1.0"] and env is not None and env["status"] == "ready"

    async def follow() -> httpx.Response:
        url = f"ws://127.0.0.1:{server.port}/anvil/api/tasks/feed"
        async with websockets.connect(url, additional_headers=AUTH) as feed:

            async def read() -> None:
                while True:
                    events.append(json.loads(await feed.recv()))

            reader = asyncio.ensure_future(read())
            response = await asyncio.to_thread(post_requirements, server, "plain", {"add": [f"{OTHER}==1.0"]})
            if response.status_code == 200:
                await asyncio.to_thread(wait_for, server, building_then_ready)
                await asyncio.sleep(0.5)  # the last events
            reader.cancel()
            return response

    response = asyncio.run(follow())
    assert response.status_code == 200, response.text
    assert response.json() == {"app": "plain", "notebook": "plain.ipynb", "requirements": [f"{OTHER}==1.0"]}
    assert "building" in seen  # the served app's new environment was shown while it built
    assert server.call("plain", "other") == "1.0"
    kinds = [e["type"] for e in events]
    assert "env" in kinds and "env_output" in kinds, kinds
    statuses = [e["env"]["status"] for e in events if e["type"] == "env"]
    assert "building" in statuses and "ready" in statuses


def test_a_new_app_shows_building_first(server: AnvilServer) -> None:
    app_notebook(server.root, "fresh", [f"{OTHER}==1.0", f"{PKG}==2.0"])
    statuses: list[str] = []

    def ready(apps: dict[str, dict[str, Any]]) -> bool:
        if "fresh" in apps:
            statuses.append(apps["fresh"]["status"])
        return "fresh" in apps and apps["fresh"]["status"] == "ready"

    wait_for(server, ready)
    assert statuses[0] == "building" and "error" not in statuses, statuses
    assert server.call("fresh", "version") == "2.0"


# -- rebuilds ----------------------------------------------------------------------------------


def call_in_a_loop(
    server: AnvilServer, until: Callable[[str], bool], timeout: float = 240, app: str = "switcher"
) -> list[str]:
    """Call ``<app>.version`` again and again until ``until`` holds for an answer; each
    answer, failing the test at the first call that does not succeed."""
    answers: list[str] = []
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            response = client.post(f"{server.url}anvil/apps/{app}/_/call/version", json={"args": []})
            assert response.status_code == 200, (answers[-3:], response.text)
            answers.append(response.json()["response"])
            if until(answers[-1]):
                return answers
            time.sleep(0.05)
    raise AssertionError(f"never switched: {answers[-5:]}\n{server.log_tail()}")


def test_a_changed_requirement_rebuilds_and_switches_with_no_failed_call(server: AnvilServer) -> None:
    assert server.call("switcher", "version") == "1.0"
    app_notebook(server.root, "switcher", [f"{PKG}==2.0"])
    answers = call_in_a_loop(server, lambda answer: answer == "2.0")
    assert answers[0] == "1.0" and set(answers) == {"1.0", "2.0"}


def test_saving_the_requirements_file_rebuilds_too(server: AnvilServer) -> None:
    assert server.call("two", "version") == "2.0"
    (server.root / "two.requirements.txt").write_text(f"{PKG}==1.0\n")
    answers = call_in_a_loop(server, lambda answer: answer == "1.0", app="two")
    assert answers[0] == "2.0"
    assert server.apps()["two"]["requirements"] == [f"{PKG}==1.0"]


def test_a_bad_requirement_is_the_installers_message_and_the_previous_env_serves(server: AnvilServer) -> None:
    before = server.apps()["switcher"]
    served = server.call("switcher", "version")
    app_notebook(server.root, "switcher", [before["requirements"][0], "anvil_no_such_pkg==1.0"])

    def failed(apps: dict[str, dict[str, Any]]) -> bool:
        return "anvil_no_such_pkg" in (apps["switcher"]["error"] or "").replace("-", "_")

    apps = wait_for(server, failed)
    switcher = apps["switcher"]
    assert switcher["status"] == "ready" and "still serving the previous version" in switcher["error"]
    assert switcher["env"] == before["env"] and switcher["functions"] == before["functions"]
    assert server.call("switcher", "version") == served
    failed_env = [e for e in server.admin("anvil/api/envs")["envs"] if e["status"] == "failed"]
    assert failed_env and "anvil_no_such_pkg" in (failed_env[0]["error"] or "").replace("-", "_")
    # fixed: the app serves again without the error
    app_notebook(server.root, "switcher", [f"{PKG}==1.0"])
    wait_for(server, lambda apps: apps["switcher"]["error"] is None and apps["switcher"]["status"] == "ready")
    call_in_a_loop(server, lambda answer: answer == "1.0")


def test_a_bad_requirement_on_a_new_app_is_an_error(server: AnvilServer) -> None:
    app_notebook(server.root, "broken", ["anvil_no_such_pkg"])
    apps = wait_for(server, lambda apps: "broken" in apps and apps["broken"]["status"] == "error")
    assert "anvil_no_such_pkg" in apps["broken"]["error"].replace("-", "_")
    env = apps["broken"]["env"]
    assert env is not None and env["status"] == "failed"
    log = server.admin(f"anvil/api/envs/{env['id']}/log")  # the whole build's output, kept
    assert log["building"] is False and "anvil_no_such_pkg" in log["text"].replace("-", "_")
    assert server.call("one", "version") == "1.0"  # nothing else affected
    (server.root / "broken.ipynb").unlink()


# -- a second start --------------------------------------------------------------------------------


def test_a_second_start_reuses_the_cache(server: AnvilServer) -> None:
    """It restarts the module's server (which serves on after it)."""
    env_id = server.apps()["one"]["env"]["id"]
    folder = envs_folder(server) / env_id
    marks = {name: (folder / name).stat().st_mtime_ns for name in ("build.log", "ready")}
    server.stop()
    started = time.monotonic()
    server.start()
    wait_for(server, lambda apps: apps.get("one", {}).get("status") == "ready")
    elapsed = time.monotonic() - started
    assert {name: (folder / name).stat().st_mtime_ns for name in marks} == marks  # no installer ran
    assert server.apps()["one"]["env"]["id"] == env_id
    assert server.call("one", "version") == "1.0"
    assert elapsed < 120


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("--AnvilApp.env_installer=conda", "env_installer must be one of"),
        ("--AnvilApp.env_installer_args=[1, 2]", "not a JSON list of strings"),
    ],
)
def test_options_it_cannot_use_stop_the_server_plainly(tmp_path: Path, option: str, says: str) -> None:
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(tmp_path / name.lower())
    command = [sys.executable, "-m", "jupyter_anvil", str(tmp_path), f"--ServerApp.port={free_port()}", option]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and says in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_a_python_the_machine_lacks_is_a_clear_error(server: AnvilServer) -> None:
    write_notebook(server.root / "ancient.ipynb", [APP], {"requirements": [f"{PKG}==1.0"], "python": "3.99"})
    apps = wait_for(server, lambda apps: "ancient" in apps and apps["ancient"]["status"] == "error")
    assert "3.99" in apps["ancient"]["error"], apps["ancient"]["error"]
    assert server.call("one", "version") == "1.0"  # nothing else affected
    (server.root / "ancient.ipynb").unlink()
