"""The protocol between host and kernel, end to end: the kernel says which protocol version
it speaks when the comm opens, and a host refuses a kernel of another version before it
runs anything; what a kernel registers is kept by kind (a background task is not a
function, and a task and a function may share a name)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import AnvilServer
from notebook_files import write_notebook

from jupyter_anvil import protocol

FUTURE_VERSION = 999


def speaking(version: int) -> str:
    """Kernel start-up code: announce protocol ``version``, as a kernel of another
    jupyter-anvil release would. The patch is made before the runtime is imported."""
    return f"import jupyter_anvil.protocol as p; p.PROTOCOL_VERSION = {version}"


#: kernel start-up code: a runtime that opens the comm but never says hello (as a
#: jupyter-anvil from before the handshake would)
SILENT = (
    "import jupyter_anvil.kernel.runtime as r; "
    "r.Runtime.on_open = lambda self, comm, msg: (setattr(self, 'comm', comm), comm.on_msg(self.on_message))"
)


def write_kernelspec(workdir: Path, name: str, prelude: str) -> None:
    """A kernelspec (under the server's JUPYTER_DATA_DIR) whose kernel runs this
    jupyter-anvil after ``prelude``."""
    code = f"{prelude}; from ipykernel import kernelapp; kernelapp.launch_new_instance()"
    folder = workdir / "jupyter_data_dir" / "kernels" / name
    folder.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-c", code, "-f", "{connection_file}"], "display_name": name, "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))


@contextmanager
def start_server(
    tmp_path_factory: pytest.TempPathFactory, label: str, prelude: str, write_apps: Any, *options: str
) -> Iterator[AnvilServer]:
    root = tmp_path_factory.mktemp(f"{label}-root")
    write_apps(root)
    workdir = tmp_path_factory.mktemp(f"{label}-server")
    write_kernelspec(workdir, f"anvil-{label}", prelude)
    server = AnvilServer(root, workdir, f"--AnvilApp.kernel_name=anvil-{label}", "--AnvilApp.task_spares=0", *options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- a kernel of another version ------------------------------------------------------------------
def write_versioned_app(root: Path) -> None:
    write_notebook(
        root / "versioned.ipynb",
        [
            f"""
            import pathlib
            from jupyter_anvil import server

            pathlib.Path({str(root / "cells-ran")!r}).write_text("the server cells ran")

            @server.callable
            def hello():
                pathlib.Path({str(root / "call-ran")!r}).write_text("a call ran")
                return "hi"
            """
        ],
        {"kernels": {"min": 1, "max": 1}},
    )


@pytest.fixture(scope="module")
def future_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with start_server(tmp_path_factory, "future", speaking(FUTURE_VERSION), write_versioned_app) as server:
        yield server


MISMATCH = (
    f"the app's kernel speaks jupyter-anvil protocol {FUTURE_VERSION}, this server speaks "
    f"{protocol.PROTOCOL_VERSION}: install the same jupyter-anvil version in the kernel's environment"
)


def test_a_kernel_of_another_protocol_version_is_refused_with_a_clear_app_error(future_server: AnvilServer) -> None:
    app = future_server.apps()["versioned"]
    assert app["status"] == "error", app
    assert app["error"] == MISMATCH
    assert app["functions"] == [] and app["background_tasks"] == [] and app["pool"] is None
    # the start-up lines say it too
    deadline = time.monotonic() + 30
    while f"versioned: FAILED: {MISMATCH}" not in future_server.log_tail(200) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"versioned: FAILED: {MISMATCH}" in future_server.log_tail(200)


def test_nothing_reaches_a_kernel_of_another_version(future_server: AnvilServer) -> None:
    response = future_server.post("versioned", "hello", {"args": []})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "anvil.server.RuntimeUnavailableError"
    # the kernel was refused at hello: it was never sent its server cells, nor a call
    assert not (future_server.root / "cells-ran").exists()
    assert not (future_server.root / "call-ran").exists()
    # and it was shut down, not left running
    deadline = time.monotonic() + 30
    while future_server.kernel_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert future_server.kernel_processes() == []


def test_a_kernel_that_never_says_which_version_it_speaks_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with start_server(tmp_path_factory, "silent", SILENT, write_versioned_app, "--AnvilApp.load_timeout=4") as server:
        app = server.apps()["versioned"]
        assert app["status"] == "error", app
        assert app["error"] == (
            "the app's kernel did not say which jupyter-anvil protocol it speaks within 4 s (this server speaks "
            f"{protocol.PROTOCOL_VERSION}): install the same jupyter-anvil version in the kernel's environment"
        )
        assert not (server.root / "cells-ran").exists()


# -- the same version, through the same kind of kernelspec -------------------------------------------
def write_kinds_app(root: Path) -> None:
    write_notebook(
        root / "kinds.ipynb",
        [
            """
            from jupyter_anvil import server

            @server.callable
            def report():
                return "the callable"

            @server.background_task("report")
            def report_task(word):
                server.task_state["word"] = word
                return f"the task says {word}"

            @server.background_task
            def only_a_task():
                return 1

            @server.callable
            def launch(name, *args):
                return server.launch_background_task(name, *args).get_id()

            @server.callable
            def outcome(task_id):
                task = server.get_background_task(task_id)
                return [task.get_termination_status(), task.get_return_value(), task.get_state()]

            @server.callable
            def call_by_name(name):
                return server.call(name)
            """
        ],
        {"kernels": {"min": 1, "max": 1}},
    )


@pytest.fixture(scope="module")
def same_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with start_server(tmp_path_factory, "same", speaking(protocol.PROTOCOL_VERSION), write_kinds_app) as server:
        yield server


def test_a_kernel_of_the_same_version_serves_and_lists_registrations_by_kind(same_server: AnvilServer) -> None:
    app = same_server.apps()["kinds"]
    assert app["status"] == "ready", app
    assert app["functions"] == ["call_by_name", "launch", "outcome", "report"]
    assert app["background_tasks"] == ["only_a_task", "report"]
    assert same_server.call("kinds", "report") == "the callable"


def test_a_background_task_is_not_a_function(same_server: AnvilServer) -> None:
    for name in ("only_a_task", "task:only_a_task"):
        response = same_server.post("kinds", name, {"args": []})
        assert response.status_code in (403, 404), response.text
        assert response.json()["error"]["type"] in (
            "anvil.server.NoServerFunctionError",
            "anvil.server.PermissionDenied",
        )
    # nor for server code: server.call finds callables only
    for name in ("only_a_task", "task:only_a_task"):
        response = same_server.post("kinds", "call_by_name", {"args": [name]})
        assert response.json()["error"]["type"] == "anvil.server.NoServerFunctionError", response.text


def test_a_task_and_a_function_may_share_a_name(same_server: AnvilServer) -> None:
    task_id = same_server.call("kinds", "launch", "report", "hello")
    deadline = time.monotonic() + 60
    while (result := same_server.call("kinds", "outcome", task_id))[0] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result == ["completed", "the task says hello", {"word": "hello"}]
    # a function is not launched as a task
    response = same_server.post("kinds", "launch", {"args": ["launch"]})
    assert response.json()["error"]["type"] == "anvil.server.NoServerFunctionError", response.text
    assert 'No background task matching "launch"' in response.json()["error"]["message"]
