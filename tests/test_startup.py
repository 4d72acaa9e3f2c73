"""The command line and what a server prints at start-up: `jupyter anvil --help`, the
line per app (a page's URL, or the call URL of an app with no page), no browser hints,
and the same lines from a plain `jupyter server` that loads the extension, which
`--AnvilApp.serve_apps=False` turns off entirely. Real commands, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import TOKEN, free_port, kernels_of
from notebook_files import write_notebook

APP_CELLS = ["from jupyter_anvil import server\n\n@server.callable\ndef hello(name):\n    return f'hi {name}'\n"]
#: what Jupyter prints for a server that would open a browser; `jupyter anvil` opens none
BROWSER_HINTS = ("No web browser found", "open this file in a browser", "jpserver-")


def write_apps(root: Path) -> None:
    write_notebook(root / "paged.ipynb", APP_CELLS, {"kernels": {"min": 1, "max": 1}})
    (root / "paged").mkdir()
    (root / "paged" / "index.html").write_text("<p>paged</p>")
    write_notebook(root / "plain.ipynb", APP_CELLS, {"kernels": {"min": 1, "max": 1}})


class Command:
    """A server command run as a user runs it, in Jupyter folders of its own, its output kept."""

    def __init__(self, workdir: Path, *command: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ)
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
            env[name] = str(workdir / name.lower())
        self.output_path = workdir / "output.log"
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [*command, f"--port={self.port}", "--ip=127.0.0.1"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return self.output
            assert self.process.poll() is None, f"the command ended:\n{self.output}"
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed in {timeout}s:\n{self.output}")

    def kernels(self) -> list[int]:
        return kernels_of(self.workdir)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running(tmp_path: Path, *command: str) -> Iterator[Command]:
    root = tmp_path / "root"
    write_apps(root)
    started = Command(tmp_path, *command, str(root))
    try:
        yield started
    finally:
        started.stop()


def jupyter(*args: str) -> list[str]:
    """`jupyter <subcommand>` of this environment (the jupyter-anvil script for `anvil`)."""
    return [sys.executable, "-m", "jupyter", *args]


def test_help_shows_the_usage_root_and_the_options_that_matter() -> None:
    result = subprocess.run(jupyter("anvil", "--help"), capture_output=True, text=True, timeout=120, check=True)
    text = result.stdout
    assert text.startswith("Usage: jupyter anvil [ROOT] [options]")
    for expected in ("ROOT", "--port=<Int>", "--ip=<Unicode>", "--IdentityProvider.token", "--help-all"):
        assert expected in text
    # every option of the extension, with its help and default
    assert "--AnvilApp.kernels_max=<Int>\n    Most kernels per app under load" in text
    assert "--AnvilApp.serve_apps=<Bool>" in text and "--AnvilApp.session_idle_minutes=<Float>" in text
    assert "Default: 30.0" in text
    assert "running as root" not in result.stderr  # nothing is started


def test_rotate_cookie_key_has_help_too(tmp_path: Path) -> None:
    result = subprocess.run(
        jupyter("anvil", "rotate-cookie-key", "--help"), capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0 and "rotate-cookie-key [KEYS_FILE]" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no key file named "--help"


def test_jupyter_anvil_prints_a_line_per_app_and_no_browser_hints(tmp_path: Path) -> None:
    with running(tmp_path, *jupyter("anvil")) as server:  # no token given: Jupyter makes one
        output = server.wait_for("    plain: ")
        assert f"    paged: {server.url}anvil/apps/paged/\n" in output.replace("localhost", "127.0.0.1")
        plain = next(line for line in output.splitlines() if line.startswith("    plain: "))
        assert "/anvil/apps/plain/_/call/<function> (no page; functions: hello)" in plain
        assert "without a token" in output and "--AnvilApp.serve_apps=False" in output
        assert "[jupyter-anvil] schedules: none (listed at " in server.wait_for("[jupyter-anvil] schedules: ")
        # it listens where --port and --ip say, and the printed call URL answers
        reply = httpx.post(f"{server.url}anvil/apps/plain/_/call/hello", json={"args": ["Ada"]}, timeout=60)
        assert reply.json() == {"response": "hi Ada", "objects": []}
        assert httpx.get(f"{server.url}anvil/apps/paged/", timeout=30).text == "<p>paged</p>"
        time.sleep(1)  # Jupyter's browser hints come after its "running at" lines
        for hint in BROWSER_HINTS:
            assert hint not in server.output


def test_a_plain_jupyter_server_says_which_apps_it_serves(tmp_path: Path) -> None:
    # the extension is enabled by the install (etc/jupyter/jupyter_server_config.d), as for `jupyter lab`
    with running(tmp_path, *jupyter("server", f"--IdentityProvider.token={TOKEN}", "--allow-root")) as server:
        output = server.wait_for("    plain: ")
        assert "[jupyter-anvil] apps" in output and "without a token" in output
        assert "    paged: " in output and "/anvil/apps/plain/_/call/<function>" in output
        reply = httpx.post(f"{server.url}anvil/apps/plain/_/call/hello", json={"args": ["Ada"]}, timeout=60)
        assert reply.status_code == 200 and reply.json()["response"] == "hi Ada"


def test_serve_apps_false_turns_the_app_surface_off(tmp_path: Path) -> None:
    command = jupyter("server", f"--IdentityProvider.token={TOKEN}", "--allow-root", "--AnvilApp.serve_apps=False")
    with running(tmp_path, *command) as server:
        output = server.wait_for("[jupyter-anvil] apps are off (--AnvilApp.serve_apps=False)")
        server.wait_for("Jupyter Server")
        time.sleep(2)  # time enough for a watcher (if any) to have found the notebooks
        assert "    plain: " not in output
        admin = httpx.get(f"{server.url}anvil/api/apps", headers={"Authorization": f"token {TOKEN}"}, timeout=30)
        assert admin.status_code == 200
        assert admin.json()["serving"] is False and admin.json()["apps"] == []
        assert "serve_apps=False" in admin.json()["message"]
        for path in ["anvil/apps/paged/", "anvil/apps/paged/index.html", "anvil/client.js", "anvil/apps/plain/_/ws",
                     "anvil/apps/plain/_/tasks/" + "a" * 25]:  # fmt: skip
            # (Jupyter redirects a path ending in / to the same without it, then answers 404)
            assert httpx.get(server.url + path, timeout=30, follow_redirects=True).status_code == 404, path
        call = httpx.post(f"{server.url}anvil/apps/plain/_/call/hello", json={"args": ["Ada"]}, timeout=30)
        assert call.status_code == 404 and "serve_apps=False" in call.json()["error"]["message"]
        assert server.kernels() == []  # no kernel was started for any app
        # the rest of the admin API still answers
        logs = httpx.get(f"{server.url}anvil/api/logs", headers={"Authorization": f"token {TOKEN}"}, timeout=30)
        assert logs.status_code == 200


@pytest.fixture(autouse=True)
def _no_leftover_kernels(tmp_path: Path) -> Iterator[None]:
    yield
    marker = str(tmp_path / "jupyter_runtime_dir").encode()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, marker)]
        if not left:
            return
        time.sleep(0.5)
    raise AssertionError(f"kernels left running after the server stopped: {left}")


def _cmdline_has(proc: Path, marker: bytes) -> bool:
    try:
        return marker in (proc / "cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize(
    ("args", "root", "rest"),
    [
        (["notebooks/", "--port=8900"], "notebooks/", ["--port=8900"]),
        (["--port", "8900", "notebooks/"], "notebooks/", ["--port", "8900"]),
        (["--ServerApp.ip", "::1", "--debug", "notebooks/"], "notebooks/", ["--ServerApp.ip", "::1", "--debug"]),
        (["--no-browser", "--AnvilApp.kernels_max=2"], None, ["--no-browser", "--AnvilApp.kernels_max=2"]),
    ],
)
def test_root_is_found_among_options(args: list[str], root: str | None, rest: list[str]) -> None:
    from jupyter_anvil.cli import split_root

    assert split_root(args) == (root, rest)
