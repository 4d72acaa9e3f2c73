"""Exactly once on a real store (the unit conftest's ``store``: SQLite and PostgreSQL):
run_once's claims, replays, waits, releases, abandoned claims, expiry and bounds, and the
encoding of an outcome."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from jupyter_anvil import errors
from jupyter_anvil.host.idempotency import Attempt, Idempotency, IdempotencyLimits, Scope, check_key
from jupyter_anvil.host.idempotency.service import STILL_RUNNING, TERMINATED, TOO_LARGE
from jupyter_anvil.host.idempotency.store import decode_outcome, encode_outcome
from jupyter_anvil.host.instances import ServerInstances
from jupyter_anvil.host.messages import CallReply
from jupyter_anvil.host.store import Store
from jupyter_anvil.host.store.tables import idempotency, servers

SCOPE = Scope("app", "session-1", "key-0001")


class Counter:
    """A call that counts its runs; it waits for ``gate`` if set."""

    def __init__(self, reached: bool = True, gate: asyncio.Event | None = None) -> None:
        self.runs = 0
        self.reached = reached
        self.gate = gate

    async def __call__(self) -> Attempt:
        self.runs += 1
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0.01)
        return Attempt(CallReply(response={"run": self.runs}, media={"m": b"\x00\xffbytes"}), self.reached)


async def service(store: Store, **limits: float) -> Idempotency:
    instances = ServerInstances(store)
    await instances.register()
    return Idempotency(store, instances, IdempotencyLimits(**limits))  # type: ignore[arg-type]


def rows(store: Store) -> list[dict[str, object]]:
    with store.engine.begin() as db:
        return [dict(r) for r in db.execute(sa.select(idempotency)).mappings()]


def test_an_outcome_round_trips_its_response_objects_media_error_and_cookies() -> None:
    reply = CallReply(
        response={"v": [1, "é"]},
        objects=[{"type": ["DataMedia"], "path": ["v"], "id": "a"}],
        media={"a": b"\x00" * 5, "b": b"xyz"},
        cookie_changes={"local": {"k": 1}},
    )
    back = decode_outcome(encode_outcome(reply))
    assert (back.response, back.objects, back.media, back.cookie_changes) == (
        reply.response,
        reply.objects,
        reply.media,
        reply.cookie_changes,
    )
    failed = decode_outcome(encode_outcome(CallReply.failure(ValueError("no"))))
    assert failed.error is not None and failed.error["type"] == "ValueError" and failed.error["message"] == "no"


@pytest.mark.parametrize("key", ["short", "x" * 129, "has space!", "é" * 10, "a/b/c/d/e", 12345678, None])
def test_malformed_keys_are_refused_naming_the_shape(key: object) -> None:
    with pytest.raises(errors.SerializationError, match="8 to 128 characters"):
        check_key(key, "The Idempotency-Key header")


def test_well_formed_keys_pass() -> None:
    for key in ("0f8e9c1a-0000-4000-8000-000000000000", "a.b_c:d-e", "x" * 128):
        assert check_key(key, "k") == key


async def test_twenty_concurrent_arrivals_of_one_key_run_it_once(store: Store) -> None:
    keys = await service(store)
    call = Counter()
    results = await asyncio.gather(*(keys.run_once(SCOPE, call, 5) for _ in range(20)))
    assert call.runs == 1
    assert {r.reply.response["run"] for r in results} == {1}
    assert sum(not r.replayed for r in results) == 1
    assert all(r.reply.media == {"m": b"\x00\xffbytes"} for r in results)
    # and later: the stored outcome, not a new run
    later = await keys.run_once(SCOPE, call, 5)
    assert later.replayed and later.reply.response == {"run": 1} and call.runs == 1


async def test_another_session_or_app_runs_the_same_key_anew(store: Store) -> None:
    keys = await service(store)
    call = Counter()
    first = await keys.run_once(SCOPE, call, 5)
    other_session = await keys.run_once(Scope("app", "session-2", SCOPE.key), call, 5)
    other_app = await keys.run_once(Scope("app2", SCOPE.session_token_hash, SCOPE.key), call, 5)
    assert call.runs == 3
    assert [r.reply.response["run"] for r in (first, other_session, other_app)] == [1, 2, 3]
    assert not other_session.replayed and not other_app.replayed


async def test_a_call_that_never_reached_server_code_releases_its_key(store: Store) -> None:
    keys = await service(store)
    refused = Counter(reached=False)
    assert not (await keys.run_once(SCOPE, refused, 5)).replayed
    assert rows(store) == []
    ran = Counter()
    again = await keys.run_once(SCOPE, ran, 5)
    assert ran.runs == 1 and not again.replayed


async def test_waiters_on_a_released_run_claim_the_key_themselves(store: Store) -> None:
    keys = await service(store)
    gate = asyncio.Event()
    refused = Counter(reached=False, gate=gate)
    first = asyncio.ensure_future(keys.run_once(SCOPE, refused, 5))
    await asyncio.sleep(0.1)
    ran = Counter()
    second = asyncio.ensure_future(keys.run_once(SCOPE, ran, 5))
    await asyncio.sleep(0.1)
    gate.set()
    await first
    result = await second
    assert ran.runs == 1 and refused.runs == 1 and not result.replayed


async def test_a_replay_waits_for_the_run_then_gives_up_saying_still_running(store: Store) -> None:
    keys = await service(store)
    gate = asyncio.Event()
    slow = Counter(gate=gate)
    first = asyncio.ensure_future(keys.run_once(SCOPE, slow, 5))
    await asyncio.sleep(0.05)
    impatient = await keys.run_once(SCOPE, slow, 0.2)
    assert impatient.reply.error is not None
    assert impatient.reply.error["type"] == "anvil.server.RuntimeUnavailableError"
    assert impatient.reply.error["message"] == STILL_RUNNING
    gate.set()
    assert (await first).reply.response == {"run": 1} and slow.runs == 1


async def test_a_run_of_another_live_server_is_waited_for_in_the_store(store: Store) -> None:
    here, there = await service(store), await service(store)
    gate = asyncio.Event()
    slow = Counter(gate=gate)
    first = asyncio.ensure_future(there.run_once(SCOPE, slow, 5))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(here.run_once(SCOPE, slow, 5))
    await asyncio.sleep(0.4)
    assert not waiting.done()
    gate.set()
    replay = await waiting
    assert replay.replayed and replay.reply.response == {"run": 1} and slow.runs == 1
    await first


async def test_a_claim_of_a_gone_server_ends_terminated_and_never_runs_again(store: Store) -> None:
    gone = await service(store)
    assert await gone.rows.claim(SCOPE, gone.server_id)  # it claimed, then died
    with store.engine.begin() as db:
        db.execute(servers.delete().where(servers.c.id == gone.server_id))
    keys = await service(store)
    call = Counter()
    replay = await keys.run_once(SCOPE, call, 5)
    assert call.runs == 0 and replay.replayed
    assert replay.reply.error is not None and replay.reply.error["message"] == TERMINATED
    assert replay.reply.error["type"] == "anvil.server.ExecutionTerminatedError"


async def test_start_settles_the_claims_of_gone_servers(store: Store) -> None:
    gone = await service(store)
    assert await gone.rows.claim(SCOPE, gone.server_id)
    await gone.instances.unregister()
    keys = await service(store)
    await keys.tidy()
    assert [(r["state"], r["owner"]) for r in rows(store)] == [("done", gone.server_id)]


async def test_an_outcome_expires_then_the_key_runs_anew(store: Store) -> None:
    keys = await service(store, keep_seconds=0.3)
    call = Counter()
    await keys.run_once(SCOPE, call, 5)
    assert (await keys.run_once(SCOPE, call, 5)).replayed
    await asyncio.sleep(0.4)
    again = await keys.run_once(SCOPE, call, 5)
    assert not again.replayed and call.runs == 2
    await asyncio.sleep(0.4)
    await keys.tidy()
    assert rows(store) == []


async def test_keep_zero_keeps_nothing_after_the_reply(store: Store) -> None:
    keys = await service(store, keep_seconds=0)
    call = Counter()
    await keys.run_once(SCOPE, call, 5)
    assert rows(store) == []
    await keys.run_once(SCOPE, call, 5)
    assert call.runs == 2


async def test_an_outcome_too_large_is_replayed_as_an_error(store: Store) -> None:
    keys = await service(store, max_bytes=50)
    call = Counter()
    live = await keys.run_once(SCOPE, call, 5)
    assert live.reply.response == {"run": 1}
    replay = await keys.run_once(SCOPE, call, 5)
    assert call.runs == 1 and replay.replayed
    assert replay.reply.error is not None and replay.reply.error["message"] == TOO_LARGE


async def test_at_most_kept_keys_per_app_oldest_first(store: Store) -> None:
    keys = await service(store, kept=5)
    call = Counter()
    for n in range(12):
        await keys.run_once(Scope("app", "s", f"key-{n:04d}"), call, 5)
    await keys.run_once(Scope("other", "s", "key-0000"), call, 5)
    left = [r["key"] for r in rows(store) if r["app"] == "app"]
    assert len(left) <= 5 and "key-0011" in left and "key-0000" not in left
    assert [r["key"] for r in rows(store) if r["app"] == "other"] == ["key-0000"]
    await keys.tidy()
    assert len([r for r in rows(store) if r["app"] == "app"]) <= 5


async def test_at_most_total_bytes_of_outcomes_per_app_oldest_first(store: Store) -> None:
    keys = await service(store, total_bytes=1000)
    call = Counter()  # each outcome is about 100 bytes
    for n in range(30):
        await keys.run_once(Scope("app", "s", f"key-{n:04d}"), call, 5)
    kept = [r for r in rows(store) if r["app"] == "app"]
    assert sum(int(r["size"]) for r in kept) <= 1000 + 200  # bounded (give or take the last one)
    assert "key-0029" in {r["key"] for r in kept} and "key-0000" not in {r["key"] for r in kept}


async def test_negative_limits_are_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        await service(store, keep_seconds=-1)


async def test_a_call_that_raises_inside_is_final(store: Store) -> None:
    keys = await service(store)

    async def broken() -> Attempt:
        raise RuntimeError("bug")

    first = await keys.run_once(SCOPE, broken, 5)
    assert first.reply.error is not None and first.reply.error["type"] == "anvil.server.InternalError"
    call = Counter()
    assert (await keys.run_once(SCOPE, call, 5)).replayed and call.runs == 0
    assert time.time() > 0


async def test_an_outcome_the_store_could_not_take_ends_terminated_on_replay(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store failed as this server wrote a run's outcome: the caller had its reply, the
    key stays ``running`` under this server. A replay is not told "still running" until the
    server restarts: the run is over here, so the key ends terminated, never run again."""
    keys = await service(store)
    call = Counter()

    async def refuse(*args: object) -> bool:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("the database went away"))

    with monkeypatch.context() as patched:
        patched.setattr(keys.rows, "finish", refuse)
        first = await keys.run_once(SCOPE, call, 5)
    assert first.reply.response == {"run": 1} and [r["state"] for r in rows(store)] == ["running"]
    started = time.monotonic()
    replay = await keys.run_once(SCOPE, call, 5)
    assert replay.replayed and replay.reply.error is not None and replay.reply.error["message"] == TERMINATED
    assert call.runs == 1 and time.monotonic() - started < 2
