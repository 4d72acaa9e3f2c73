"""The scheduler's events handed on to whoever follows them (the admin API's live feed)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .records import ScheduleEvent

log = logging.getLogger(__name__)

Subscriber = Callable[[ScheduleEvent], None]


class ScheduleFeed:
    """The scheduler's ``on_event``: each event goes to every subscriber; one that fails is
    logged and the others still get it."""

    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()

    def publish(self, event: ScheduleEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("[jupyter-anvil] schedule feed subscriber failed")

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """``callback`` gets every schedule change, deletion and run; the returned function
        unsubscribes."""
        self._subscribers.add(callback)
        return lambda: self._subscribers.discard(callback)
