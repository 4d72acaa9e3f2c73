"""A real Jupyter Enterprise Gateway for tests, on loopback, from its own virtual environment.

Enterprise Gateway 3.x pins ``jupyter_server<2`` and ``jupyter_client<7``, so it cannot live
in ours: it gets a venv of its own, made once under ``~/.cache/jupyter-anvil-tests/eg-venv``.
Its one kernel spec (in a temporary JUPYTER_PATH) runs OUR Python, which has jupyter_anvil.
If the venv cannot be made the tests are skipped, unless ``ANVIL_REQUIRE_GATEWAY=1``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

VENV = Path(os.environ.get("ANVIL_EG_VENV", Path.home() / ".cache" / "jupyter-anvil-tests" / "eg-venv"))
KERNEL_NAME = "anvil-python"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayUnavailable(Exception):
    """Enterprise Gateway's own venv is missing and could not be made."""


def find_or_make_program() -> Path:
    """The venv's ``jupyter-enterprisegateway``, made if missing (bench/gateway.py uses it too)."""
    program = VENV / "bin" / "jupyter-enterprisegateway"
    if program.exists():
        return program
    try:
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "jupyter_enterprise_gateway"], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise GatewayUnavailable(f"could not make Enterprise Gateway's own venv at {VENV}: {e}") from e
    return program


def gateway_program() -> Path:
    """:func:`find_or_make_program`, or the test is skipped (failed if the gateway is required)."""
    try:
        return find_or_make_program()
    except GatewayUnavailable as e:
        import pytest  # only here: the benchmarks import this module without pytest

        if os.environ.get("ANVIL_REQUIRE_GATEWAY") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


class Gateway:
    """``jupyter enterprisegateway`` on a loopback port, with its local process proxy."""

    def __init__(self, workdir: Path, start_delay_file: Path | None = None) -> None:
        """``start_delay_file``: each kernel waits the seconds it holds (read as it starts)
        before it runs: a slow gateway, made slower or faster while it runs."""
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        spec_dir = workdir / "jupyter-path" / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "display_name": "Python with jupyter_anvil",
            "language": "python",
            "argv": [
                *self._delay(start_delay_file),
                sys.executable,
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
            ],
            "metadata": {
                "process_proxy": {
                    "class_name": "enterprise_gateway.services.processproxies.processproxy.LocalProcessProxy"
                }
            },
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))

    @staticmethod
    def _delay(start_delay_file: Path | None) -> list[str]:
        """A shell that sleeps what the file says, then runs the rest of the command line."""
        if start_delay_file is None:
            return []
        script = f'sleep "$(cat {str(start_delay_file)!r} 2>/dev/null || echo 0)"; exec "$@"'
        return ["/bin/sh", "-c", script, "delayed-kernel"]

    def start(self) -> None:
        program = gateway_program()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # ours (the worktree) is for the kernels' Python, set below
        env.update(
            JUPYTER_PATH=str(self.workdir / "jupyter-path"),
            JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),
            JUPYTER_DATA_DIR=str(self.workdir / "data"),
            JUPYTER_CONFIG_DIR=str(self.workdir / "config"),
            EG_UNAUTHORIZED_USERS="nobody-in-particular",
        )
        # kernels run our Python: they need the worktree's jupyter_anvil on their path too
        kernel_path = os.environ.get("PYTHONPATH", "")
        command = [
            str(program), "--ip=127.0.0.1", f"--port={self.port}",
            f"--EnterpriseGatewayApp.default_kernel_name={KERNEL_NAME}",
            f"--EnterpriseGatewayApp.allowed_kernels=['{KERNEL_NAME}']",
            "--EnterpriseGatewayApp.list_kernels=True",  # the tests look for their kernels there
        ]  # fmt: skip
        if kernel_path:
            # the spec's env is what the local proxy gives the kernel
            spec_file = self.workdir / "jupyter-path" / "kernels" / KERNEL_NAME / "kernel.json"
            spec = json.loads(spec_file.read_text())
            spec["env"] = {"PYTHONPATH": kernel_path}
            spec_file.write_text(json.dumps(spec))
        self.log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_tail()
            try:
                if httpx.get(f"{self.url}/api/kernelspecs", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"Enterprise Gateway did not answer in 60 s\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.log_file.close()
        self.process = None

    def kernels(self) -> list[dict[str, object]]:
        response = httpx.get(f"{self.url}/api/kernels", timeout=10)
        response.raise_for_status()
        return list(response.json())

    def kernelspecs(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/api/kernelspecs", timeout=10).json())

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
