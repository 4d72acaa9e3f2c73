"""The browser client and each app's static front end."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from conftest import AnvilServer, private_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notebook_files import write_notebook


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


# -- the path is resolved first, then judged (issue 13, 2.2 and 2.7) ------------------------
# An app whose static folder is the notebook's own folder ("static": "."), the case where
# a spelling slip would serve the notebook, server-cell secrets included.

SECRET = "s3cr3t-from-a-server-cell"


def write_site(root: Path) -> None:
    site = root / "site"
    write_notebook(
        site / "shop.ipynb",
        [f"from jupyter_anvil import server\nAPI_KEY = {SECRET!r}\n"],
        {"static": ".", "kernels": {"min": 1, "max": 1}},
    )
    (site / "index.html").write_text("<p>the shop</p>")
    (site / "page.html").write_text("<p>a page</p>")
    (site / "sub").mkdir()
    (site / "sub" / "index.html").write_text("<p>sub index</p>")
    (site / "sub" / "page.html").write_text("<p>sub page</p>")
    (site / ".ipynb_checkpoints").mkdir()
    (site / ".ipynb_checkpoints" / "shop-checkpoint.ipynb").write_text(SECRET)
    (site / ".ipynb_checkpoints" / "index.html").write_text(SECRET)
    (site / ".env").write_text(SECRET)
    (site / "sub" / ".hidden").mkdir()
    (site / "sub" / ".hidden" / "x.txt").write_text(SECRET)
    (site / "UPPER.IPYNB").write_text(SECRET)
    (site / "other.Ipynb").write_text(SECRET)
    (root / "outside.txt").write_text(SECRET)
    (root / "outside").mkdir()
    (root / "outside" / "index.html").write_text(SECRET)
    (site / "link-out.txt").symlink_to(root / "outside.txt")
    (site / "link-dir-out").symlink_to(root / "outside")
    (site / "link-notebook.txt").symlink_to(site / "shop.ipynb")
    (site / "link-checkpoints").symlink_to(site / ".ipynb_checkpoints")
    (site / "link-inside.html").symlink_to(site / "page.html")
    (site / "linked-index").mkdir()
    (site / "linked-index" / "index.html").symlink_to(root / "outside.txt")


@pytest.fixture(scope="module")
def site_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(
        tmp_path_factory,
        "static",
        write_site,
        "--ServerApp.local_hostnames=localhost",
        "--ServerApp.local_hostnames=app.test",
    ) as server:
        server.wait_until_loaded(("site.shop",))
        yield server


def raw_get(
    server: AnvilServer, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """A request with the path sent exactly as written (httpx would normalise ``..``)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        conn.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


REFUSED = [
    "shop.ipynb",
    "shop.ipynb/",
    "shop.ipynb//",
    "shop.ipynb%2f",
    "shop.ipynb%2F",
    "shop.ipynb%5c",
    "shop.ipynb/.",
    "shop.ipynb%2f.",
    "shop.IPYNB",
    "SHOP.IPYNB",
    "shop.ipynb.",
    "shop.ipynb%20",
    "shop%2eipynb",
    "%73hop.ipynb",
    "./shop.ipynb",
    ".%2fshop.ipynb",
    "sub/../shop.ipynb",
    "sub%2f..%2fshop.ipynb",
    "sub%5c..%5cshop.ipynb",
    "sub/..%2fshop.ipynb",
    "/shop.ipynb",
    "//shop.ipynb",
    "UPPER.IPYNB",
    "other.Ipynb",
    ".ipynb_checkpoints/shop-checkpoint.ipynb",
    ".ipynb_checkpoints/index.html",
    ".ipynb_checkpoints/",
    "%2eipynb_checkpoints/index.html",
    "sub/../.ipynb_checkpoints/index.html",
    ".env",
    "%2eenv",
    ".env/",
    "sub/.hidden/x.txt",
    "sub%2f.hidden%2fx.txt",
    "../outside.txt",
    "..%2foutside.txt",
    "%2e%2e/outside.txt",
    "%2e%2e%2foutside.txt",
    "..%5coutside.txt",
    "..",
    "../",
    "link-out.txt",
    "link-dir-out/",
    "link-dir-out/index.html",
    "link-notebook.txt",
    "link-checkpoints/index.html",
    "linked-index/",
    "page.html/",
    "page.html//",
    "page.html%2f",
    "index.html/",
    "no-such-file.html",
    "sub/../page.html",  # browsers resolve dot steps before sending: only a crafted request has one
]


@pytest.mark.parametrize("path", REFUSED)
def test_no_spelling_reaches_a_notebook_a_dotfile_or_outside(site_server: AnvilServer, path: str) -> None:
    for method in ("GET", "HEAD"):
        status, body = raw_get(site_server, f"/anvil/apps/site.shop/{path}", method)
        assert status == 404, (path, method, status, body[:200])
        assert SECRET.encode() not in body and b"Traceback" not in body


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("a%00b.html", 400),
        ("shop.ipynb%00", 400),
        ("%00", 400),
        ("sub/%00/", 400),
        ("a%0ab", 400),
        ("%ff%fe", 400),
        ("a" * 2000, 400),
    ],
)
def test_malformed_paths_are_the_callers_fault(site_server: AnvilServer, path: str, status: int) -> None:
    got, body = raw_get(site_server, f"/anvil/apps/site.shop/{path}")
    assert got == status, (path, got, body[:300])
    assert body.startswith(b"{") and b"Traceback" not in body
    if "%00" in path:
        assert b"NUL byte" in body


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("", "the shop"),
        ("index.html", "the shop"),
        ("page.html", "a page"),
        ("sub/", "sub index"),
        ("sub/page.html", "sub page"),
        ("sub%2fpage.html", "sub page"),
        ("sub//page.html", "sub page"),
        ("link-inside.html", "a page"),
    ],
)
def test_what_the_folder_holds_is_served(site_server: AnvilServer, path: str, text: str) -> None:
    status, body = raw_get(site_server, f"/anvil/apps/site.shop/{path}")
    assert status == 200 and text in body.decode(), (path, status, body[:200])


def test_a_folder_without_its_slash_is_redirected(site_server: AnvilServer) -> None:
    response = httpx.get(f"{site_server.url}anvil/apps/site.shop/sub?x=1")
    assert response.status_code in (301, 302) and response.headers["location"] == "/anvil/apps/site.shop/sub/?x=1"
    assert httpx.head(f"{site_server.url}anvil/apps/site.shop/page.html").status_code == 200


# -- a page edited while the server runs (issue 13, 4.6) ----------------------------------------


def test_an_edited_page_gets_a_new_etag_at_once(site_server: AnvilServer) -> None:
    page = site_server.root / "site" / "live.html"
    url = f"{site_server.url}anvil/apps/site.shop/live.html"
    page.write_text("<p>version 1</p>")
    first = httpx.get(url)
    assert first.status_code == 200 and "version 1" in first.text
    etag = first.headers["etag"]
    unchanged = httpx.get(url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304  # caching still works
    for version in range(2, 5):  # same size, same second: only the content differs
        page.write_text(f"<p>version {version}</p>")
        edited = httpx.get(url, headers={"If-None-Match": etag, "If-Modified-Since": first.headers["last-modified"]})
        assert edited.status_code == 200 and f"version {version}" in edited.text
        assert edited.headers["etag"] != etag
        etag = edited.headers["etag"]
        assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_an_old_file_keeps_its_etag_and_a_replaced_one_changes(site_server: AnvilServer) -> None:
    page = site_server.root / "site" / "old.html"
    page.write_text("<p>old</p>")
    stamp = time.time() - 3600
    os.utime(page, (stamp, stamp))
    url = f"{site_server.url}anvil/apps/site.shop/old.html"
    etag = httpx.get(url).headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304
    replacement = page.with_name(".old.tmp")
    replacement.write_text("<p>new</p>")
    os.utime(replacement, (stamp, stamp))  # even with the very same times
    replacement.replace(page)
    again = httpx.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 200 and "new" in again.text


def test_the_client_script_follows_edits_too(site_server: AnvilServer) -> None:
    response = httpx.get(f"{site_server.url}anvil/client.js")
    assert response.status_code == 200 and response.headers["etag"]
    assert (
        httpx.get(f"{site_server.url}anvil/client.js", headers={"If-None-Match": response.headers["etag"]}).status_code
        == 304
    )


def test_names_in_local_hostnames_are_served_and_others_refused(site_server: AnvilServer) -> None:
    url = f"{site_server.url}anvil/apps/site.shop/"
    assert httpx.get(url, headers={"Host": f"app.test:{site_server.port}"}).text == "<p>the shop</p>"
    refused = httpx.get(url, headers={"Host": f"other.test:{site_server.port}"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "anvil.server.PermissionDenied"


# -- odd input never gets a 500 or a traceback -------------------------------------------------

PIECES = ["/", "//", "\\", ".", "..", "%2f", "%2F", "%5c", "%2e", "%00", "%ff", "%0a", "%20", "%25", "~", ";", "?", "#"]
NAMES = [
    "shop",
    "ipynb",
    ".ipynb",
    "IPYNB",
    "index.html",
    "sub",
    "page.html",
    ".env",
    ".ipynb_checkpoints",
    "link-out.txt",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.sampled_from(PIECES + NAMES) | st.text(max_size=6), max_size=8),
    method=st.sampled_from(["GET", "HEAD"]),
    range_header=st.none() | st.sampled_from(["bytes=0-0", "bytes=-1", "bytes=5-1", "bytes=abc", "bytes=99999999-"]),
)
def test_odd_static_paths_never_get_a_server_error(
    site_server: AnvilServer, steps: list[str], method: str, range_header: str | None
) -> None:
    path = "".join(steps)
    target = "/anvil/apps/site.shop/" + quote(path, safe="/%\\;~.")
    headers = {"Range": range_header} if range_header else {}
    status, body = raw_get(site_server, target, method, headers)
    assert status < 500, (target, status, body[:300])
    assert SECRET.encode() not in body and b"Traceback" not in body
    if status >= 400 and status != 416 and method == "GET":  # 416: an empty body, as RFC 9110 allows
        assert body.startswith(b"{"), (target, status, body[:300])


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_refused_without_a_traceback(site_server: AnvilServer, method: str) -> None:
    status, body = raw_get(site_server, "/anvil/apps/site.shop/index.html", method)
    assert status == 405 and b"Traceback" not in body
