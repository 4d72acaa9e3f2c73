"""DNS rebinding (issue 13, 2.4): a page on evil.example whose name was rebound to
127.0.0.1 reaches the server with ``Host: evil.example``. Unless the server allows remote
access, the app surface refuses such requests exactly where Jupyter's own routes do; and
origins are compared by scheme, host and port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer, private_server
from notebook_files import write_notebook


def host_headers(server: AnvilServer, host: str, origin: bool = True) -> dict[str, str]:
    """What a browser sends from a page served under ``host`` (with the server's port)."""
    headers = {"Host": host}
    if origin:
        headers["Origin"] = f"http://{host}"
    return headers


def public_requests(server: AnvilServer, headers: dict[str, str]) -> dict[str, httpx.Response]:
    """One request on every public HTTP route of the app surface."""
    base = server.url
    return {
        "call": httpx.post(f"{base}anvil/apps/core/_/call/echo", json={"args": [1]}, headers=headers, timeout=60),
        "preflight": httpx.options(
            f"{base}anvil/apps/core/_/call/echo",
            headers={**headers, "Access-Control-Request-Method": "POST"},
        ),
        "cookies": httpx.post(f"{base}anvil/apps/sessions/_/cookies", json={"ticket": "x"}, headers=headers),
        "page": httpx.get(f"{base}anvil/apps/core/", headers=headers),
        "page-head": httpx.head(f"{base}anvil/apps/core/index.html", headers=headers),
        "client.js": httpx.get(f"{base}anvil/client.js", headers=headers),
    }


async def open_socket(server: AnvilServer, host: str, origin: str | None) -> Any:
    """A WebSocket handshake addressed to ``host`` (connected to the real server)."""
    return await websockets.connect(
        f"ws://{host}/anvil/apps/core/_/ws", host="127.0.0.1", port=server.port, origin=origin, open_timeout=30
    )


async def socket_status(server: AnvilServer, host: str, origin: str | None) -> int:
    try:
        socket = await open_socket(server, host, origin)
    except websockets.InvalidStatus as e:
        return int(e.response.status_code)
    async with socket:
        await socket.send(json.dumps({"type": "CALL", "id": "1", "command": "echo", "args": [1]}))
        reply = json.loads(await socket.recv())
        assert reply["response"]["args"] == [1]
    return 101


@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "evil.example", "localhost.evil.example:{port}", "10.0.0.1:{port}"]
)
async def test_a_foreign_host_is_refused_on_every_route(anvil_server: AnvilServer, host: str) -> None:
    host = host.format(port=anvil_server.port)
    for origin in (True, False):
        for route, response in public_requests(anvil_server, host_headers(anvil_server, host, origin)).items():
            assert response.status_code == 403, (route, origin, response.status_code, response.text)
            assert "access-control-allow-origin" not in response.headers, route
            if route != "page-head":
                error = response.json()["error"]
                assert error["type"] == "anvil.server.PermissionDenied", route
                assert "allow_remote_access" in error["message"] and "Traceback" not in response.text
    assert await socket_status(anvil_server, host, f"http://{host}") == 403
    assert await socket_status(anvil_server, host, None) == 403  # no Origin: refused all the same
    assert "non-local Host" in anvil_server.log_tail(400)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "127.0.0.1:{port}",
        "127.0.0.2:{port}",
        "localhost:{port}",
        "LOCALHOST:{port}",
        "[::1]:{port}",
        "0.0.0.0:{port}",
        "localhost.:{port}",
        "127.0.0.1.evil.example:{port}",
    ],
)
def test_refused_exactly_where_jupyters_own_routes_refuse(anvil_server: AnvilServer, host: str) -> None:
    host = host.format(port=anvil_server.port)
    jupyter = httpx.get(
        f"{anvil_server.url}api/status", headers={"Host": host, "Authorization": f"token {anvil_server.token}"}
    )
    ours = httpx.post(f"{anvil_server.url}anvil/apps/core/_/call/echo", json={}, headers={"Host": host}, timeout=60)
    assert jupyter.status_code in (200, 403)
    assert (ours.status_code == 403) == (jupyter.status_code == 403), (host, jupyter.status_code, ours.text)


async def test_local_names_still_work(anvil_server: AnvilServer) -> None:
    for host in (f"127.0.0.1:{anvil_server.port}", f"localhost:{anvil_server.port}"):
        responses = public_requests(anvil_server, host_headers(anvil_server, host))
        assert responses["call"].status_code == 200 and responses["call"].json()["response"]["args"] == [1]
        assert responses["page"].status_code == 200 and responses["client.js"].status_code == 200
        assert responses["cookies"].status_code == 400  # reached the handler: the ticket is unknown
        assert await socket_status(anvil_server, host, f"http://{host}") == 101
        assert await socket_status(anvil_server, host, None) == 101


async def test_origins_are_compared_by_scheme_host_and_port(anvil_server: AnvilServer) -> None:
    host = f"127.0.0.1:{anvil_server.port}"
    for origin in (
        f"https://{host}",
        "http://127.0.0.1",
        f"http://127.0.0.1:{anvil_server.port + 1}",
        f"ws://x.{host}",
    ):
        response = httpx.post(
            f"{anvil_server.url}anvil/apps/core/_/call/echo", json={}, headers={"Origin": origin}, timeout=60
        )
        assert response.status_code == 403, (origin, response.text)
        assert response.json()["error"]["type"] == "anvil.server.PermissionDenied"
        assert await socket_status(anvil_server, host, origin) == 403, origin
    same = httpx.post(
        f"{anvil_server.url}anvil/apps/core/_/call/echo", json={}, headers={"Origin": f"HTTP://{host}"}, timeout=60
    )
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers


# -- a server that allows remote access ------------------------------------------------------


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    def write(root: Path) -> None:
        write_notebook(
            root / "core.ipynb",
            ["from jupyter_anvil import server\n\n@server.callable\ndef echo(*a):\n    return {'args': list(a)}\n"],
            {"kernels": {"min": 1, "max": 1}},
        )
        (root / "core").mkdir()
        (root / "core" / "index.html").write_text("<p>remote</p>")
        write_notebook(
            root / "sessions.ipynb", ["from jupyter_anvil import server\n"], {"kernels": {"min": 1, "max": 1}}
        )

    with private_server(tmp_path_factory, "remote", write, "--ServerApp.allow_remote_access=True") as server:
        server.wait_until_loaded(("core", "sessions"))
        yield server


async def test_with_remote_access_allowed_any_host_works(remote_server: AnvilServer) -> None:
    host = f"app.example.org:{remote_server.port}"
    responses = public_requests(remote_server, host_headers(remote_server, host))
    assert responses["call"].status_code == 200 and responses["call"].json()["response"] == {"args": [1]}
    assert responses["page"].status_code == 200 and "remote" in responses["page"].text
    assert responses["client.js"].status_code == 200 and responses["cookies"].status_code == 400
    assert await socket_status(remote_server, host, f"http://{host}") == 101
    # still one origin: a page elsewhere cannot call
    assert await socket_status(remote_server, host, "http://evil.example") == 403
    other = httpx.post(
        f"{remote_server.url}anvil/apps/core/_/call/echo", json={}, headers={"Host": host, "Origin": "https://" + host}
    )
    assert other.status_code == 403


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://good.example", 200),
        ("http://good.example:80", 200),
        ("http://GOOD.example", 200),
        ("https://good.example", 403),
        ("http://good.example:8080", 403),
        ("http://good.example.evil.example", 403),
        ("null", 403),
        ("good.example", 403),
    ],
)
def test_listed_origins_are_compared_by_scheme_host_and_port(
    anvil_server: AnvilServer, origin: str, status: int
) -> None:
    # the partner app lists http://good.example
    response = anvil_server.post("partner", "hello", {}, headers={"Origin": origin})
    assert response.status_code == status, (origin, response.text)
