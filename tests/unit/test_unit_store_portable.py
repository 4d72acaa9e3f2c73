"""What differs between SQLite and PostgreSQL, held alike by the store (each test runs on both):
NUL characters (PostgreSQL's text cannot hold them), numbers the database gives, concurrent
merges of one session from two servers, and reads of what another server wrote."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import sqlalchemy as sa

from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.schedules.store import ScheduleStore
from jupyter_anvil.host.store import SessionRecord, Store, TaskRecord, TaskStore, metadata
from jupyter_anvil.host.store.types import REPLACEMENT

NUL_TEXT = "before\x00after"


def stored_form(text: str, store: Store) -> str:
    """``text`` as the store keeps it: PostgreSQL has U+FFFD where a NUL was."""
    return text.replace("\x00", REPLACEMENT) if store.engine.dialect.name == "postgresql" else text


async def test_nul_in_printed_output_and_the_log_is_kept_as_well_as_the_database_can(store: Store) -> None:
    tasks = TaskStore(store)
    await tasks.insert(TaskRecord(id="t1", app="app", name="job", status="running", launched=time.time()))
    await tasks.append_output("t1", NUL_TEXT, 0)
    await tasks.update("t1", {"status": "failed", "traceback": NUL_TEXT, "error": {"type": "E", "message": NUL_TEXT}})
    record = await tasks.get("t1")
    assert record is not None and record.status == "failed"
    assert record.output == record.traceback == stored_form(NUL_TEXT, store)
    assert record.error is not None and record.error["message"] == NUL_TEXT  # JSON text escapes it: exact
    log = AppLog(store)
    log.write("app", "f\x00n", "call\x00", "stdout", NUL_TEXT)
    await log.flush()
    (kept,) = await log.read("app")
    assert kept["text"] == stored_form(NUL_TEXT, store) and kept["function"] == stored_form("f\x00n", store)


async def test_a_query_with_a_nul_finds_nothing_instead_of_failing(store: Store) -> None:
    tasks = TaskStore(store)
    await tasks.insert(TaskRecord(id="t1", app="app", name="job", status="queued", launched=time.time()))
    assert await tasks.list(app="app\x00") == []
    assert await tasks.list(name="\x00") == []
    assert await tasks.get("t1\x00") is None
    assert await AppLog(store).read("\x00") == []
    assert await store.load_session("\x00" * 64, 0) is None


async def test_session_data_with_nul_round_trips_exactly(store: Store) -> None:
    now = time.time()
    data = {NUL_TEXT: {"v": NUL_TEXT, "objects": []}}
    await store.insert_session(SessionRecord("h" * 64, "i" * 32, "app", "browser", data, now, now))
    assert await store.save_session_changes("h" * 64, {"k\x00": {"v": 1, "objects": []}}, [], touch=True)
    record = await store.load_session("h" * 64, 0)
    assert record is not None and record.data == {**data, "k\x00": {"v": 1, "objects": []}}


async def test_two_servers_merging_one_session_at_once_keep_every_key(store: Store) -> None:
    # another Store over the same database is another server: its own thread and connections
    other = Store(store.url)
    try:
        now = time.time()
        await store.insert_session(SessionRecord("h" * 64, "i" * 32, "app", "browser", {}, now, now))
        writes = [
            (server.save_session_changes("h" * 64, {f"{name}{n}": {"v": n, "objects": []}}, [], touch=True))
            for n in range(20)
            for server, name in ((store, "a"), (other, "b"))
        ]
        assert all(await asyncio.gather(*writes))
        record = await other.load_session("h" * 64, 0)
        assert record is not None and len(record.data) == 40
    finally:
        other.close()


async def test_log_numbers_come_from_the_database_across_servers(store: Store) -> None:
    other = Store(store.url)
    try:
        one, two = AppLog(store), AppLog(other)
        for n in range(5):
            (one if n % 2 else two).write("app", "f", f"c{n}", "stdout", f"line {n}")
            await one.flush()
            await two.flush()
        seqs = [r["seq"] for r in await one.read("app")]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        assert [r["text"] for r in await two.read("app", since=seqs[1])] == ["line 2", "line 3", "line 4"]
    finally:
        other.close()


async def test_a_reader_tailing_the_log_misses_no_record_of_a_slower_writer(store: Store) -> None:
    # server one takes its number first but commits last; server two writes meanwhile. A
    # reader tailing by seq must still get both: numbers commit in the order they are given
    slow, fast = Store(store.url), Store(store.url)
    inserted = threading.Event()

    @sa.event.listens_for(slow.engine, "after_cursor_execute")
    def hold_the_transaction(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO anvil_log"):
            inserted.set()
            time.sleep(0.5)  # numbered, not yet committed

    try:
        one, two, reader = AppLog(slow), AppLog(fast), AppLog(store)
        one.write("app", "f", "c1", "stdout", "from the slow server")
        two.write("app", "f", "c2", "stdout", "from the fast server")
        slow_flush = asyncio.ensure_future(one.flush())
        await asyncio.get_running_loop().run_in_executor(None, inserted.wait, 5)
        fast_flush = asyncio.ensure_future(two.flush())
        seen: list[str] = []
        since = 0
        while True:
            both_done = slow_flush.done() and fast_flush.done()
            for record in await reader.read("app", since=since):
                seen.append(record["text"])
                since = record["seq"]
            if both_done:
                break
            await asyncio.sleep(0.02)
        await asyncio.gather(slow_flush, fast_flush)
        assert sorted(seen) == ["from the fast server", "from the slow server"]
    finally:
        slow.close()
        fast.close()


async def test_names_longer_than_their_column_are_written_and_found_again(store: Store) -> None:
    # PostgreSQL enforces VARCHAR(255) where SQLite does not; a notebook deep in folders
    # has such a name: its records are kept and found by it on both
    app = "deep." * 60  # 300 characters
    tasks = TaskStore(store)
    await tasks.insert(TaskRecord(id="t1", app=app, name="n" * 300, status="queued", launched=time.time()))
    assert [t.id for t in await tasks.list(app=app)] == ["t1"]
    log = AppLog(store)
    log.write(app, "f", "c" * 100, "stdout", "kept")
    await log.flush()
    assert [r["text"] for r in await log.read(app)] == ["kept"]
    now = time.time()
    await store.insert_session(SessionRecord("h" * 64, "i" * 32, app, "x" * 40, {}, now, now))
    assert await store.load_session("h" * 64, 0) is not None


async def test_numbers_past_the_columns_range_page_to_nothing(store: Store) -> None:
    # the log API takes since up to 2**63; PostgreSQL's seq columns are INTEGER
    log = AppLog(store)
    log.write("app", "f", "c", "stdout", "one")
    await log.flush()
    assert await log.read("app", since=2**40) == []
    assert await log.read("app", since=2**63 - 1) == []
    assert [r["text"] for r in await log.read("app", since=0, limit=2**40)] == ["one"]
    assert await ScheduleStore(store).runs("s", before=2**40) == []


def test_every_text_column_uses_the_portable_types() -> None:
    # a table added with sa.String or sa.Text would fail on PostgreSQL at the first NUL or
    # over-long value: tables.py takes String and Text from store/types.py
    plain = [
        f"{table.name}.{column.name}"
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, sa.String)
    ]
    assert plain == []
