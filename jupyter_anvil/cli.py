"""``jupyter anvil [ROOT] [options]``: a Jupyter server that serves ROOT's apps."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path

USAGE = "jupyter anvil [ROOT] [options]"

# The Jupyter Server options a user of `jupyter anvil` reaches for first (all of them: --help-all).
SERVER_OPTIONS = """\
--port=<Int>
    Port to listen on (default: 8888, or the next free one; env: JUPYTER_PORT).
    Equivalent to: [--ServerApp.port]
--ip=<Unicode>
    Address to listen on (default: localhost; 0.0.0.0 for every interface).
    Equivalent to: [--ServerApp.ip]
--IdentityProvider.token=<Unicode>
    Token of Jupyter's own routes and of the admin API (anvil/api/...); default: a
    new random one, printed at start. App calls and pages need no token.
--ServerApp.allow_remote_access=<Bool>
    Answer requests whose Host header is not a local name (default: False, so a
    DNS-rebinding page cannot reach the server; set it behind a proxy).
--ServerApp.base_url=<Unicode>
    The URL prefix of everything served (default: /)."""


def main(argv: list[str] | None = None) -> None:
    """Start a Jupyter server rooted at ROOT (default: here) serving its apps."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["rotate-cookie-key"]:
        if any(a.startswith("-") for a in args[1:]):
            print(inspect.cleandoc(rotate_cookie_key.__doc__ or ""))
            return
        rotate_cookie_key(args[1:])
        return
    before_dashdash = args[: args.index("--")] if "--" in args else args
    if any(a in ("-h", "--help") for a in before_dashdash) and "--help-all" not in before_dashdash:
        print(help_text())
        return
    root, args = split_root(args)
    if root is not None and not any(a.startswith("--ServerApp.root_dir") for a in args):
        if not os.path.isdir(root):
            sys.exit(f"jupyter anvil: {root!r} is not a folder (usage: {USAGE})")
        args.append(f"--ServerApp.root_dir={os.path.abspath(root)}")
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not any("allow_root" in a or a == "--allow-root" for a in args):
        # containers and CI run as root; serving apps there is the point, so say it and go on
        print("[jupyter-anvil] running as root (pass --ServerApp.allow_root=False to refuse)", file=sys.stderr)
        args.append("--ServerApp.allow_root=True")
    if not any("open_browser" in a or a in ("--browser", "--no-browser") for a in args):
        args.insert(0, "--ServerApp.open_browser=False")  # apps are for their pages and clients, not a browser tab
    logging.getLogger("ServerApp").addFilter(_no_browser_file_hint)
    from .host.extension import AnvilApp

    AnvilApp.launch_instance(args)  # type: ignore[no-untyped-call]


def split_root(args: list[str]) -> tuple[str | None, list[str]]:
    """ROOT (the first argument that is neither an option nor an option's value) and the
    other arguments: ``--port 8900 notebooks/`` is as good as ``notebooks/ --port=8900``."""
    from jupyter_server.serverapp import aliases

    rest: list[str] = []
    root = None
    expects_value = False
    for arg in args:
        if expects_value:
            rest.append(arg)
            expects_value = False
        elif arg.startswith("-"):
            rest.append(arg)
            name = arg.lstrip("-")
            expects_value = "=" not in name and ("." in name or name in aliases)
        elif root is None:
            root = arg
        else:
            rest.append(arg)
    return root, rest


def _no_browser_file_hint(record: logging.LogRecord) -> bool:
    """Drop Jupyter's "open this file in a browser" block: `jupyter anvil` opens no browser,
    and the URL with the token is in Jupyter's "is running at" lines already."""
    return "open this file in a browser" not in record.getMessage()


def help_text() -> str:
    """``jupyter anvil --help``: the usage, ROOT, the server options that matter and every
    AnvilApp option, with its help and default (``--help-all`` lists all of Jupyter's)."""
    from .host.extension import AnvilApp

    lines = [
        f"Usage: {USAGE}",
        "",
        "Serve every notebook under ROOT that has a code cell tagged `server` as an Anvil-style app:",
        "its functions are called at <url>anvil/apps/<app>/_/call/<function> (HTTP) and",
        "<url>anvil/apps/<app>/_/ws (WebSocket), its page at <url>anvil/apps/<app>/. No browser is opened.",
        "",
        "Arguments",
        "=========",
        "ROOT",
        "    The folder whose notebooks are served (default: the current folder).",
        "    Equivalent to: [--ServerApp.root_dir=ROOT]",
        "",
        "Server options",
        "==============",
        SERVER_OPTIONS,
        "",
    ]
    lines += ["App options", "==========="]
    own = AnvilApp.class_own_traits(config=True)
    for name in sorted(own):
        lines += AnvilApp.class_get_trait_help(own[name]).splitlines()
    lines += [
        "",
        "Commands",
        "========",
        "jupyter anvil rotate-cookie-key [KEYS_FILE]",
        "    Put a new cookie encryption key in front of the old ones (nobody is logged out).",
        "",
        "Every Jupyter Server option works too (`--ServerApp.<name>=...`): see `jupyter anvil --help-all`.",
        "Examples:",
        "    jupyter anvil notebooks/ --port=8900",
        "    jupyter anvil . --ip=0.0.0.0 --AnvilApp.kernels_max=8",
    ]
    return "\n".join(lines)


def rotate_cookie_key(args: list[str]) -> None:
    """``jupyter anvil rotate-cookie-key [KEYS_FILE]``: put a new cookie key in front.

    New cookies are sealed with it; cookies sealed with the previous keys still open,
    so nobody is logged out. Restart the server to use it.
    """
    from .host.cookies import KEYS_KEPT, rotate_keys
    from .host.extension import COOKIE_KEYS_FILE, data_folder

    path = Path(args[0]) if args else data_folder() / COOKIE_KEYS_FILE
    rotate_keys(path)
    print(f"jupyter anvil: new cookie key in {path} (the last {KEYS_KEPT} keys are kept); restart the server to use it")
