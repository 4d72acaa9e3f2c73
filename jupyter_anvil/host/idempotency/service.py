"""Exactly once: a call sent with an idempotency key runs at most once per (app, session,
key), and every later arrival of the key gets the first run's reply.

* The first arrival claims the key in the store (a conditional insert, so of two servers
  on one store only one can), runs, and stores its final reply as the key's outcome.
* A call refused before it reached server code (no such function, app not available,
  no kernel free, permission, session expired) releases its claim: nothing ran, so the
  client may send it again. Anything that reached a kernel or a host service is final.
* A replay of a finished key gets the stored outcome; one arriving while the first run
  is still going waits for it (a future here; the store, polled, for another server's
  run) up to a bound, then is told to try again shortly.
* A claim left ``running`` by a server that is gone ends as ExecutionTerminatedError:
  the call may or may not have run, and it is never run a second time.

Bounded: outcomes are kept ``keep_seconds`` after they finish, at most ``kept`` per app
and ``total_bytes`` per app (the oldest go first), each at most ``max_bytes`` (a bigger one
is kept as an error saying so).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ... import errors
from ..background import spawn
from ..instances import ServerInstances
from ..messages import CallReply
from ..store import Store
from .store import DONE, IdempotencyStore, Row, Scope, decode_outcome, encode_outcome, outcome_size

log = logging.getLogger(__name__)

STILL_RUNNING = "This call is still running on the server; try again shortly"
TERMINATED = "The server stopped while this call was running; it may not have finished"
TOO_LARGE = "This call ran, but its result was too large to keep for a replay"
NOT_RECORDED = "The server could not record this call's key; it did not run it"
#: how often a replay looks again at another server's run of its key
POLL_SECONDS = 0.25
#: a replay asks whether the server running its key is gone every this many polls
GONE_CHECK_EVERY = 8


@dataclass(frozen=True)
class Attempt:
    """What running a call gave: its reply, and whether it reached server code (a kernel
    or a host service). A call that did not reach it never ran: its claim is released."""

    reply: CallReply
    reached: bool


@dataclass(frozen=True)
class Replied:
    reply: CallReply
    #: the reply is a stored outcome (of a run before this arrival), not this arrival's run
    replayed: bool


class _Look(enum.Enum):
    AGAIN = "again"  # the row changed (released, expired, settled): look at the store again
    STILL = "still"  # still running past the wait


def _failure_blob(exc: errors.AnvilError) -> bytes:
    return encode_outcome(CallReply.failure(exc))


def _terminated_blob() -> bytes:
    return _failure_blob(errors.ExecutionTerminatedError(TERMINATED))


@dataclass(frozen=True)
class IdempotencyLimits:
    keep_seconds: float = 24 * 3600.0
    max_bytes: int = 16 * 1024 * 1024
    kept: int = 100_000
    #: the bytes of one app's kept outcomes, all together
    total_bytes: int = 1024 * 1024 * 1024


@dataclass
class _Usage:
    """One app's rows and outcome bytes, as this server last counted them (plus its own
    claims and outcomes since)."""

    rows: int
    bytes: int


class Idempotency:
    """The keyed calls of this server: claims, waits, outcomes."""

    def __init__(self, store: Store, instances: ServerInstances, limits: IdempotencyLimits) -> None:
        if min(limits.keep_seconds, limits.max_bytes, limits.kept, limits.total_bytes) < 0:
            raise ValueError("idempotency limits cannot be negative")
        self.rows = IdempotencyStore(store)
        self.instances = instances
        self.limits = limits
        #: the runs of this server, by key: waiters await them (None: released, claim again)
        self._running: dict[Scope, asyncio.Future[CallReply | None]] = {}
        self._usage: dict[str, _Usage] = {}
        self._pruner: asyncio.Task[None] | None = None

    @property
    def server_id(self) -> str:
        return self.instances.id

    @property
    def keeps_outcomes(self) -> bool:
        return self.limits.keep_seconds > 0 and self.limits.kept > 0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Prune what expired while no server ran, end the claims of servers that are gone,
        then keep doing both now and then."""
        await self.tidy()
        self._pruner = spawn(self._tidy_periodically())

    def stop(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()

    async def tidy(self) -> None:
        removed = await self.rows.prune(time.time() - self.limits.keep_seconds, self.limits.kept)
        if removed:
            log.info("[jupyter-anvil] removed %d expired idempotency keys", removed)
        self._usage.clear()
        for owner in await self.rows.running_owners():
            if owner != self.server_id and await self.instances.is_gone(owner):
                ended = await self.rows.settle_abandoned(owner, _terminated_blob())
                log.warning("[jupyter-anvil] %d keyed calls were cut off by the end of server %s", ended, owner)

    async def _tidy_periodically(self) -> None:
        every = min(300.0, max(self.limits.keep_seconds, 1.0))
        while True:
            await asyncio.sleep(every)
            try:
                await self.tidy()
            except Exception:  # retried next time
                log.exception("[jupyter-anvil] could not prune idempotency keys")

    # -- a keyed call -------------------------------------------------------------------------
    async def run_once(self, scope: Scope, run: Callable[[], Awaitable[Attempt]], wait_seconds: float) -> Replied:
        """Run ``run`` unless ``scope``'s key ran before (its stored outcome, replayed) or
        runs now (waited for, up to ``wait_seconds``). Never raises for a store fault: the
        call is refused (InternalError) without running."""
        replied = await self._settle(scope, run, wait_seconds)
        assert replied is not None  # (None only when there is nothing to run)
        return replied

    async def replay(self, scope: Scope, wait_seconds: float) -> Replied | None:
        """The outcome of ``scope``'s key, never running it: for a key sent again in a
        session that is gone. None if the key has no run (never ran, released, or its
        outcome expired): the caller refuses the call as it would without a key."""
        return await self._settle(scope, None, wait_seconds)

    async def _settle(
        self, scope: Scope, run: Callable[[], Awaitable[Attempt]] | None, wait_seconds: float
    ) -> Replied | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        try:
            while loop.time() < deadline:
                here = self._running.get(scope)
                if here is not None:  # claimed or running in this process: its outcome
                    seen = await self._wait_here(here, deadline)
                    if isinstance(seen, CallReply):
                        return Replied(seen, replayed=True)
                    if seen is _Look.STILL:
                        break
                    continue
                if run is not None:
                    # registered before the claim, so a replay here that sees the claimed row
                    # before this run starts waits for it (not taking it for an orphan)
                    future: asyncio.Future[CallReply | None] = loop.create_future()
                    self._running[scope] = future
                    claimed = False
                    try:
                        claimed = await self._claim(scope)
                    finally:
                        if not claimed:
                            self._running.pop(scope, None)
                            future.set_result(None)
                    if claimed:
                        return Replied(await self._run_claimed(scope, run, future), replayed=False)
                row = await self.rows.get(scope)
                if row is None:
                    if run is None:
                        return None
                    continue  # released or pruned since: claim it again
                if row.state == DONE:
                    if row.finished is not None and row.finished < time.time() - self.limits.keep_seconds:
                        await self.rows.drop_expired(scope, time.time() - self.limits.keep_seconds)
                        continue
                    return Replied(self._decode(row), replayed=True)
                seen = await self._wait(scope, row, deadline)
                if isinstance(seen, CallReply):
                    return Replied(seen, replayed=True)
                if seen is _Look.STILL:
                    break
        except Exception:
            log.exception("[jupyter-anvil] the store could not record idempotency key of app %s", scope.app)
            return Replied(CallReply.failure(errors.InternalError(NOT_RECORDED)), replayed=False)
        return Replied(CallReply.failure(errors.RuntimeUnavailableError(STILL_RUNNING)), replayed=False)

    async def _claim(self, scope: Scope) -> bool:
        await self._make_room(scope.app)
        claimed = await self.rows.claim(scope, self.server_id)
        usage = self._usage.get(scope.app)
        if claimed and usage is not None:  # (a tidy may have dropped the counts meanwhile)
            usage.rows += 1
        return claimed

    async def _make_room(self, app: str) -> None:
        """At most ``kept`` keys and ``total_bytes`` of outcomes per app: past either, the
        oldest finished ones go (1% more than needed, so a busy app does not prune on
        every call)."""
        usage = self._usage.get(app)
        if usage is None:
            usage = self._usage[app] = _Usage(*await self.rows.usage(app))
        limits = self.limits
        if usage.rows >= limits.kept > 0:
            await self.rows.trim(app, limits.kept - max(1, limits.kept // 100))
            usage.rows, usage.bytes = await self.rows.usage(app)
        if usage.bytes > limits.total_bytes:
            await self.rows.trim_bytes(app, limits.total_bytes - limits.total_bytes // 100)
            usage.rows, usage.bytes = await self.rows.usage(app)

    async def _run_claimed(
        self, scope: Scope, run: Callable[[], Awaitable[Attempt]], future: asyncio.Future[CallReply | None]
    ) -> CallReply:
        outcome: CallReply | None = None
        try:
            attempt = await run()
            if not attempt.reached:
                await self._release(scope)
                return attempt.reply
            outcome = attempt.reply
            await self._keep(scope, attempt.reply)
            return attempt.reply
        except Exception:
            # it may have run: at most once, so its key is final all the same
            log.exception("[jupyter-anvil] a keyed call of app %s failed", scope.app)
            outcome = CallReply.failure(errors.InternalError("The server could not finish this call"))
            await self._store(scope, _failure_blob(errors.InternalError("The server could not finish this call")))
            return outcome
        finally:
            self._running.pop(scope, None)
            if not future.done():
                future.set_result(outcome)

    async def _release(self, scope: Scope) -> None:
        try:
            await self.rows.release(scope, self.server_id)
            usage = self._usage.get(scope.app)
            if usage is not None:
                usage.rows = max(0, usage.rows - 1)
        except Exception:
            log.exception("[jupyter-anvil] could not release an idempotency key of app %s", scope.app)

    async def _keep(self, scope: Scope, reply: CallReply) -> None:
        if not self.keeps_outcomes:
            await self._release(scope)  # kept only until the reply (waiters got it above)
            return
        try:
            blob = (
                encode_outcome(reply)
                if outcome_size(reply) <= self.limits.max_bytes
                else _failure_blob(errors.InternalError(TOO_LARGE))
            )
        except (TypeError, ValueError):
            blob = _failure_blob(errors.InternalError(TOO_LARGE))
        if len(blob) > self.limits.max_bytes:
            blob = _failure_blob(errors.InternalError(TOO_LARGE))
        await self._store(scope, blob)

    async def _store(self, scope: Scope, blob: bytes) -> None:
        try:
            usage = self._usage.get(scope.app)
            if usage is not None:
                usage.bytes += len(blob)
            if not await self.rows.finish(scope, self.server_id, blob):
                log.warning("[jupyter-anvil] an idempotency key of app %s was settled by another server", scope.app)
        except Exception:  # the caller still gets its reply; a replay waits, then retries
            log.exception("[jupyter-anvil] could not store the outcome of a keyed call of app %s", scope.app)

    async def _wait(self, scope: Scope, row: Row, deadline: float) -> CallReply | _Look:
        """Wait for a run of ``scope`` that is under way: its reply, AGAIN (the row changed:
        released, settled) or STILL (past ``deadline``)."""
        loop = asyncio.get_running_loop()
        future = self._running.get(scope)
        if future is not None:
            return await self._wait_here(future, deadline)
        if row.owner == self.server_id:
            # this server's run of it is over (none is registered) but its outcome was not
            # stored (the store failed then): it ran, or may have; never again
            await self.rows.settle_abandoned(self.server_id, _terminated_blob(), scope)
            return _Look.AGAIN
        polls = 0
        while loop.time() < deadline:
            if polls % GONE_CHECK_EVERY == 0 and await self.instances.is_gone(row.owner):
                await self.rows.settle_abandoned(row.owner, _terminated_blob(), scope)
                return _Look.AGAIN
            polls += 1
            await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - loop.time())))
            seen = await self.rows.get(scope)
            if seen is None or seen.state == DONE:
                return _Look.AGAIN
            row = seen
        return _Look.STILL

    @staticmethod
    async def _wait_here(future: asyncio.Future[CallReply | None], deadline: float) -> CallReply | _Look:
        """Wait for this process's run of a key: its reply, AGAIN (released) or STILL."""
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            outcome = await asyncio.wait_for(asyncio.shield(future), remaining)
        except asyncio.TimeoutError:
            return _Look.STILL
        return _Look.AGAIN if outcome is None else outcome

    def _decode(self, row: Row) -> CallReply:
        if row.reply is None:
            return CallReply.failure(errors.InternalError(TOO_LARGE))
        try:
            return decode_outcome(row.reply)
        except (ValueError, KeyError, TypeError, struct.error):
            log.exception("[jupyter-anvil] a stored outcome could not be read")
            return CallReply.failure(errors.InternalError("This call ran, but its stored result could not be read"))
