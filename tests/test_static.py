"""The browser client and each app's static front end."""

from __future__ import annotations

import httpx
from conftest import AnvilServer


def test_client_js_is_an_es_module(anvil_server: AnvilServer) -> None:
    response = httpx.get(f"{anvil_server.url}anvil/client.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "export" in response.text


def test_an_app_serves_the_folder_beside_its_notebook(anvil_server: AnvilServer) -> None:
    page = httpx.get(f"{anvil_server.url}anvil/apps/core/")
    assert page.status_code == 200 and "core app" in page.text
    assert httpx.get(f"{anvil_server.url}anvil/apps/core/index.html").text == page.text
    assert httpx.get(f"{anvil_server.url}anvil/apps/hello/").status_code == 200


def test_metadata_names_the_static_folder(anvil_server: AnvilServer) -> None:
    assert "from metadata.static" in httpx.get(f"{anvil_server.url}anvil/apps/elsewhere/").text


def test_never_a_notebook_a_dotfile_or_anything_outside(anvil_server: AnvilServer) -> None:
    base = f"{anvil_server.url}anvil/apps/core/"
    for path in (
        ".secret",
        "copy.ipynb",
        "../outside.txt",
        "%2e%2e/outside.txt",
        "..%2fcore.ipynb",
        "../core.ipynb",
        "nothing-here.js",
    ):
        response = httpx.get(base + path)
        assert response.status_code in (403, 404), (path, response.status_code)
        assert "dotfile" not in response.text and "outside the static" not in response.text
    assert httpx.get(f"{anvil_server.url}anvil/apps/no_such_app/").status_code == 404
    # an app with no static folder serves nothing
    assert httpx.get(f"{anvil_server.url}anvil/apps/timeouts/").status_code == 404
