"""The live feed's app events are coalesced: the first change on the loop's next turn (so
fields assigned in a row go out together), then at most one
per interval with the latest state, none when nothing shown changed, none while nobody
follows; a removed app is said at once."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_anvil.host.app_changes import AppChanges


class Listing:
    def __init__(self) -> None:
        self.apps: dict[str, dict[str, Any]] = {"a": {"name": "a", "busy": 0}}

    def __call__(self, name: str) -> Any:
        return self.apps.get(name)


async def test_first_change_at_once_then_the_latest_per_interval() -> None:
    listing = Listing()
    changes = AppChanges(listing, interval=0.2)
    events: list[Any] = []
    unsubscribe = changes.feed.subscribe(events.append)
    listing.apps["a"] = {"name": "a", "busy": 1}
    changes.changed("a")
    assert events == []  # not from inside the change...
    await asyncio.sleep(0)
    assert events == [{"type": "app", "app": {"name": "a", "busy": 1}}]  # ...but at the loop's next turn
    for busy in (2, 3, 0):  # within the interval: only the last is sent, at its end
        listing.apps["a"] = {"name": "a", "busy": busy}
        changes.changed("a")
    assert len(events) == 1
    await asyncio.sleep(0.3)
    assert events[1:] == [{"type": "app", "app": {"name": "a", "busy": 0}}]
    await asyncio.sleep(0.3)
    changes.changed("a")  # nothing shown changed: no event
    assert len(events) == 2
    changes.removed("a")
    assert events[-1] == {"type": "app_removed", "name": "a"}
    unsubscribe()
    assert changes.feed.subscribers == 0


async def test_nothing_is_done_while_nobody_follows() -> None:
    listing = Listing()
    rendered: list[str] = []

    def render(name: str) -> Any:
        rendered.append(name)
        return listing(name)

    changes = AppChanges(render, interval=0.05)
    for _ in range(100):
        changes.changed("a")
    changes.removed("a")
    await asyncio.sleep(0.1)
    assert rendered == []


async def test_a_change_back_within_the_interval_sends_nothing_more() -> None:
    listing = Listing()
    changes = AppChanges(listing, interval=0.1)
    events: list[Any] = []
    changes.feed.subscribe(events.append)
    listing.apps["a"] = {"name": "a", "busy": 1}
    changes.changed("a")
    listing.apps["a"] = {"name": "a", "busy": 0}
    changes.changed("a")
    listing.apps["a"] = {"name": "a", "busy": 1}
    changes.changed("a")
    await asyncio.sleep(0.2)
    assert [e["app"]["busy"] for e in events] == [1]  # the state at the interval's end is the one sent


async def test_fields_assigned_in_a_row_go_out_together_and_a_failing_listing_breaks_no_change() -> None:
    """``app.status, app.error = "error", message`` tells twice; the panel must never see the
    error status with the previous (empty) error. A listing that raises is the loop's to log,
    never the changer's (a pool releasing a kernel) to suffer."""
    listing = Listing()
    changes = AppChanges(listing, interval=0.05)
    events: list[Any] = []
    changes.feed.subscribe(events.append)
    listing.apps["a"] = {"name": "a", "status": "error", "error": None}
    changes.changed("a")
    listing.apps["a"] = {"name": "a", "status": "error", "error": "boom"}
    changes.changed("a")
    await asyncio.sleep(0.01)
    assert [e["app"] for e in events] == [{"name": "a", "status": "error", "error": "boom"}]

    def broken(name: str) -> Any:
        raise RuntimeError("a listing bug")

    failing = AppChanges(broken, interval=0.05)
    failing.feed.subscribe(events.append)
    failing.changed("a")  # does not raise here
