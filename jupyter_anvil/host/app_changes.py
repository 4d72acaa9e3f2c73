"""The live feed's app events: an app's listing each time it changes, coalesced.

An app changes often (every call leases a kernel and gives it back), so its listing is
published at once on a first change, then at most once per ``interval`` (the latest
state wins: a change inside the interval is published at its end), and never when it
equals the listing published last. Nothing is done while nobody follows the feed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .feed import EventFeed

if TYPE_CHECKING:
    from .api_types import AppEvent, AppRemovedEvent, ListedApp

#: seconds between two events of one app (at most ~4 a second)
INTERVAL = 0.25


class AppChanges:
    """``listing(name)`` renders an app now (None: there is no such app any more)."""

    def __init__(self, listing: Callable[[str], ListedApp | None], interval: float = INTERVAL) -> None:
        self.listing = listing
        self.interval = interval
        self.feed: EventFeed[AppEvent | AppRemovedEvent] = EventFeed("apps feed")
        self._published: dict[str, ListedApp] = {}
        self._published_at: dict[str, float] = {}
        self._due: dict[str, asyncio.Handle] = {}

    def changed(self, name: str) -> None:
        """Something the listing of ``name`` shows may have changed."""
        if not self.feed.subscribers:
            # nobody follows: what was published last means nothing to the next follower
            self._published.clear()
            return
        if name in self._due:
            return  # published at the end of the interval, as it is then
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # an app changed outside the event loop (a test's setup)
            return
        wait = self._published_at.get(name, float("-inf")) + self.interval - loop.time()
        # never at once: a change is often several fields assigned in a row (status, then its
        # error), and told from inside whatever made it (a pool releasing a kernel), which a
        # failing listing must not break; the next turn of the loop sees them all
        if wait <= 0:
            self._due[name] = loop.call_soon(self._publish, name)
        else:
            self._due[name] = loop.call_later(wait, self._publish, name)

    def removed(self, name: str) -> None:
        """``name`` is no longer an app (its notebook deleted, or no longer an app)."""
        due = self._due.pop(name, None)
        if due is not None:
            due.cancel()
        self._published.pop(name, None)
        self._published_at.pop(name, None)
        if self.feed.subscribers:
            event: AppRemovedEvent = {"type": "app_removed", "name": name}
            self.feed.publish(event)

    def _publish(self, name: str) -> None:
        self._due.pop(name, None)
        listed = self.listing(name)
        if listed is None or listed == self._published.get(name):
            return
        self._published[name] = listed
        self._published_at[name] = asyncio.get_running_loop().time()
        event: AppEvent = {"type": "app", "app": listed}
        self.feed.publish(event)
