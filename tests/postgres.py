"""The tests' PostgreSQL: one throwaway cluster per test session (pg_cluster.py), a fresh
database per test.

Each test gets a database of its own, made by ``CREATE DATABASE ... TEMPLATE template0``:
cheap (a file copy), and no test sees another's rows. ``database_url`` is THE fixture to
run a store's tests on both databases: a test (or a fixture) that takes it runs twice,
once on SQLite (a temporary file) and once on PostgreSQL, with ids ``[sqlite]`` and
``[postgresql]``. ``postgres_url`` is a PostgreSQL database alone.

The cluster is stopped and removed at the end of the session, after a failure too (a
finaliser, and atexit as the last resort). Where ``initdb`` or the driver (psycopg) is
missing, the PostgreSQL variants skip and say why, unless ``ANVIL_REQUIRE_POSTGRES`` is
set (``scripts/test`` sets it): then they fail.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_cluster import PostgresCluster, find_bin_dir, missing_reason

REQUIRED = bool(os.environ.get("ANVIL_REQUIRE_POSTGRES"))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster (skips, or fails if required, where it cannot run)."""
    reason = missing_reason()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"ANVIL_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(reason)
    bin_dir = find_bin_dir()
    assert bin_dir is not None
    cluster = PostgresCluster(bin_dir)
    atexit.register(cluster.stop)  # an interrupted run still removes it
    started = time.monotonic()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    print(f"\n[postgres] cluster on port {cluster.port} in {time.monotonic() - started:.1f} s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of the test's own (dropped after it)."""
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)


#: the databases every store test runs on
DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of the test's own: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'anvil.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
