"""SessionService with a real Store on a temp SQLite file: new, persist, resume, expiry,
and saves merged key by key."""

from __future__ import annotations

import time

import pytest

from jupyter_anvil.host.sessions import SessionExpired, SessionService, hash_token
from jupyter_anvil.host.store import Store
from jupyter_anvil.host.store import sessions as sessions_table


async def test_new_session_costs_no_row_until_persisted(store: Store) -> None:
    sessions = SessionService(store, idle_timeout=3600)
    session = sessions.new("app", "browser")
    assert not session.persisted and session.data == {}
    assert len(session.token) == 43 and session.id != session.token
    with pytest.raises(SessionExpired):
        await sessions.resume(session.token, "app")
    await sessions.persist(session)
    assert (await sessions.resume(session.token, "app")) is session  # served from this process's cache


async def test_resume_from_the_store_in_another_process(store: Store) -> None:
    first = SessionService(store, idle_timeout=3600)
    session = first.new("app", "browser")
    await first.save(session, {"user": "ada"}, [])  # the first data stores it
    assert session.persisted
    other = SessionService(store, idle_timeout=3600)  # nothing cached: read from the store
    resumed = await other.resume(session.token, "app")
    assert resumed.id == session.id and resumed.data == {"user": "ada"}
    # only the token's hash is stored
    record = await store.load_session(hash_token(session.token), 0)
    assert record is not None and record.token_hash != session.token


@pytest.mark.parametrize("token", ["", "short", "x" * 43 + "!", "é" * 43, None, 42])
async def test_malformed_tokens_are_expired(store: Store, token: object) -> None:
    with pytest.raises(SessionExpired):
        await SessionService(store, idle_timeout=3600).resume(token, "app")  # type: ignore[arg-type]


async def test_a_token_of_another_app_is_expired(store: Store) -> None:
    sessions = SessionService(store, idle_timeout=3600)
    session = sessions.new("app", "browser")
    await sessions.persist(session)
    with pytest.raises(SessionExpired):
        await sessions.resume(session.token, "other")
    with pytest.raises(SessionExpired):
        await SessionService(store, idle_timeout=3600).resume(session.token, "other")


async def test_idle_session_expires_and_its_row_goes(store: Store) -> None:
    sessions = SessionService(store, idle_timeout=60)
    session = sessions.new("app", "browser")
    await sessions.save(session, {"k": 1}, [])
    # idle past the timeout, in this process's cache and in the store
    old = time.time() - 120
    session.record.last_used = old
    other = SessionService(store, idle_timeout=60)

    def work() -> None:
        with store.engine.begin() as db:
            db.execute(sessions_table.update().values(last_used=old))

    await store.run(work)
    with pytest.raises(SessionExpired):
        await sessions.resume(session.token, "app")
    with pytest.raises(SessionExpired):
        await other.resume(session.token, "app")
    assert await store.load_session(session.record.token_hash, 0) is None  # deleted when found idle


async def test_use_refuses_a_session_idle_on_an_open_connection(store: Store) -> None:
    sessions = SessionService(store, idle_timeout=60)
    session = sessions.new("app", "browser")
    await sessions.use(session)  # not stored yet: nothing to expire
    await sessions.persist(session)
    await sessions.use(session)
    session.record.last_used = time.time() - 61
    await age_stored_sessions(store, time.time() - 61)  # idle as every server over the store sees it
    with pytest.raises(SessionExpired):
        await sessions.use(session)


async def age_stored_sessions(store: Store, last_used: float) -> None:
    def work() -> None:
        with store.engine.begin() as db:
            db.execute(sessions_table.update().values(last_used=last_used))

    await store.run(work)


async def test_use_reads_what_another_server_wrote(store: Store) -> None:
    """A server's live copy is not trusted unread: another server over the same store
    may have written the session since (issue 20, several servers)."""
    a_side = SessionService(store, idle_timeout=3600)
    session = a_side.new("app", "browser")
    await a_side.save(session, {"n": 1}, [])
    assert (await a_side.resume(session.token, "app")) is session  # A's cached copy
    b_side = SessionService(store, idle_timeout=3600)
    b_view = await b_side.resume(session.token, "app")
    await b_side.use(b_view)
    await b_side.save(b_view, {"n": 2, "b": True}, [])
    await a_side.use(session)
    assert session.data == {"n": 2, "b": True}
    await b_side.save(b_view, {}, ["b"])
    await a_side.use(session)
    assert session.data == {"n": 2}


async def test_use_of_a_session_used_recently_through_another_server_is_not_idle(store: Store) -> None:
    sessions = SessionService(store, idle_timeout=60)
    session = sessions.new("app", "browser")
    await sessions.save(session, {"k": 1}, [])
    session.record.last_used = time.time() - 61  # idle here, but the store says it was used now
    await sessions.use(session)
    assert session.record.last_used > time.time() - 5


async def test_saves_of_two_processes_merge_key_by_key(store: Store) -> None:
    a_side = SessionService(store, idle_timeout=3600)
    session = a_side.new("app", "browser")
    await a_side.save(session, {"a": 1, "shared": "a", "gone": True}, [])
    b_view = await SessionService(store, idle_timeout=3600).resume(session.token, "app")
    a_view = session
    assert a_view is not b_view
    b_side = SessionService(store, idle_timeout=3600)
    await b_side.save(b_view, {"b": 2, "shared": "b"}, ["gone"])
    await a_side.save(a_view, {"a": 3}, [])  # does not write back its stale copy of b's keys
    stored = await SessionService(store, idle_timeout=3600).resume(session.token, "app")
    assert stored.data == {"a": 3, "b": 2, "shared": "b"}


async def test_save_to_a_session_deleted_under_it_is_expired(store: Store) -> None:
    sessions = SessionService(store, idle_timeout=3600)
    session = sessions.new("app", "browser")
    await sessions.save(session, {"k": 1}, [])
    assert await store.delete_idle_sessions(time.time() + 1) == 1
    with pytest.raises(SessionExpired):
        await sessions.save(session, {"k": 2}, [])
    assert session.data == {"k": 1}  # the live copy changes only once the store has it
    with pytest.raises(SessionExpired):
        await sessions.use(session)  # and the open connection cannot use it any more


async def test_live_cache_is_bounded(store: Store) -> None:
    sessions = SessionService(store, idle_timeout=3600, cache_size=3)
    made = [sessions.new("app", "browser") for _ in range(5)]
    for session in made:
        await sessions.persist(session)
    assert len(sessions._live) == 3
    # an evicted one is still resumed, from the store
    resumed = await sessions.resume(made[0].token, "app")
    assert resumed is not made[0] and resumed.id == made[0].id
