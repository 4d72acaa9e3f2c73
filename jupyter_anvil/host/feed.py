"""Events handed on to whoever follows them (the admin API's live feed): the scheduler's,
the mail records', the apps', the app log's, tasks' output. One class for every kind of event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")


class EventFeed(Generic[E]):
    """Each event published goes to every subscriber; one that fails is logged and the
    others still get it. ``what`` names the events in that log line."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._subscribers: set[Callable[[E], None]] = set()

    def publish(self, event: E) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("[jupyter-anvil] a subscriber to the %s failed", self.what)

    @property
    def subscribers(self) -> int:
        """How many follow it now (a publisher may skip the work of an event nobody gets)."""
        return len(self._subscribers)

    def subscribe(self, callback: Callable[[E], None]) -> Callable[[], None]:
        """``callback`` gets every event from now on; the returned function unsubscribes."""
        self._subscribers.add(callback)
        return lambda: self._subscribers.discard(callback)
