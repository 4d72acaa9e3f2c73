"""A throwaway PostgreSQL for the tests: one cluster per test session, a fresh database per test.

The cluster is Debian's ``postgresql`` package (``initdb``/``pg_ctl``) on a temporary folder,
listening on a free loopback port, with trust authentication for its one user (nothing but
this machine can reach it, and it lives only as long as the test run). ``initdb`` refuses to
run as root, so as root the cluster is made and run by a system user of its own
(``useradd --system`` once, if missing). It is stopped and removed at the end of the session,
after a failure too (a finaliser, and atexit as the last resort).

Each test gets a database of its own, made by ``CREATE DATABASE ... TEMPLATE``: cheap (a
file copy), and no test sees another's rows. ``database_url`` is THE fixture to run a
store's tests on both databases: a test (or a fixture) that takes it runs twice, once on
SQLite (a temporary file) and once on PostgreSQL, with ids ``[sqlite]`` and ``[postgresql]``.

Where ``initdb`` or the driver (psycopg) is missing, the PostgreSQL variants skip and say
why, unless ``ANVIL_REQUIRE_POSTGRES`` is set (``scripts/test`` sets it): then they fail.

pytest-postgresql packages the same pattern, but it runs ``initdb`` and ``pg_ctl`` as the
current user (root here, which ``initdb`` refuses) and brings two more dependencies
(mirakuru, port-for) for what is sixty lines here.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: the system user that runs the cluster when the tests run as root
CLUSTER_USER = "anvil-test-pg"
#: the cluster's one role (trust authentication on loopback)
ROLE = "anvil"
REQUIRED = bool(os.environ.get("ANVIL_REQUIRE_POSTGRES"))


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's versioned folder (newest first)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def missing_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None if they can."""
    if find_bin_dir() is None:
        return "PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "the PostgreSQL driver is not installed (pip install 'jupyter-anvil[postgresql]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_user() -> pwd.struct_passwd | None:
    """The user to run the cluster as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CLUSTER_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(CLUSTER_USER)


class PostgresCluster:
    """A PostgreSQL cluster in a temporary folder; ``url(name)`` for its databases."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.user = _cluster_user()
        # not under pytest's basetemp: that is 0700 root's, which the cluster's user cannot enter
        self.folder = Path(tempfile.mkdtemp(prefix="anvil-pg-"))
        self.data = self.folder / "data"
        self.port = 0
        self._names = itertools.count(1)
        self._running = False

    def _run(self, *command: str, timeout: float = 60) -> None:
        user = self.user
        completed = subprocess.run(
            [str(self.bin_dir / command[0]), *command[1:]],
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=self.folder,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            output = f"{completed.stdout}\n{completed.stderr}\n{self.server_log()}"
            raise RuntimeError(f"{' '.join(command)} failed:\n{output}")

    def server_log(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        # no fsync anywhere: a test cluster's data need not survive a power cut
        self._run("initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync")
        for attempt in range(3):  # the port is free when picked; another process may take it first
            self.port = _free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                log = str(self.folder / "server.log")
                self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._running = False
            # removing its folder below is what matters most; a stop that fails is said by pg_ctl's log
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: str) -> None:
        """Run statements outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={ROLE} dbname=postgres", autocommit=True) as c:
            for statement in statements:
                c.execute(statement)  # type: ignore[arg-type]  # test-made names, not input

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"anvil_test_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


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
