"""Which databases the store runs on, and how one is named to the operator.

SQLite (the default) and PostgreSQL through psycopg 3. ``postgresql://`` (and the older
``postgres://``) mean psycopg 3 here: SQLAlchemy would pick psycopg2, a second driver we
neither declare nor test, and operators copy such URLs from their hosting's settings.
Every message shows the URL with its password masked.
"""

from __future__ import annotations

import importlib.util

import sqlalchemy as sa
from sqlalchemy.engine import URL

#: the databases the store is tested on: SQLAlchemy's name of the driver, and its module
SUPPORTED = {"sqlite": ("pysqlite", "sqlite3"), "postgresql": ("psycopg", "psycopg")}
#: what the operator installs for a database's driver
INSTALL = {"sqlite3": "a Python built with sqlite3", "psycopg": "pip install 'jupyter-anvil[postgresql]'"}
#: URL schemes that mean psycopg 3 here
_POSTGRESQL_ALIASES = ("postgresql", "postgres")


class StoreError(RuntimeError):
    """The store cannot start with the database it was given; the message says why, never
    with a password."""


def database_url(url: str) -> URL:
    """``url`` parsed, with ``postgresql://`` meaning psycopg 3; StoreError for a URL the
    store cannot use (a typo, a database it is not tested on, a driver not installed)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(
            "not a database URL (sqlite:///path/to/anvil.db or postgresql+psycopg://user@host:port/database)"
        ) from None
    if parsed.drivername in _POSTGRESQL_ALIASES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend not in SUPPORTED:
        raise StoreError(f"{backend} is not a database the store runs on; use sqlite or postgresql+psycopg")
    if driver not in SUPPORTED[backend]:
        raise StoreError(f"{backend}+{driver}: the store runs on {backend} through {SUPPORTED[backend][0]} only")
    module = SUPPORTED[backend][1]
    if importlib.util.find_spec(module) is None:
        raise StoreError(f"{shown(parsed)} needs the {module} driver, which is not installed: {INSTALL[module]}")
    return parsed


def shown(url: URL) -> str:
    """The URL as the operator may see it in a log: the password masked."""
    return url.render_as_string(hide_password=True)
