"""One real jupyter-anvil server for the whole session, serving the example notebooks and
the test apps (tests/apps.py) from a temporary root, with real ipykernels."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apps import write_test_apps
from postgres import database_url, postgres_cluster, postgres_url  # noqa: F401 - fixtures for every test

REPO = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEZONE = "Asia/Kolkata"

# Skipped where Chromium is missing, except where the test command installed it
# (ANVIL_REQUIRE_BROWSER): there a missing browser fails, instead of passing untested.
NEEDS_CHROMIUM = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("ANVIL_REQUIRE_BROWSER"),
    reason=f"needs Chromium at {CHROMIUM}",
)

TOKEN = "test-token-not-for-apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kernels_of(workdir: Path) -> list[int]:
    """Kernels still alive of the server run in ``workdir``: their command lines name its
    runtime folder (``JUPYTER_RUNTIME_DIR`` under ``workdir``)."""
    marker = str(workdir / "jupyter_runtime_dir").encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


class AnvilServer:
    """A running ``jupyter anvil ROOT`` subprocess."""

    def __init__(self, root: Path, workdir: Path, *options: str) -> None:
        self.root = root
        self.workdir = workdir
        self.token = TOKEN
        self.options = options
        self.port = free_port()
        #: the inbound SMTP server's port: one of its own, so servers never share 8025
        self.smtp_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = workdir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait_for: tuple[str, ...] = ()) -> None:
        """Start (or start again, on the same root and data folder) the server."""
        env = dict(os.environ)
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
            env[name] = str(self.workdir / name.lower())
        env["JUPYTER_TOKEN"] = "must-not-reach-kernels"
        command = [
            sys.executable, "-m", "jupyter_anvil", str(self.root),
            f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}", "--ServerApp.open_browser=False",
            "--AnvilApp.watch_interval=0.3", f"--AnvilApp.smtp_server_port={self.smtp_port}", *self.options,
        ]  # fmt: skip
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        try:
            self.wait_until_loaded(wait_for or ())
        except BaseException:
            self.stop()  # a server that never came up must not outlive the test run
            raise

    def wait_until_loaded(self, names: tuple[str, ...], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                apps = self.apps()
                if all(a["status"] not in ("loading", "building") for a in apps.values()) and all(
                    n in apps for n in names
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not load its apps in {timeout}s\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log_file.close()

    def kernel_processes(self) -> list[int]:
        return kernels_of(self.workdir)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- clients -------------------------------------------------------------------------
    def admin(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            self.url + path, params=params, headers={"Authorization": f"token {self.token}"}, timeout=30
        )
        response.raise_for_status()
        return response.json()

    def apps(self) -> dict[str, dict[str, Any]]:
        return {a["name"]: a for a in self.admin("anvil/api/apps")["apps"]}

    def post(self, app: str, function: str, body: Any = None, timeout: float = 60, **kw: Any) -> httpx.Response:
        """A call as a browser or script makes it: no Jupyter token."""
        return httpx.post(f"{self.url}anvil/apps/{app}/_/call/{function}", json=body, timeout=timeout, **kw)

    def call(self, app: str, function: str, *args: Any, **kwargs: Any) -> Any:
        response = self.post(app, function, {"args": list(args), "kwargs": kwargs})
        assert response.status_code == 200, response.text
        return response.json()["response"]

    def ws_url(self, app: str) -> str:
        return f"ws://127.0.0.1:{self.port}/anvil/apps/{app}/_/ws"


@contextmanager
def private_server(
    tmp_path_factory: pytest.TempPathFactory, label: str, write_apps: Callable[[Path], None], *options: str
) -> Iterator[AnvilServer]:
    """A server of a test module's own, for what the shared one must not change
    (configuration, restarts); it serves what ``write_apps`` writes into its root."""
    root = tmp_path_factory.mktemp(f"{label}-root")
    write_apps(root)
    server = AnvilServer(root, tmp_path_factory.mktemp(f"{label}-server"), *options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def anvil_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(REPO / "notebooks", root, dirs_exist_ok=True)
    write_test_apps(root)
    server = AnvilServer(
        root, tmp_path_factory.mktemp("server"), "--AnvilApp.queue_size=20", "--AnvilApp.idle_seconds=2"
    )
    server.start(wait_for=("core", "hello"))
    yield server
    server.stop()


def record_page(page: Any) -> tuple[list[Any], list[str], list[str]]:
    """What a browser page does: the requests it makes, the WebSocket URLs it opens, and
    the errors it logs or throws (lists that fill as the page runs)."""
    requests: list[Any] = []
    sockets: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r))  # playwright wants a Python function here
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return requests, sockets, errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for a module's browser tests (each test opens its own context). Not one
    for the session: Playwright's sync API keeps an event loop running while it is open,
    which the asyncio tests of later modules could not then use."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
async def stop_env_services(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Every EnvService a test starts in this process is stopped after it (its pruner and
    any build cancelled)."""
    from jupyter_anvil.host.envs.service import EnvService

    started: list[EnvService] = []
    original = EnvService.start

    async def start(self: EnvService) -> None:
        started.append(self)
        await original(self)

    monkeypatch.setattr(EnvService, "start", start)
    yield
    for envs in started:
        await envs.stop()
