"""CallService as the owner of a call's life: it resolves the caller's session (resume or
create), refuses an expired one, runs the call, stores what the call changed in one store
write and says which token to hand back. A host service stands in for server code (its
reply carries session and cookie changes, as a kernel's does); the store is a real one."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jupyter_anvil import errors
from jupyter_anvil.host.calls import CallService
from jupyter_anvil.host.host_services import HostCall, HostServices, browser_readable
from jupyter_anvil.host.messages import Caller, CallReply, CallRequest
from jupyter_anvil.host.sessions import Session, SessionService
from jupyter_anvil.host.store import Store

from .test_unit_host_services import FakeApps
from .test_unit_sessions import age_stored_sessions

WRITE = "anvil.private.test.write"


class Writes:
    """Counts the store's session writes."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[str] = []
        for name in ("insert_session", "save_session_changes"):
            original = getattr(store, name)

            async def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                self.made.append(_name)
                return await _original(*args, **kwargs)

            monkeypatch.setattr(store, name, counted)


def rig(store: Store, replies: list[CallReply]) -> tuple[CallService, SessionService]:
    """A call service whose one function answers with the next of ``replies``."""

    async def write(call: HostCall) -> CallReply:
        return replies.pop(0)

    sessions = SessionService(store, idle_timeout=3600)
    table = HostServices([browser_readable(WRITE, write)])
    return CallService(FakeApps(), None, sessions, table), sessions  # type: ignore[arg-type]


def browser(session: Session, cookies: dict[str, Any] | None = None) -> Caller:
    return Caller(session, "browser", cookies=cookies)


async def test_a_caller_without_a_token_gets_no_token_until_its_session_holds_something(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(store, monkeypatch)
    calls, _ = rig(store, [CallReply(response=1), CallReply(response=2, session_changes={"changed": {"k": 1}})])
    first = await calls.call_with_token("app", CallRequest(WRITE), None, "browser", browser)
    assert first.reply.response == 1 and first.session_token is None
    assert writes.made == []  # a session that holds nothing costs no row
    second = await calls.call_with_token("app", CallRequest(WRITE), None, "browser", browser)
    assert second.reply.response == 2 and second.session_token is not None
    assert writes.made == ["insert_session"]  # inserted with its data, in one write
    resumed = await SessionService(store, idle_timeout=3600).resume(second.session_token, "app")
    assert resumed.data == {"k": 1}


async def test_persist_without_data_is_one_insert(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = Writes(store, monkeypatch)
    changes = {"changed": {}, "deleted": [], "persist": True}
    calls, _ = rig(store, [CallReply(response=None, session_changes=changes)])
    outcome = await calls.call_with_token("app", CallRequest(WRITE), None, "http", browser)
    assert outcome.session_token is not None
    assert writes.made == ["insert_session"]  # not an insert, then a touch


async def test_a_resumed_session_is_one_write_per_call_that_changes_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = [CallReply(session_changes={"changed": {"n": n}, "deleted": [], "persist": False}) for n in range(3)]
    replies.append(CallReply(response="read only"))
    calls, sessions = rig(store, replies)
    session = sessions.new("app", "browser")
    await sessions.persist(session)
    writes = Writes(store, monkeypatch)
    for _ in range(4):
        outcome = await calls.call_with_token("app", CallRequest(WRITE), session.token, "browser", browser)
        assert outcome.session_token == session.token
    assert writes.made == ["save_session_changes"] * 3  # the read touches nothing (written a moment ago)
    assert (await SessionService(store, idle_timeout=3600).resume(session.token, "app")).data == {"n": 2}


@pytest.mark.parametrize("token", ["x" * 43, "short"])
async def test_an_unknown_token_is_expired_and_the_call_never_runs(store: Store, token: str) -> None:
    replies = [CallReply(response="ran")]
    calls, _ = rig(store, replies)
    with pytest.raises(errors.SessionExpiredError):
        await calls.call_with_token("app", CallRequest(WRITE), token, "browser", browser)
    assert replies  # never asked


async def test_a_session_idle_too_long_on_an_open_connection_is_expired(store: Store) -> None:
    calls, sessions = rig(store, [CallReply(response="ran")])
    session = await calls.open_session("app", None, "browser")
    await sessions.persist(session)
    session.record.last_used = time.time() - 7200
    await age_stored_sessions(store, time.time() - 7200)  # idle as every server over the store sees it
    outcome = await calls.call("app", CallRequest(WRITE, caller=browser(session)))
    assert outcome.reply.error is not None
    assert outcome.reply.error["type"] == "anvil.server.SessionExpiredError"


async def test_open_session_says_expired_or_internal_error(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, _ = rig(store, [])
    with pytest.raises(errors.SessionExpiredError):
        await calls.open_session("app", "x" * 43, "browser")

    async def broken(*args: Any) -> None:
        raise OSError("the database is gone")

    monkeypatch.setattr(store, "load_session", broken)
    with pytest.raises(errors.InternalError, match="could not start a session"):
        await calls.open_session("app", "y" * 43, "browser")
    fresh = await calls.open_session("app", None, "browser")  # no token: no store read at all
    assert not fresh.persisted


async def test_cookie_changes_reach_the_reply_and_the_callers_jar(store: Store) -> None:
    calls, _ = rig(store, [CallReply(cookie_changes={"local": {"seen": 2}})])
    jar: dict[str, Any] = {"local": {"seen": 1}}
    outcome = await calls.call_with_token(
        "app", CallRequest(WRITE), None, "browser", lambda session: browser(session, jar)
    )
    assert outcome.reply.cookie_changes == {"local": {"seen": 2}}
    assert jar == {"local": {"seen": 2}}  # the connection's next calls see the change


async def test_a_session_deleted_under_a_call_fails_the_call_as_expired(store: Store) -> None:
    calls, sessions = rig(store, [CallReply(response="ran", session_changes={"changed": {"k": 2}})])
    session = sessions.new("app", "browser")
    await sessions.save(session, {"k": 1}, [])
    assert await store.delete_idle_sessions(time.time() + 1) == 1
    outcome = await calls.call("app", CallRequest(WRITE, caller=browser(session)))
    assert outcome.reply.error is not None
    assert outcome.reply.error["type"] == "anvil.server.SessionExpiredError"
    assert session.data == {"k": 1}
