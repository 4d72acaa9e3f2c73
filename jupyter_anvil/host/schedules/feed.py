"""The scheduler's events handed on to whoever follows them (the admin API's live feed)."""

from __future__ import annotations

from ..feed import EventFeed
from .records import ScheduleEvent


class ScheduleFeed(EventFeed[ScheduleEvent]):
    """The scheduler's ``on_event``: every schedule change, deletion and run."""

    def __init__(self) -> None:
        super().__init__("schedule feed")
