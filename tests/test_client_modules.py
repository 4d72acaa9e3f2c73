"""The browser client as ES modules: ``anvil/client.js`` and the modules it imports from
``anvil/client/``, served as they are (no build step), and nothing else of the package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import AnvilServer, private_server
from test_static import raw_get

import jupyter_anvil

STATIC = Path(jupyter_anvil.__file__).resolve().parent / "static"
#: a static or dynamic import of another module by a relative URL
RELATIVE_IMPORT = re.compile(r"""(?:from|import)\s*\(?\s*["'](\.{1,2}/[^"']+)["']""")
#: what client.js exports (what it exported before it was split into modules, and the
#: offline API of issue 18): pages import these names
EXPORTS = [
    "AnvilError",
    "AnvilServer",
    "AppOfflineError",
    "QueuedCall",
    "Task",
    "anvilDate",
    "isAnvilDate",
    "kwargs",
    "localStore",
    "portable",
    "portableTypeName",
    "server",
]


def client_modules() -> list[str]:
    """client.js and every module it reaches by relative imports, as paths under static/."""
    found: list[str] = []
    todo = ["client.js"]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.append(path)
        text = (STATIC / path).read_text(encoding="utf-8")
        for spec in RELATIVE_IMPORT.findall(text):
            target = (STATIC / path).parent / spec
            todo.append(Path(target).resolve().relative_to(STATIC).as_posix())
    return sorted(found)


def test_the_modules_are_the_files_of_the_client_folder() -> None:
    modules = client_modules()
    assert "client/codec.js" in modules and "client/transport.js" in modules
    # every module is reached from client.js, and every import names a file that exists
    assert sorted(["client.js", *(f"client/{p.name}" for p in (STATIC / "client").glob("*.js"))]) == modules


@pytest.mark.parametrize("path", client_modules())
def test_each_module_is_served_as_javascript(anvil_server: AnvilServer, path: str) -> None:
    response = httpx.get(f"{anvil_server.url}anvil/{path}", headers={"Origin": "http://elsewhere.test"})
    assert response.status_code == 200, (path, response.status_code, response.text[:200])
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"]
    assert response.content == (STATIC / path).read_bytes()
    assert httpx.head(f"{anvil_server.url}anvil/{path}").status_code == 200
    again = httpx.get(f"{anvil_server.url}anvil/{path}", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_the_modules_follow_the_host_check(anvil_server: AnvilServer) -> None:
    refused = httpx.get(f"{anvil_server.url}anvil/client/codec.js", headers={"Host": f"evil.test:{anvil_server.port}"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "anvil.server.PermissionDenied"


HOSTILE = [
    "client/nothing.js",
    "client/codec.py",
    "client/Codec.js",
    "client/CODEC.JS",
    "client/.codec.js",
    "client/codec.js/",
    "client/codec.js%2f",
    "client/codec.js.",
    "client/codec.js%20",
    "client//codec.js",
    "client/./codec.js",
    "client/../client.js",
    "client/%2e%2e/client.js",
    "client/..%2fclient.js",
    "client/..%5cclient.js",
    "client/../__init__.py",
    "client/../../__init__.py",
    "client/%2e%2e/%2e%2e/__init__.py",
    "client/..%2f..%2f__init__.py",
    "client/../../host/extension.py",
    "client/%2e%2e%2f%2e%2e%2fhost%2fextension.py",
    "client/..%2f..%2fhost%2fhandlers%2fstatic.py",
    "client/",
    "client/..",
    "client/%2e%2e",
    "client/codec",
    "client%2fcodec.js",
    "client.js%2f..%2f__init__.py",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_nothing_else_of_the_package_is_served(anvil_server: AnvilServer, path: str) -> None:
    for method in ("GET", "HEAD"):
        status, body = raw_get(anvil_server, f"/anvil/{path}", method)
        assert status == 404, (path, method, status, body[:200])
        assert b"Traceback" not in body and b"import " not in body and b"from __future__" not in body


@pytest.mark.parametrize("path", ["client/codec.js%00", "client/%00", "client/a%0ab.js", "client/" + "a" * 2000])
def test_malformed_module_paths_are_the_callers_fault(anvil_server: AnvilServer, path: str) -> None:
    status, body = raw_get(anvil_server, f"/anvil/{path}")
    assert status == 400, (path, status, body[:200])
    assert body.startswith(b"{") and b"Traceback" not in body


def test_with_apps_off_the_modules_are_not_served(tmp_path_factory: pytest.TempPathFactory) -> None:
    with private_server(tmp_path_factory, "apps-off", lambda root: None, "--AnvilApp.serve_apps=False") as server:
        for path in ("client.js", "client/codec.js", "client/nothing.js"):
            response = httpx.get(f"{server.url}anvil/{path}")
            assert response.status_code == 404, path
            assert "serve_apps=False" in response.json()["error"]["message"], path


# -- in a browser ----------------------------------------------------------------------


@pytest.fixture
def page(anvil_server: AnvilServer, browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    response = page.goto(f"{anvil_server.url}anvil/apps/hello/console.html")
    assert response is not None and response.status == 200
    yield page
    context.close()


def test_client_js_exports_what_it_always_did(anvil_server: AnvilServer, page: Any) -> None:
    names = page.evaluate(
        """async (url) => Object.keys(await import(url)).sort()""", f"{anvil_server.url}anvil/client.js"
    )
    assert names == EXPORTS


def test_a_task_from_the_server_is_a_task_object(anvil_server: AnvilServer, page: Any) -> None:
    """tasks.js teaches the codec the Task value type as client.js loads: a reply's task
    decodes to a Task, and a Task encodes back as a task."""
    got = page.evaluate(
        """async (url) => {
            const {Task, portableTypeName} = await import(url);
            const codec = await import(new URL("client/codec.js", url).href);
            const reply = {response: {id: "a".repeat(25), name: "job"},
                           objects: [{type: ["ValueType"], path: ["response"],
                                      typeName: "anvil.private.BackgroundTask"}]};
            const task = codec.decodeMessage(reply, null, null).response;
            const {objects} = codec.encodeCall([task]);
            return {isTask: task instanceof Task, name: task.getTaskName(), type: portableTypeName(task), objects};
        }""",
        f"{anvil_server.url}anvil/client.js",
    )
    assert got == {
        "isTask": True,
        "name": "job",
        "type": "anvil.private.BackgroundTask",
        "objects": [{"type": ["ValueType"], "path": ["args", 0], "typeName": "anvil.private.BackgroundTask"}],
    }
