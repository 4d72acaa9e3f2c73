"""The host's services, built once and shared by the handlers, and how the extension
starts and stops them (one list, in extension.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .apps import AppManager
from .calls import CallService
from .cookies import CookieSealer, CookieTickets
from .envs.service import EnvService
from .feed import EventFeed
from .handlers.socket_limits import MediaBudget
from .logs import AppLog
from .mail.store import MailEvent, MailStore
from .schedules.feed import ScheduleFeed
from .schedules.service import Scheduler
from .sessions import SessionService
from .tasks import TaskService


@dataclass
class Services:
    apps: AppManager
    calls: CallService
    app_log: AppLog
    sessions: SessionService
    cookies: CookieSealer
    cookie_tickets: CookieTickets
    tasks: TaskService
    media_budget: MediaBudget
    schedules: Scheduler
    #: the scheduler's events (changes, deletions, runs), for the live feed
    schedule_feed: ScheduleFeed
    #: every message sent or received, and their changes for the live feed
    mail: MailStore
    mail_feed: EventFeed[MailEvent]
    #: the Python environments apps with requirements run in
    envs: EnvService
    #: their events (status changes, build output) for the live feed
    env_feed: EventFeed[dict[str, Any]]


#: what a service's start or stop returns: nothing (done at once) or something to await
Step = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True)
class Lifecycle:
    """How the extension starts and stops one service: one line per service.

    ``stop_seconds`` bounds an awaited stop; a stop that is a plain function (the
    store's close) must bound itself, since the event loop cannot cut it short."""

    name: str
    start: Step | None
    stop: Step | None
    stop_seconds: float


async def start_services(services: Sequence[Lifecycle]) -> None:
    """Start each service in order. A failure propagates: a server whose store or
    task service cannot start must not come up half-working."""
    for service in services:
        if service.start is not None:
            started = service.start()
            if started is not None:
                await started


async def stop_services(services: Sequence[Lifecycle], log: logging.Logger) -> None:
    """Stop each service in order, each bounded and its failure logged, never raised:
    a stop that raises or waits forever leaves the server up after SIGTERM."""
    for service in services:
        if service.stop is None:
            continue
        try:
            stopping = service.stop()
            if stopping is not None:
                await asyncio.wait_for(stopping, service.stop_seconds)
        except asyncio.TimeoutError:
            log.warning("[jupyter-anvil] stopping %s took over %.0f s: left behind", service.name, service.stop_seconds)
        except Exception:
            log.exception("[jupyter-anvil] stopping %s failed", service.name)
