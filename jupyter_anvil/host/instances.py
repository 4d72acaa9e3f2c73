"""The servers sharing one store, and which of them are gone.

Several jupyter-anvil servers may use one store (two on one machine sharing the default
data folder, or several behind a load balancer on PostgreSQL). Each server process is
an *instance* with a random id, registered in ``anvil_servers`` with its host, process
id and a heartbeat it renews every few seconds. A background task record names the
instance that runs it (``anvil_tasks.owner``).

A task can only be declared ``missing`` (cut off by its server's end) when its owner is
provably gone; never merely because another server started. An owner is gone when:

* it stopped cleanly: it marked its own unfinished tasks ``missing`` and removed its row
  on the way out;
* it ran on this host and its process no longer exists (checked by pid and the process's
  start time, so a reused pid is not mistaken for it): a crash (SIGKILL, OOM) is seen
  at once by the next server started on the machine;
* its heartbeat is older than ``stale_after`` (for a crash on another host, or a process
  this host cannot see): every live server sweeps for these on each beat.

So a live server takes over what a crashed one left within ``beat_every`` (same host) or
``stale_after + beat_every`` (another host) seconds: the sweep of each beat marks the
crashed server's tasks ``missing``, and whatever was told ``on_gone`` runs after it (the
inbound mail it was handling is marked failed; the mail it was sending is sent by one live
server).

Assumptions: servers on different machines (or containers, whose process ids are not
this host's) have different host names, and their clocks agree within ``stale_after``.

Records of the release before owners existed have no owner: their tasks are ``missing``
at the next start, as that release did. A server whose heartbeat stalled past
``stale_after`` (a suspended machine) may see its tasks marked ``missing`` by another;
it re-registers at its next beat, and a task that then finishes records its real end.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa

from .store import Store, servers

log = logging.getLogger(__name__)


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or None
    where it cannot be read; with the pid, it names one process for good."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from its end
    return text.rpartition(")")[2].split()[19]


def process_exists(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    if started is None:
        return True
    now_started = process_start_time(pid)
    return now_started is None or now_started == started


class ServerInstances:
    """This server's entry in ``anvil_servers``, its heartbeat, and the sweep for gone ones."""

    def __init__(self, store: Store, beat_every: float = 5.0, stale_after: float = 60.0) -> None:
        self.store = store
        self.id = secrets.token_hex(8)
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.pid_started = process_start_time(self.pid)
        self.beat_every = beat_every
        self.stale_after = stale_after
        self._on_gone: list[Callable[[], Awaitable[None]]] = []
        #: live servers sharing the store, but this one, at the last sweep
        self.others = 0
        #: set by a sweep (on the store's thread) that found a server gone; read by ``after_sweep``
        self._found_gone = False

    def _row(self, now: float) -> dict[str, object]:
        return {
            "id": self.id, "host": self.host, "pid": self.pid, "pid_started": self.pid_started,
            "started": now, "beat": now,
        }  # fmt: skip

    async def register(self) -> None:
        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(servers.insert().values(self._row(time.time())))

        await self.store.run(work)

    async def beat(self) -> None:
        """Renew the heartbeat; re-register if another server thought this one gone."""

        def work() -> None:
            now = time.time()
            with self.store.engine.begin() as db:
                if not db.execute(servers.update().where(servers.c.id == self.id).values(beat=now)).rowcount:
                    log.warning("[jupyter-anvil] this server was taken for gone (no heartbeat for a while)")
                    db.execute(servers.insert().values(self._row(now)))

        await self.store.run(work)

    def sweep(self, db: sa.Connection) -> list[str]:
        """Within the caller's transaction: remove the rows of servers that are gone
        (see the module's docstring) and return their ids."""
        now = time.time()
        gone = []
        others = 0
        for row in db.execute(sa.select(servers).where(servers.c.id != self.id)).mappings():
            others += 1
            stale = row["beat"] < now - self.stale_after
            if stale or (row["host"] == self.host and not process_exists(row["pid"], row["pid_started"])):
                gone.append(str(row["id"]))
        self.others = others - len(gone)
        if gone:
            db.execute(servers.delete().where(servers.c.id.in_(gone)))
            self._found_gone = True
        return gone

    def on_gone(self, callback: Callable[[], Awaitable[None]]) -> None:
        """``callback`` runs (on the event loop) after a sweep found a server gone: what
        that server left unfinished is for it to take over."""
        self._on_gone.append(callback)

    async def after_sweep(self) -> None:
        """Run the ``on_gone`` callbacks if a sweep since the last call found a server gone
        (each beat calls it); one that fails is logged, and the others still run."""
        if not self._found_gone:
            return
        self._found_gone = False
        for callback in self._on_gone:
            try:
                await callback()
            except Exception:
                log.exception("[jupyter-anvil] could not take over what a gone server left")

    async def is_gone(self, server_id: str) -> bool:
        """Whether the server ``server_id`` is gone (after a sweep): what it left unfinished
        (mail to send, mail it was handling) is for a live server to take over."""

        def work() -> bool:
            with self.store.engine.begin() as db:
                self.sweep(db)
                return db.execute(sa.select(servers.c.id).where(servers.c.id == server_id)).first() is None

        return server_id != self.id and await self.store.run(work)

    async def unregister(self) -> None:
        def work() -> None:
            with self.store.engine.begin() as db:
                db.execute(servers.delete().where(servers.c.id == self.id))

        await self.store.run(work)
