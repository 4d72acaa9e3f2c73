"""The app log's bounds, without a server: cuts that respect UTF-8, the per-call total,
and a pending list that cannot grow past its cap while the store is unreachable."""

from __future__ import annotations

import asyncio
import time

import pytest

from jupyter_anvil.host import logs
from jupyter_anvil.host.logs import AppLog, cut_to_bytes
from jupyter_anvil.host.store import Store


def test_cuts_never_split_a_character() -> None:
    assert cut_to_bytes("short", 10) == ("short", 0)
    kept, cut = cut_to_bytes("é" * 10, 5)  # two bytes each
    assert kept == "éé" and cut == 16
    assert cut_to_bytes("😀😀", 5) == ("😀", 4)


@pytest.fixture
def app_log(database_url: str) -> AppLog:
    store = Store(database_url)
    store.create_schema()
    return AppLog(store)


def test_a_call_keeps_at_most_a_mib_and_a_marker(app_log: AppLog) -> None:
    chunk = "z" * (300 * 1024)
    for _ in range(20):
        app_log.write("app", "f", "call-1", "stdout", chunk)
    app_log.write("app", "f", "call-1", "traceback", "Traceback: still kept\n")
    app_log.write("app", "f", "call-2", "stdout", "another call prints\n")
    records = asyncio.run(app_log.read("app"))
    texts = [r["text"] for r in records if r["call_id"] == "call-1" and r["stream"] == "stdout"]
    assert len(texts) == 16  # each record cut to 64 KiB (and its marker) until the call's MiB is full
    assert all("a log record keeps its first 64 KiB; 241664 more bytes dropped" in t for t in texts[:-1])
    assert 1024 * 1024 <= sum(len(t) for t in texts) <= 1024 * 1024 + 200
    assert "the rest of this call's output is dropped" in texts[-1]
    assert any(r["text"] == "Traceback: still kept\n" for r in records)  # tracebacks are not prints
    assert any(r["text"] == "another call prints\n" for r in records)


def test_pending_records_are_bounded_and_the_drop_is_said(app_log: AppLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "PENDING_LIMIT", 100_000)
    for i in range(1000):
        app_log.write("app", "f", f"call-{i}", "stdout", "x" * 1000)
    assert app_log._pending_bytes <= 100_000 and len(app_log._pending) < 100
    records = asyncio.run(app_log.read("app", limit=10000))
    dropped = [r for r in records if r["stream"] == "system"]
    assert len(dropped) == 1 and "log records of this app were dropped" in dropped[0]["text"]
    kept = len(records) - 1
    assert dropped[0]["text"].startswith(f"[jupyter-anvil: {1000 - kept} log records")


def test_stopping_never_raises_and_keeps_records_for_a_retry(app_log: AppLog, caplog: pytest.LogCaptureFixture) -> None:
    app_log.write("app", "f", "call-1", "stdout", "kept for the next try\n")
    app_log.store.close()  # every write now fails
    asyncio.run(app_log.stop(timeout=1))
    assert "could not store the last app log records at stop" in caplog.text
    assert [r["text"] for r in app_log._pending] == ["kept for the next try\n"]


def test_closing_a_busy_store_is_bounded(database_url: str) -> None:
    store = Store(database_url)
    store.create_schema()

    async def stuck() -> None:
        store._worker.submit(lambda: time.sleep(5))  # a statement waiting on another server's lock
        await asyncio.sleep(0.1)

    asyncio.run(stuck())
    started = time.monotonic()
    store.close(timeout=0.5)
    assert time.monotonic() - started < 1.5
    with pytest.raises(RuntimeError, match="closed"):
        store._worker.submit(lambda: None).result()
