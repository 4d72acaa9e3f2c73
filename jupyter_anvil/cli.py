"""``jupyter anvil [ROOT] [--ServerApp.option=value ...]``."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """Start a Jupyter server rooted at ROOT (default: here) serving its apps."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["rotate-cookie-key"]:
        rotate_cookie_key(args[1:])
        return
    positional = [a for a in args if not a.startswith("-")]
    if positional and not any(a.startswith("--ServerApp.root_dir") for a in args):
        if not os.path.isdir(positional[0]):
            sys.exit(f"jupyter anvil: {positional[0]!r} is not a folder (usage: jupyter anvil [ROOT] [options])")
        args.remove(positional[0])
        args.append(f"--ServerApp.root_dir={os.path.abspath(positional[0])}")
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not any("allow_root" in a or a == "--allow-root" for a in args):
        # containers and CI run as root; serving apps there is the point, so say it and go on
        print("[jupyter-anvil] running as root (pass --ServerApp.allow_root=False to refuse)", file=sys.stderr)
        args.append("--ServerApp.allow_root=True")
    from .host.app import AnvilApp

    AnvilApp.launch_instance(args)  # type: ignore[no-untyped-call]


def rotate_cookie_key(args: list[str]) -> None:
    """``jupyter anvil rotate-cookie-key [KEYS_FILE]``: put a new cookie key in front.

    New cookies are sealed with it; cookies sealed with the previous keys still open,
    so nobody is logged out. Restart the server to use it.
    """
    from .host.app import COOKIE_KEYS_FILE, data_folder
    from .host.cookies import KEYS_KEPT, rotate_keys

    path = Path(args[0]) if args else data_folder() / COOKIE_KEYS_FILE
    rotate_keys(path)
    print(f"jupyter anvil: new cookie key in {path} (the last {KEYS_KEPT} keys are kept); restart the server to use it")
