"""A throwaway PostgreSQL cluster: Debian's ``postgresql`` (``initdb``/``pg_ctl``) on a temporary
folder, listening on a free loopback port, with trust authentication for its one role (nothing
but this machine can reach it, and it lives only as long as its user). ``initdb`` refuses to run
as root, so as root the cluster is made and run by a system user of its own (``useradd
--system`` once, if missing). The tests' fixtures (postgres.py) and bench/store.py start it.

pytest-postgresql packages the same pattern, but it runs ``initdb`` and ``pg_ctl`` as the
current user (root here, which ``initdb`` refuses) and brings two more dependencies
(mirakuru, port-for) for what is a hundred lines here.
"""

from __future__ import annotations

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
from pathlib import Path

#: the system user that runs the cluster when the tests run as root
CLUSTER_USER = "anvil-test-pg"
#: the cluster's one role (trust authentication on loopback)
ROLE = "anvil"


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

    def __init__(self, bin_dir: Path, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        #: fsync and synchronous commits as PostgreSQL's defaults (benchmarks); tests go without
        self.durable = durable
        self.user = _cluster_user()
        # in /tmp, not under pytest's basetemp or a TMPDIR that may be 0700 root's, which the
        # cluster's user could not enter
        self.folder = Path(tempfile.mkdtemp(prefix="anvil-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
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
        self._run("initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync")
        # no fsync anywhere unless asked: a test cluster's data need not survive a power cut
        fast = "" if self.durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for attempt in range(3):  # the port is free when picked; another process may take it first
            self.port = _free_port()
            options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=200{fast}"
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
