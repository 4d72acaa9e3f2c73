"""Exactly once, end to end (issue 18): calls sent with an idempotency key, over HTTP and
the WebSocket, on a real server with real kernels, across restarts and a SIGKILL; the
online check and ``anvil.private.session.keep``.

The apps count their real runs in a file under the test's folder: one line per run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import AnvilServer, private_server
from notebook_files import write_notebook

SESSION = "X-Anvil-Session"
KEY = "Idempotency-Key"
REPLAYED = "Idempotency-Replayed"


def once_app(runs: Path) -> str:
    return f"""
import time
from jupyter_anvil import server
from jupyter_anvil.media import BlobMedia

RUNS = {str(runs)!r}

def record(tag):
    with open(RUNS, "a") as f:
        f.write(f"{{tag}}\\n")
    with open(RUNS) as f:
        return sum(1 for _ in f)

@server.callable
def bump(tag="x"):
    return {{"run": record(tag), "session": server.session.session_id}}

@server.callable
def slow(tag="slow", seconds=2.0):
    time.sleep(seconds)
    return record(tag)

@server.callable
def fails(tag="fails"):
    record(tag)
    raise ValueError("it broke")

@server.callable
def picture(tag="picture"):
    record(tag)
    return BlobMedia("application/octet-stream", bytes(range(256)) * 4, name="p.bin")

@server.callable
def remember(tag="remember"):
    server.session["n"] = server.session.get("n", 0) + 1
    record(tag)
    return server.session["n"]

@server.callable
def sid():
    return server.session.session_id
"""


def runs_of(runs: Path, tag: str) -> int:
    return runs.read_text().splitlines().count(tag) if runs.exists() else 0


def key() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("idempotency-runs") / "runs.txt"


def write_apps(runs: Path) -> Any:
    def write(root: Path) -> None:
        source = once_app(runs)
        write_notebook(root / "once.ipynb", [source], {"kernels": {"min": 1, "max": 2}, "call_timeout": 20})
        write_notebook(
            root / "twice.ipynb",
            [source],
            {"kernels": {"min": 1, "max": 1}, "allowed_origins": ["https://friend.example"]},
        )

    return write


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, runs: Path) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "idempotency", write_apps(runs)) as started:
        started.wait_until_loaded(("once", "twice"))
        yield started


def post(server: AnvilServer, function: str, *args: Any, app: str = "once", **headers: str) -> httpx.Response:
    return server.post(app, function, {"args": list(args), "kwargs": {}}, headers=headers)


def session_token(server: AnvilServer) -> str:
    """A stored session's token: one keyed call gives it."""
    response = post(server, "sid", **{KEY: key()})
    assert response.status_code == 200, response.text
    return response.headers[SESSION]


# -- HTTP ------------------------------------------------------------------------------------
async def test_ten_concurrent_http_arrivals_of_one_key_run_the_function_once(server: AnvilServer, runs: Path) -> None:
    token, the_key, tag = session_token(server), key(), f"c-{key()}"
    async with httpx.AsyncClient(timeout=60) as client:
        url = f"{server.url}anvil/apps/once/_/call/slow"
        responses = await asyncio.gather(
            *(client.post(url, json={"args": [tag, 1.5]}, headers={SESSION: token, KEY: the_key}) for _ in range(10))
        )
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    assert {r.json()["response"] for r in responses} == {responses[0].json()["response"]}
    assert runs_of(runs, tag) == 1
    assert sum(r.headers.get(REPLAYED) == "true" for r in responses) == 9
    assert all(r.headers[SESSION] == token for r in responses)
    later = post(server, "slow", tag, 1.5, **{SESSION: token, KEY: the_key})
    assert later.headers[REPLAYED] == "true" and later.json() == responses[0].json()
    assert runs_of(runs, tag) == 1


def test_a_keyed_call_with_no_session_stores_one_and_a_replay_with_its_token_is_the_stored_outcome(
    server: AnvilServer, runs: Path
) -> None:
    the_key, tag = key(), f"fresh-{key()}"
    first = post(server, "bump", tag, **{KEY: the_key})
    assert first.status_code == 200, first.text
    assert REPLAYED not in first.headers
    token = first.headers[SESSION]
    replay = post(server, "bump", tag, **{KEY: the_key, SESSION: token})
    assert replay.status_code == 200 and replay.headers[REPLAYED] == "true"
    assert replay.json() == first.json() and replay.headers[SESSION] == token
    assert runs_of(runs, tag) == 1
    # the same session (as server code sees it) holds the key
    assert post(server, "sid", **{SESSION: token}).json()["response"] == first.json()["response"]["session"]


def test_the_same_key_in_another_session_or_app_runs_anew(server: AnvilServer, runs: Path) -> None:
    the_key, tag = key(), f"scope-{key()}"
    one, two = session_token(server), session_token(server)
    first = post(server, "bump", tag, **{KEY: the_key, SESSION: one})
    other_session = post(server, "bump", tag, **{KEY: the_key, SESSION: two})
    no_session = post(server, "bump", tag, **{KEY: the_key})  # a fresh session: its own scope
    other_app = post(server, "bump", tag, app="twice", **{KEY: the_key, SESSION: session_token_of(server, "twice")})
    for response in (first, other_session, no_session, other_app):
        assert response.status_code == 200, response.text
        assert REPLAYED not in response.headers
    assert runs_of(runs, tag) == 4
    sessions = {r.json()["response"]["session"] for r in (first, other_session, no_session)}
    assert len(sessions) == 3  # nobody read another's outcome
    # a token of app "once" names no session of app "twice": refused, never a replay
    cross = post(server, "bump", tag, app="twice", **{KEY: the_key, SESSION: one})
    assert cross.status_code == 401 and REPLAYED not in cross.headers
    assert runs_of(runs, tag) == 4


def session_token_of(server: AnvilServer, app: str) -> str:
    response = post(server, "sid", app=app, **{KEY: key()})
    assert response.status_code == 200, response.text
    return response.headers[SESSION]


def test_a_raised_error_is_stored_and_replayed_not_run_again(server: AnvilServer, runs: Path) -> None:
    token, the_key, tag = session_token(server), key(), f"err-{key()}"
    first = post(server, "fails", tag, **{KEY: the_key, SESSION: token})
    replay = post(server, "fails", tag, **{KEY: the_key, SESSION: token})
    assert first.status_code == replay.status_code == 500
    assert replay.json() == first.json() and replay.json()["error"]["type"] == "ValueError"
    assert replay.headers[REPLAYED] == "true" and runs_of(runs, tag) == 1


def test_media_and_session_changes_are_part_of_the_stored_outcome(server: AnvilServer, runs: Path) -> None:
    token, the_key, tag = session_token(server), key(), f"media-{key()}"
    first = post(server, "picture", tag, **{KEY: the_key, SESSION: token})
    replay = post(server, "picture", tag, **{KEY: the_key, SESSION: token})
    assert first.status_code == 200 and replay.json() == first.json()
    assert first.json()["objects"][0]["base64"]  # the bytes themselves came back again
    assert runs_of(runs, tag) == 1
    counted, tag = key(), f"rem-{key()}"
    assert post(server, "remember", tag, **{KEY: counted, SESSION: token}).json()["response"] == 1
    assert post(server, "remember", tag, **{KEY: counted, SESSION: token}).json()["response"] == 1
    assert post(server, "remember", tag, **{SESSION: token}).json()["response"] == 2  # changed once, not twice


def test_a_call_refused_before_it_ran_releases_its_key(server: AnvilServer, runs: Path) -> None:
    token, the_key = session_token(server), key()
    missing = post(server, "no_such_function", **{KEY: the_key, SESSION: token})
    assert missing.status_code == 404
    tag = f"released-{key()}"
    # the same key now names a function that exists: nothing ran before, so it runs
    ran = post(server, "bump", tag, **{KEY: the_key, SESSION: token})
    assert ran.status_code == 200 and REPLAYED not in ran.headers and runs_of(runs, tag) == 1
    scoped = post(server, "a:b", **{KEY: key(), SESSION: token})
    assert scoped.status_code == 403


def test_a_keyed_call_to_no_app_stores_nothing(server: AnvilServer) -> None:
    """A key sent to a name no app has is refused before a session or claim is stored."""
    database = server.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db"

    def rows() -> tuple[int, int]:
        db = sqlite3.connect(database, timeout=5)
        try:
            counts = [
                db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("anvil_sessions", "anvil_idempotency")
            ]
        finally:
            db.close()
        return counts[0], counts[1]

    before = rows()
    for n in range(5):
        refused = post(server, "bump", app=f"no-app-{n}", **{KEY: key()})
        assert refused.status_code == 404 and SESSION not in refused.headers, refused.text
    assert rows() == before


@pytest.mark.parametrize(
    "bad",
    ["short", "x" * 129, "has space in it", "semi;colon;key", "a/b/c/d/e/f", "é" * 12, "k" * 10_000],
    ids=["short", "long", "space", "semicolon", "slash", "non-ascii", "10k"],
)
def test_a_malformed_key_is_a_400_naming_the_header_and_nothing_runs(server: AnvilServer, runs: Path, bad: str) -> None:
    tag, before = f"bad-{key()}", stored_keys(server)
    response = httpx.post(
        f"{server.url}anvil/apps/once/_/call/bump",
        content=json.dumps({"args": [tag]}).encode(),
        headers={"Content-Type": "application/json", KEY: bad.encode("utf-8")},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "anvil.server.SerializationError"
    assert "Idempotency-Key" in error["message"] and "8 to 128 characters" in error["message"]
    assert len(error["message"]) < 300 and SESSION not in response.headers
    assert runs_of(runs, tag) == 0 and stored_keys(server) == before


def test_two_key_headers_are_refused(server: AnvilServer) -> None:
    response = httpx.post(
        f"{server.url}anvil/apps/once/_/call/bump",
        content=b"{}",
        headers=[("Content-Type", "application/json"), (KEY, key()), (KEY, key())],
        timeout=30,
    )
    assert response.status_code == 400


def test_a_100_kb_key_header_is_refused_and_the_server_stays_up(server: AnvilServer) -> None:
    try:
        response = post(server, "bump", **{KEY: "k" * 100_000})
        assert 400 <= response.status_code < 500
    except (httpx.RemoteProtocolError, httpx.ReadError):
        pass  # tornado drops a request whose headers exceed its 64 KiB limit (a bare 400 or a reset)
    assert post(server, "sid").status_code == 200


def test_cors_preflight_allows_the_key_header(server: AnvilServer) -> None:
    response = httpx.options(f"{server.url}anvil/apps/once/_/call/bump", timeout=30)
    assert response.status_code == 204
    assert KEY in response.headers["Access-Control-Allow-Headers"]


# -- WebSocket -------------------------------------------------------------------------------
async def ws_call(socket: Any, call_id: str, command: str, *args: Any, idempotency_key: Any = None) -> None:
    message: dict[str, Any] = {"type": "CALL", "id": call_id, "command": command, "args": list(args), "kwargs": {}}
    if idempotency_key is not None:
        message["idempotencyKey"] = idempotency_key
    await socket.send(json.dumps(message))


async def read_until(socket: Any, call_id: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    while True:
        frame = await asyncio.wait_for(socket.recv(), 60)
        if isinstance(frame, bytes):
            continue
        message = json.loads(frame)
        seen.append(message)
        if message.get("id") == call_id and "type" not in message:
            return message


async def test_websocket_keyed_call_on_a_fresh_session_is_told_its_token_before_it_runs(
    server: AnvilServer, runs: Path
) -> None:
    the_key, tag = key(), f"ws-{key()}"
    async with websockets.connect(server.ws_url("once")) as socket:
        await socket.send(json.dumps({"type": "HELLO", "session": None, "client": "browser"}))
        seen: list[dict[str, Any]] = []
        await ws_call(socket, "c1", "slow", tag, 1.0, idempotency_key=the_key)
        first_frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
        assert first_frame == {"type": "SESSION", "session": None}  # the HELLO's answer
        told = json.loads(await asyncio.wait_for(socket.recv(), 30))
        assert told["type"] == "SESSION" and told["call"] == "c1" and told["session"]
        assert runs_of(runs, tag) == 0  # told before the call ran (it sleeps a second first)
        reply = await read_until(socket, "c1", seen)
        assert "replayed" not in reply and isinstance(reply["response"], int)
        token = told["session"]
    # the reply was "lost": a new connection replays the key with the token
    async with websockets.connect(server.ws_url("once")) as socket:
        await socket.send(json.dumps({"type": "HELLO", "session": token, "client": "browser"}))
        seen = []
        await ws_call(socket, "c2", "slow", tag, 1.0, idempotency_key=the_key)
        replay = await read_until(socket, "c2", seen)
        assert replay["replayed"] is True and replay["response"] == reply["response"]
    assert runs_of(runs, tag) == 1
    # and over HTTP with the same token and key: the same outcome
    over_http = post(server, "slow", tag, 1.0, **{KEY: the_key, SESSION: token})
    assert over_http.headers[REPLAYED] == "true" and over_http.json()["response"] == reply["response"]
    assert runs_of(runs, tag) == 1


async def test_websocket_and_http_arrivals_of_one_key_at_once_run_it_once(server: AnvilServer, runs: Path) -> None:
    token, the_key, tag = session_token(server), key(), f"mixed-{key()}"
    async with websockets.connect(server.ws_url("once")) as socket, httpx.AsyncClient(timeout=60) as client:
        await socket.send(json.dumps({"type": "HELLO", "session": token, "client": "browser"}))
        url = f"{server.url}anvil/apps/once/_/call/slow"
        for n in range(3):
            await ws_call(socket, f"m{n}", "slow", tag, 1.5, idempotency_key=the_key)
        https = await asyncio.gather(
            *(client.post(url, json={"args": [tag, 1.5]}, headers={SESSION: token, KEY: the_key}) for _ in range(3))
        )
        seen: list[dict[str, Any]] = []
        replies = [await read_until(socket, f"m{n}", seen) for n in range(3)]
    answers = {r["response"] for r in replies} | {r.json()["response"] for r in https}
    assert len(answers) == 1 and runs_of(runs, tag) == 1
    fresh = [r for r in replies if not r.get("replayed")] + [r for r in https if REPLAYED not in r.headers]
    assert len(fresh) == 1


async def test_websocket_replay_of_a_media_reply_sends_the_media_again(server: AnvilServer, runs: Path) -> None:
    the_key, tag = key(), f"wsm-{key()}"
    async with websockets.connect(server.ws_url("once")) as socket:
        await socket.send(json.dumps({"type": "HELLO", "session": None, "client": "browser"}))
        seen: list[dict[str, Any]] = []
        got: list[tuple[dict[str, Any], dict[str, Any], bytes]] = []
        for call_id in ("p1", "p2"):
            await ws_call(socket, call_id, "picture", tag, idempotency_key=the_key)
            reply = await read_until(socket, call_id, seen)
            header = json.loads(await asyncio.wait_for(socket.recv(), 30))
            content = await asyncio.wait_for(socket.recv(), 30)
            assert header["type"] == "CHUNK_HEADER" and header["requestId"] == call_id
            got.append((reply, header, content))
    (first, _, first_bytes), (replay, _, replay_bytes) = got
    assert "replayed" not in first and replay["replayed"] is True
    assert replay["objects"] == first["objects"] and replay_bytes == first_bytes == bytes(range(256)) * 4
    assert runs_of(runs, tag) == 1


async def test_websocket_malformed_key_is_that_calls_error_and_the_connection_stays(server: AnvilServer) -> None:
    async with websockets.connect(server.ws_url("once")) as socket:
        await socket.send(json.dumps({"type": "HELLO", "session": None, "client": "browser"}))
        seen: list[dict[str, Any]] = []
        for n, bad in enumerate(["short", 12345678, "x" * 200, {"a": 1}]):
            await ws_call(socket, f"b{n}", "sid", idempotency_key=bad)
            reply = await read_until(socket, f"b{n}", seen)
            assert reply["error"]["type"] == "anvil.server.SerializationError"
            assert "idempotencyKey" in reply["error"]["message"]
        await ws_call(socket, "ok", "sid")
        assert "response" in await read_until(socket, "ok", seen)


# -- the online check and session.keep -------------------------------------------------------
def test_check_app_online(server: AnvilServer) -> None:
    url = f"{server.url}anvil/apps/once/_/check-app-online"
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"online": True, "app": "once", "status": "ready"}
    assert response.headers["Cache-Control"] == "no-store"
    assert SESSION not in response.headers and "Set-Cookie" not in response.headers
    head = httpx.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b""
    missing = httpx.get(f"{server.url}anvil/apps/nope/_/check-app-online", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "anvil.server.NoServerFunctionError"
    foreign = httpx.get(url, headers={"Origin": "http://evil.example"}, timeout=30)
    assert foreign.status_code == 403
    rebound = httpx.get(url, headers={"Host": "evil.example"}, timeout=30)
    assert rebound.status_code == 403
    # a page of an origin the app lists may ask, and read the answer
    friend = httpx.get(
        f"{server.url}anvil/apps/twice/_/check-app-online", headers={"Origin": "https://friend.example"}, timeout=30
    )
    assert friend.status_code == 200 and friend.headers["Access-Control-Allow-Origin"] == "https://friend.example"


def test_a_replayed_reply_is_readable_by_a_listed_origin(server: AnvilServer) -> None:
    preflight = httpx.options(
        f"{server.url}anvil/apps/twice/_/call/bump",
        headers={"Origin": "https://friend.example", "Access-Control-Request-Headers": "idempotency-key"},
        timeout=30,
    )
    assert preflight.status_code == 204 and KEY in preflight.headers["Access-Control-Allow-Headers"]
    the_key = key()
    friend = {KEY: the_key, "Origin": "https://friend.example"}
    first = post(server, "sid", app="twice", **friend)
    replay = post(server, "sid", app="twice", **friend, **{SESSION: first.headers[SESSION]})
    assert replay.headers[REPLAYED] == "true"
    assert REPLAYED in replay.headers["Access-Control-Expose-Headers"]


def test_session_keep_stores_the_session_and_hands_back_its_token(server: AnvilServer) -> None:
    kept = post(server, "anvil.private.session.keep", **{"X-Anvil-Client": "browser"})
    assert kept.status_code == 200 and kept.json()["response"] is None
    token = kept.headers[SESSION]
    first = post(server, "remember", "keep", **{SESSION: token})
    second = post(server, "remember", "keep", **{SESSION: token})
    assert (first.json()["response"], second.json()["response"]) == (1, 2)  # one session throughout
    again = post(server, "anvil.private.session.keep", **{SESSION: token})
    assert again.headers[SESSION] == token


# -- bounds ----------------------------------------------------------------------------------
def test_many_distinct_keys_respect_idempotency_kept_and_big_outcomes_are_not_kept_whole(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    runs = tmp_path_factory.mktemp("kept") / "runs.txt"
    options = ("--AnvilApp.idempotency_kept=5", "--AnvilApp.idempotency_max_bytes=500")
    with private_server(tmp_path_factory, "kept", write_apps(runs), *options) as small:
        small.wait_until_loaded(("once",))
        token = session_token(small)
        keys = [key() for _ in range(15)]
        with httpx.Client(timeout=30) as client:
            for n, each in enumerate(keys):
                response = client.post(
                    f"{small.url}anvil/apps/once/_/call/bump",
                    json={"args": [f"k{n}"]},
                    headers={SESSION: token, KEY: each},
                )
                assert response.status_code == 200
        assert stored_keys(small) <= 5
        newest = post(small, "bump", "k14", **{SESSION: token, KEY: keys[-1]})
        assert newest.headers.get(REPLAYED) == "true"
        oldest = post(small, "bump", "k0", **{SESSION: token, KEY: keys[0]})
        assert REPLAYED not in oldest.headers and runs_of(runs, "k0") == 2  # dropped: it ran anew

        # an outcome over idempotency_max_bytes: the live caller gets it whole, a replay an error
        big = key()
        live = post(small, "picture", "big", **{SESSION: token, KEY: big})
        assert live.status_code == 200 and live.json()["objects"][0]["base64"]
        replay = post(small, "picture", "big", **{SESSION: token, KEY: big})
        assert replay.status_code == 500 and replay.headers[REPLAYED] == "true"
        assert replay.json()["error"] == {
            "type": "anvil.server.InternalError",
            "message": "This call ran, but its result was too large to keep for a replay",
            "trace": [],
        }
        assert runs_of(runs, "big") == 1


def stored_keys(server: AnvilServer) -> int:
    database = server.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db"
    db = sqlite3.connect(database, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM anvil_idempotency").fetchone()[0])
    finally:
        db.close()


def test_expired_outcomes_run_again(tmp_path_factory: pytest.TempPathFactory) -> None:
    runs = tmp_path_factory.mktemp("expiry") / "runs.txt"
    with private_server(tmp_path_factory, "expiry", write_apps(runs), "--AnvilApp.idempotency_hours=0.0003") as quick:
        quick.wait_until_loaded(("once",))
        token, the_key = session_token(quick), key()
        post(quick, "bump", "e", **{SESSION: token, KEY: the_key})
        assert post(quick, "bump", "e", **{SESSION: token, KEY: the_key}).headers.get(REPLAYED) == "true"
        time.sleep(1.3)
        again = post(quick, "bump", "e", **{SESSION: token, KEY: the_key})
        assert REPLAYED not in again.headers and runs_of(runs, "e") == 2


def write_apps_and_a_broken_one(runs: Path) -> Any:
    def write(root: Path) -> None:
        write_apps(runs)(root)
        write_notebook(root / "broken.ipynb", ["from jupyter_anvil import server\n1 / 0"])

    return write


def test_a_lost_reply_is_replayed_after_its_session_expired_and_never_run_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A client offline longer than its session lives sends a call again whose reply was
    lost: the server answers from the key's outcome (found by the token the call was sent
    with), where a call that never ran is refused as any call of an expired session."""
    runs = tmp_path_factory.mktemp("gone-session") / "runs.txt"
    with private_server(
        tmp_path_factory, "gone-session", write_apps_and_a_broken_one(runs), "--AnvilApp.session_idle_minutes=0.03"
    ) as quick:
        quick.wait_until_loaded(("once",))
        token, the_key, tag = session_token(quick), key(), f"gone-{key()}"
        first = post(quick, "bump", tag, **{SESSION: token, KEY: the_key})
        assert first.status_code == 200 and runs_of(runs, tag) == 1
        time.sleep(2.5)  # the session (1.8 s idle at most) is gone
        again = post(quick, "bump", tag, **{SESSION: token, KEY: the_key})
        assert again.status_code == 200, again.text
        assert again.headers.get(REPLAYED) == "true" and again.json() == first.json()
        assert runs_of(runs, tag) == 1
        never_ran = post(quick, "bump", tag, **{SESSION: token, KEY: key()})
        assert never_ran.json()["error"]["type"] == "anvil.server.SessionExpiredError"
        assert "Retry-After" not in never_ran.headers and runs_of(runs, tag) == 1


def test_a_keyed_call_refused_for_a_cause_that_may_pass_says_when_to_send_it_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """An offline queue sends again what did not run for a passing cause (Retry-After), and
    gives up on what would fail the same way again."""
    runs = tmp_path_factory.mktemp("retry") / "runs.txt"
    with private_server(tmp_path_factory, "retry", write_apps_and_a_broken_one(runs)) as started:
        started.wait_until_loaded(("once", "broken"))
        token = session_token(started)
        unavailable = post(started, "anything", app="broken", **{KEY: key()})  # (a session of its own)
        assert unavailable.status_code == 503, unavailable.text
        assert unavailable.headers.get("Retry-After") == "2"
        assert "Retry-After" not in post(started, "anything", app="broken").headers  # no key: not queued
        missing = post(started, "no_such_function", **{SESSION: token, KEY: key()})
        assert missing.status_code == 404 and "Retry-After" not in missing.headers
        raised = post(started, "fails", "retry-fails", **{SESSION: token, KEY: key()})
        assert raised.status_code == 500 and "Retry-After" not in raised.headers  # it ran: final


def test_a_negative_setting_stops_the_server_with_a_clear_message(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("negative-root")
    write_apps(tmp_path_factory.mktemp("negative") / "runs.txt")(root)
    server = AnvilServer(root, tmp_path_factory.mktemp("negative-server"), "--AnvilApp.idempotency_hours=-1")
    with pytest.raises(AssertionError):
        server.start()
    assert "idempotency_hours cannot be negative" in server.log_path.read_text()


# -- restarts --------------------------------------------------------------------------------
def test_outcomes_survive_a_restart_and_a_killed_run_is_never_run_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    runs = tmp_path_factory.mktemp("restart") / "runs.txt"
    with private_server(tmp_path_factory, "restart", write_apps(runs)) as restarting:
        restarting.wait_until_loaded(("once",))
        token, done_key, cut_key = session_token(restarting), key(), key()
        first = post(restarting, "bump", "r", **{SESSION: token, KEY: done_key})
        assert first.status_code == 200
        restarting.stop()
        restarting.start(wait_for=("once",))
        replay = post(restarting, "bump", "r", **{SESSION: token, KEY: done_key})
        assert replay.headers[REPLAYED] == "true" and replay.json() == first.json()
        assert runs_of(runs, "r") == 1

        # a run cut off by a SIGKILL: at most once, so its replay says it may not have finished
        with httpx.Client(timeout=60) as client:
            url = f"{restarting.url}anvil/apps/once/_/call/slow"
            headers = {SESSION: token, KEY: cut_key}
            threading.Thread(
                target=lambda: _ignore(lambda: client.post(url, json={"args": ["cut", 3.0]}, headers=headers)),
                daemon=True,
            ).start()
            deadline = time.monotonic() + 30
            while not _claimed(restarting, cut_key) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert restarting.process is not None
            restarting.process.send_signal(signal.SIGKILL)
            restarting.process.wait(10)
        for pid in restarting.kernel_processes():  # the kernels of the killed server
            _ignore(lambda pid=pid: os.kill(pid, signal.SIGKILL))
        restarting.log_file.close()
        restarting.start(wait_for=("once",))
        cut = post(restarting, "slow", "cut", 3.0, **{SESSION: token, KEY: cut_key})
        assert cut.status_code == 500, cut.text
        assert cut.json()["error"]["type"] == "anvil.server.ExecutionTerminatedError"
        assert "may not have finished" in cut.json()["error"]["message"]
        assert cut.headers[REPLAYED] == "true"
        time.sleep(3.5)
        assert runs_of(runs, "cut") == 0  # killed before it wrote, and never run again


def _claimed(server: AnvilServer, the_key: str) -> bool:
    database = server.workdir / "jupyter_data_dir" / "jupyter_anvil" / "anvil.db"
    db = sqlite3.connect(database, timeout=5)
    try:
        return db.execute("SELECT 1 FROM anvil_idempotency WHERE key = ?", (the_key,)).fetchone() is not None
    finally:
        db.close()


def _ignore(work: Any) -> None:
    with contextlib.suppress(Exception):
        work()
