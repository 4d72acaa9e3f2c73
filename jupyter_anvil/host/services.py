"""The host's services, built once and shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from .apps import AppManager
from .calls import CallService
from .logs import AppLog


@dataclass
class Services:
    apps: AppManager
    calls: CallService
    app_log: AppLog
