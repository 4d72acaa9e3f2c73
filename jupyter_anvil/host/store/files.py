"""The store's files are the owner's alone.

The SQLite files hold sessions and everything apps printed. The folder is made 0700 and
the database 0600 before SQLite opens it; SQLite gives the ``-wal`` and ``-shm`` files it
creates later the mode of the database file (whatever the umask), so they are 0600 too.
Files from an older release with wider modes are narrowed at start, and the log says so.
(The process umask is left alone: it belongs to the whole Jupyter server.)
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

#: the files SQLite keeps beside a database (WAL mode, or a rollback journal)
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def secure_folder(path: Path) -> None:
    """Make ``path`` a folder only its owner can enter (0700), narrowing it if it was
    open to others (the log says so)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _narrow(path, 0o700)


def secure_sqlite_files(database: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would use the umask),
    and narrow it and its side files if an older release left them wider."""
    if not database.parent.exists():
        database.parent.mkdir(mode=0o700, parents=True)
    os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
    for path in (database, *(database.with_name(database.name + side) for side in SQLITE_SIDE_FILES)):
        _narrow(path, 0o600)


def _narrow(path: Path, wanted: int) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(path, wanted)
    except OSError as e:  # someone else's file: say so, and let opening it decide
        log.warning("[jupyter-anvil] %s is open to others (mode %03o) and could not be narrowed: %s", path, mode, e)
        return
    log.warning("[jupyter-anvil] %s was open to other users (mode %03o): now %03o", path, mode, wanted)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None
