"""The host's services, built once and shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from .apps import AppManager
from .calls import CallService
from .cookies import CookieSealer, CookieTickets
from .logs import AppLog
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
