"""What a kernel is handed: no credential of the server's in its environment, and a
connection file only its owner can read (the key in it is all a kernel needs)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import AnvilServer, private_server
from notebook_files import write_notebook

from jupyter_anvil.host.app_kernel import SECRET_ENV

#: credentials a server may be started with, by their real names
SECRETS = {
    "JUPYTER_TOKEN": "secret-jupyter-token",
    "JUPYTER_PASSWORD": "secret-password",
    "JUPYTERHUB_API_TOKEN": "secret-hub-token",
    "JPY_API_TOKEN": "secret-old-hub-token",
    "JUPYTER_GATEWAY_AUTH_TOKEN": "secret-gateway-token",
    "JUPYTER_GATEWAY_HTTP_PWD": "secret-gateway-password",
    "JUPYTER_ANVIL_SMTP_PASSWORD": "secret-relay-password",
}
HARMLESS = {"ANVIL_TEST_SETTING": "kernels see this"}


def write_apps(root: Path) -> None:
    write_notebook(
        root / "envapp.ipynb",
        [
            """
            import os
            from jupyter_anvil import server

            @server.callable
            def environment():
                return dict(os.environ)
            """
        ],
        {"kernels": {"min": 1, "max": 1}},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    saved = dict(os.environ)
    os.environ.update({**SECRETS, **HARMLESS})  # the server process inherits them
    try:
        with private_server(tmp_path_factory, "kernel-env", write_apps) as started:
            started.wait_until_loaded(("envapp",))
            yield started
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_server_secrets_are_all_known() -> None:
    assert set(SECRETS) <= SECRET_ENV


def test_a_kernel_sees_none_of_the_servers_credentials(server: AnvilServer) -> None:
    environment = server.call("envapp", "environment")
    assert environment["ANVIL_TEST_SETTING"] == "kernels see this"  # the rest of the environment is passed
    leaked = {name for name in SECRET_ENV if name in environment}
    assert not leaked
    values = set(SECRETS.values()) | {"must-not-reach-kernels", server.token}
    assert not values & set(environment.values())


def test_connection_files_are_private_to_the_owner(server: AnvilServer) -> None:
    server.call("envapp", "environment")
    files = list(Path(server.workdir, "jupyter_runtime_dir").glob("kernel-*.json"))
    assert files, "the app's kernel has a connection file"
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"
