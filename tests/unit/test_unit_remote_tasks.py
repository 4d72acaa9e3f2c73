"""RemoteTasks: other servers' tasks told on this server's feed, read from the store."""

from __future__ import annotations

import time
from typing import Any

from jupyter_anvil.host import remote_tasks
from jupyter_anvil.host.remote_tasks import RemoteTasks
from jupyter_anvil.host.store import Store, TaskRecord, TaskStore, TaskSummary
from jupyter_anvil.protocol import TaskStatus


def task(task_id: str, status: TaskStatus, owner: str | None, launched: float) -> TaskRecord:
    return TaskRecord(id=task_id, app="app", name="job", status=status, launched=launched, launched_by={}, owner=owner)


class Told:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def task(self, summary: TaskSummary) -> None:
        self.events.append(("task", (summary.id, summary.status)))

    def output(self, event: Any) -> None:
        self.events.append(("output", (event["id"], event["text"], event["offset"])))

    def take(self) -> list[tuple[str, Any]]:
        taken, self.events = self.events, []
        return taken


def follower(store: Store, told: Told) -> RemoteTasks:
    remote = RemoteTasks(store, "me", lambda: True, told.task, told.output)
    remote._since = time.time() - 1  # someone follows from a second ago (the loop sets it)
    return remote


async def test_other_servers_tasks_are_told_launch_output_and_end_in_order(store: Store) -> None:
    tasks, told = TaskStore(store), Told()
    remote = follower(store, told)
    now = time.time()
    await tasks.insert(task("before", "running", "other", now - 60))  # printed before anyone followed
    await tasks.append_output("before", "old\n", 0)
    await tasks.insert(task("mine", "running", "me", now))  # this server tells its own
    await tasks.insert(task("old-release", "running", None, now))
    await tasks.insert(task("done", "completed", "other", now))  # over before anyone followed
    await remote.poll()
    assert told.take() == [("task", ("before", "running"))]
    await tasks.insert(task("new", "queued", "other", now))
    await tasks.append_output("before", "more\n", 0)
    await remote.poll()
    assert told.take() == [("task", ("new", "queued")), ("output", ("before", "more\n", 9))]
    await remote.poll()
    assert told.take() == []  # nothing changed: nothing told
    await tasks.update("new", {"status": "running", "started": time.time()})
    await tasks.append_output("new", "a\n", 0)
    await tasks.update("before", {"status": "completed", "ended": time.time(), "output": "old\nmore\nlast\n"})
    await remote.poll()
    assert told.take() == [
        ("task", ("new", "running")),
        ("output", ("before", "last\n", 14)),
        ("output", ("new", "a\n", 2)),
        ("task", ("before", "completed")),  # its end after its last output
    ]
    await tasks.update("new", {"status": "missing", "ended": time.time()})  # its server is gone
    await remote.poll()
    assert told.take() == [("task", ("new", "missing"))]
    await remote.poll()
    assert told.take() == []


async def test_a_long_output_is_told_in_bounded_slices_before_its_end(store: Store, monkeypatch: Any) -> None:
    monkeypatch.setattr(remote_tasks, "OUTPUT_SLICE", 4)
    tasks, told = TaskStore(store), Told()
    remote = follower(store, told)
    await tasks.insert(task("t", "running", "other", time.time()))
    await remote.poll()
    assert told.take() == [("task", ("t", "running"))]
    await tasks.update("t", {"status": "completed", "ended": time.time(), "output": "abcdefghij"})
    await remote.poll()
    assert told.take() == [("output", ("t", "abcd", 4))]
    await remote.poll()
    assert told.take() == [("output", ("t", "efgh", 8))]
    await remote.poll()
    assert told.take() == [("output", ("t", "ij", 10)), ("task", ("t", "completed"))]
    await remote.poll()
    assert told.take() == []


async def test_at_most_max_followed_tasks_are_read_a_poll(store: Store, monkeypatch: Any) -> None:
    monkeypatch.setattr(remote_tasks, "MAX_FOLLOWED", 3)
    tasks, told = TaskStore(store), Told()
    remote = follower(store, told)
    now = time.time()
    for n in range(6):
        await tasks.insert(task(f"t{n}", "running", "other", now + n))
    await remote.poll()
    assert told.take() == [("task", (f"t{n}", "running")) for n in range(3)]  # the oldest first
    await remote.poll()
    assert told.take() == []  # still those three, and no more
    await tasks.update("t1", {"status": "completed", "ended": time.time()})
    await remote.poll()  # the one that ended is told; the next one takes its place at the poll after
    assert told.take() == [("task", ("t1", "completed"))]
    await remote.poll()
    assert told.take() == [("task", ("t3", "running"))]
