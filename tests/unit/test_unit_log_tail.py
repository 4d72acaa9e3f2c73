"""The live feed's app log events: records read back from the store after each flush,
with their seq, from the moment one follows; split into events of bounded size; nothing
read while nobody follows."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_anvil.host import log_tail
from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.store import Store


async def settle(tail: log_tail.LogTail) -> None:
    for _ in range(100):
        await asyncio.sleep(0.01)
        if tail._reading is None or tail._reading.done():
            return


async def test_records_stored_after_subscribing_arrive_in_order_with_their_seq(store: Store) -> None:
    app_log = AppLog(store)
    app_log.write("a", "f", "c1", "stdout", "before anyone follows\n")
    await app_log.flush()
    events: list[Any] = []
    unsubscribe = app_log.tail.subscribe(events.append)
    await settle(app_log.tail)
    for i in range(5):
        app_log.write("a", "f", f"c{i}", "stdout", f"line {i}\n")
    await app_log.flush()
    await settle(app_log.tail)
    records = [r for e in events for r in e["records"]]
    assert [r["text"] for r in records] == [f"line {i}\n" for i in range(5)]
    assert records == await app_log.read("a", since=1)  # what anvil/api/logs reads, seq and all
    unsubscribe()
    app_log.write("a", "f", "c9", "stdout", "after\n")
    await app_log.flush()
    await settle(app_log.tail)
    assert len([r for e in events for r in e["records"]]) == 5
    again: list[Any] = []
    app_log.tail.subscribe(again.append)  # a new follower gets what is stored from now on only
    await settle(app_log.tail)
    app_log.write("a", "f", "c10", "stdout", "for the new follower\n")
    await app_log.flush()
    await settle(app_log.tail)
    assert [r["text"] for e in again for r in e["records"]] == ["for the new follower\n"]


async def test_big_records_are_split_into_bounded_events(store: Store) -> None:
    app_log = AppLog(store)
    events: list[Any] = []
    app_log.tail.subscribe(events.append)
    await settle(app_log.tail)
    for i in range(12):
        app_log.write("a", "f", f"c{i}", "stdout", f"{i:02d}" + "x" * 60000)
    await app_log.flush()
    await settle(app_log.tail)
    assert len(events) >= 3
    assert all(sum(len(r["text"]) for r in e["records"]) <= log_tail.BATCH_CHARS + 60002 for e in events)
    texts = [r["text"][:2] for e in events for r in e["records"]]
    assert texts == [f"{i:02d}" for i in range(12)]


async def test_nothing_is_read_while_nobody_follows(store: Store, monkeypatch: Any) -> None:
    app_log = AppLog(store)
    reads: list[int] = []
    original = app_log.read

    async def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(app_log, "read", counting)
    for i in range(3):
        app_log.write("a", "f", "c", "stdout", f"{i}\n")
        await app_log.flush()
    await settle(app_log.tail)
    assert reads == []
