"""The browser client and each app's static front end.

An app's static folder may be the folder that holds notebooks (``metadata.jupyter_anvil.
static`` can name any folder under the root), so what is served is decided on the path
as resolved on disk, never on the spelling of the URL: no notebook, no dotfile or
dot-folder (``.ipynb_checkpoints``, ``.git``, ...), nothing outside the folder, whether
the URL says ``x.ipynb``, ``x.IPYNB``, ``x.ipynb/``, ``x.ipynb%2f`` or goes through a
symlink.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from tornado import web

from ... import errors
from .base import PublicHandler, services
from .callers import host_refusal

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
INDEX = "index.html"
#: what a browser (and tornado's decoding of ``%2f`` and ``%5c``) treats as a separator
SEPARATORS = re.compile(r"[/\\]")
#: control characters (NUL above all) are in no file name we serve
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH = 1024
#: the browser client's files: ``client.js`` and its modules in ``client/`` (no other
#: file of the package folder, whatever the URL says)
CLIENT_MODULE = re.compile(r"client\.js|client/[a-z][a-z_]*\.js")
#: what :func:`resolve` answers for a folder asked for without its trailing slash
ADD_SLASH = ""


class _PublicStaticHandler(PublicHandler, web.StaticFileHandler):
    """Static files on the public surface: the server's host check, errors as Anvil error
    objects (never a traceback), and ETags that change as soon as a file does."""

    def prepare(self) -> None:
        refusal = host_refusal(self)
        if refusal is not None:
            self.write_anvil_error(refusal)

    def compute_etag(self) -> str | None:
        # tornado caches a file's hash per path for the life of the process: an edited page
        # would keep its old ETag and a conditional request would get 304 and stale content
        assert self.absolute_path is not None
        return f'"{content_etag(self.absolute_path)}"'

    def should_return_304(self) -> bool:
        # only an exact ETag: If-Modified-Since alone has one-second resolution, too coarse
        # for a page saved twice in a second (the full reply is always correct)
        if self.request.headers.get("If-None-Match"):
            return self.check_etag_header()
        return False


class ClientScriptHandler(_PublicStaticHandler):
    """``anvil/client.js``, the ES module browsers import, and the modules it imports from
    ``anvil/client/``: only names :data:`CLIENT_MODULE` allows, found by :func:`resolve`
    (no dotfile, nothing outside the folder), never anything else of the package."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(path=str(STATIC_DIR))

    async def get(self, path: str, include_body: bool = True) -> None:  # HEAD comes here too
        problem = path_problem(path)
        if problem is not None:
            self.write_anvil_error(errors.SerializationError(problem))
            return
        if not CLIENT_MODULE.fullmatch(path) or resolve(str(STATIC_DIR), path) != path:
            raise web.HTTPError(404)
        await super().get(path, include_body)

    def get_content_type(self) -> str:
        return "text/javascript; charset=utf-8"

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        # public code: pages on other origins import it (whether they may call is the app's say)
        self.set_header("Access-Control-Allow-Origin", "*")


class AppStaticHandler(_PublicStaticHandler):
    """``anvil/apps/<app>/<path>``: files from the app's static folder, never a
    notebook, a dotfile, or anything outside the folder."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(path="/nonexistent", default_filename=INDEX)

    def head(self, app: str, path: str) -> Awaitable[None]:  # type: ignore[override]
        return self.get(app, path, include_body=False)

    async def get(self, app: str, path: str, include_body: bool = True) -> None:  # type: ignore[override]
        problem = path_problem(path)
        if problem is not None:
            self.write_anvil_error(errors.SerializationError(problem))
            return
        served = await services(self).apps.get(app)
        if served is None or served.spec is None:
            raise web.HTTPError(404)
        root = os.path.realpath(served.spec.static_dir)
        if not os.path.isdir(root):
            raise web.HTTPError(404)
        found = resolve(root, path)
        if found is None:
            raise web.HTTPError(404)
        if found == ADD_SLASH:
            # a folder asked for without its trailing slash: relative links in its index
            # page need the slash (tornado's behaviour, which we bypass)
            query = f"?{self.request.query}" if self.request.query else ""
            self.redirect(self.request.path + "/" + query)
            return
        self.root = root
        try:
            await super().get(found, include_body)
        except OSError:
            if self._headers_written:
                raise
            raise web.HTTPError(404) from None  # deleted or replaced while we looked at it

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        # public code: pages on other origins import it (whether they may call is the app's say)
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("X-Content-Type-Options", "nosniff")


def path_problem(path: str) -> str | None:
    """What makes a requested path malformed (the caller's fault: a 400), or None."""
    if "\x00" in path:
        return "The file path contains a NUL byte"
    if CONTROL.search(path):
        return "The file path contains a control character"
    if len(path) > MAX_PATH:
        return f"The file path is longer than {MAX_PATH} characters"
    return None


def refused_name(name: str) -> bool:
    """A path step never served: a dotfile or dot-folder (``..`` too) or a notebook in any
    case (``.IPYNB``), also with trailing dots or spaces some file systems ignore."""
    return name.startswith(".") or name.rstrip(". ").lower().endswith(".ipynb")


def resolve(root: str, requested: str) -> str | None:
    """The file to serve for ``requested`` (already percent-decoded) as a ``/``-separated
    path relative to ``root`` with every symlink resolved; ``ADD_SLASH`` for a folder asked
    for without a trailing slash; ``None`` when there is nothing that may be served.

    ``root`` must itself be resolved (``os.path.realpath``).
    """
    steps = [step for step in SEPARATORS.split(requested) if step]
    if any(refused_name(step) for step in steps):
        return None
    wants_folder = requested == "" or bool(SEPARATORS.fullmatch(requested[-1]))
    target = os.path.realpath(os.path.join(root, *steps))
    if not _servable(root, target):
        return None
    if os.path.isdir(target):
        if not wants_folder:
            return ADD_SLASH
        target = os.path.realpath(os.path.join(target, INDEX))  # the index may be a symlink too
        if not _servable(root, target):
            return None
    elif wants_folder:
        return None  # "page.html/" names a folder, and a file is none
    if not os.path.isfile(target):
        return None
    return Path(os.path.relpath(target, root)).as_posix()


def _servable(root: str, target: str) -> bool:
    """``target`` (resolved) is inside ``root`` and none of its steps there is refused."""
    if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
        return False
    relative = os.path.relpath(target, root)
    return relative == "." or not any(refused_name(step) for step in Path(relative).parts)


# -- ETags --------------------------------------------------------------------------------
ETAGS_KEPT = 1024
#: a file changed this recently may change again within the same mtime tick: hash it afresh
RACY_SECONDS = 2.0
_etags: OrderedDict[tuple[str, int, int, int, int], str] = OrderedDict()


def content_etag(path: str) -> str:
    """A hash of the file's content, cached while its inode, size and times stay the same
    (bounded: the least recently used entries go first)."""
    stat = os.stat(path)
    key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    cached = _etags.get(key)
    if cached is not None:
        _etags.move_to_end(key)
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    etag = digest.hexdigest()
    if time.time() - stat.st_mtime > RACY_SECONDS:
        _etags[key] = etag
        while len(_etags) > ETAGS_KEPT:
            _etags.popitem(last=False)
    return etag
