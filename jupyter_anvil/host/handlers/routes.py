"""The extension's URLs: the app surface (served to any caller without a token, unless
apps are off) and the admin API (Jupyter auth), each path with its handler."""

from __future__ import annotations

from typing import Any

from . import (
    admin,
    apps_off,
    calls,
    env_admin,
    feed,
    mail_admin,
    online,
    public_tasks,
    schedule_admin,
    service_worker,
    socket,
    static,
    task_admin,
)

APP = r"(?P<app>[A-Za-z0-9_][A-Za-z0-9_.\-]*)"
TASK_ID = r"(?P<task_id>[a-z2-7]{25})"
SCHEDULE_ID = r"(?P<schedule_id>[^/]+)"  # any id the store has; an unknown one is a 404 of ours
MAIL_ID = r"(?P<mail_id>[a-z2-7]{26})"


def anvil_handlers(serve_apps: bool) -> list[tuple[str, Any]]:
    """Every route, in the order tornado tries them; with apps off, the app surface's URLs
    answer 404 and the apps' admin routes say that apps are off."""
    handlers: list[tuple[str, Any]] = []
    if serve_apps:
        handlers.extend(
            [
                (r"/anvil/(client\.js|client/.*)", static.ClientScriptHandler),
                (rf"/anvil/apps/{APP}/_/call/(?P<function>[^/]+)", calls.HttpCallHandler),
                (rf"/anvil/apps/{APP}/_/ws", socket.CallSocketHandler),
                (rf"/anvil/apps/{APP}/_/cookies", calls.CookieTicketHandler),
                (rf"/anvil/apps/{APP}/_/tasks/(?P<task_id>[^/]*)", public_tasks.PublicTaskHandler),
                (rf"/anvil/apps/{APP}/_/check-app-online", online.CheckAppOnlineHandler),
                (rf"/anvil/apps/{APP}/sw\.js", service_worker.ServiceWorkerHandler),
                (rf"/anvil/apps/{APP}/(?P<path>(?!_/).*)", static.AppStaticHandler),
                (r"/anvil/api/apps", admin.AppsHandler),
                (rf"/anvil/api/apps/{APP}/requirements", env_admin.RequirementsHandler),
                (rf"/anvil/api/apps/{APP}/reload", admin.AppReloadHandler),
            ]
        )
    else:  # no app surface at all: its URLs answer 404
        handlers.append((r"/anvil/(?:client\.js|client/.*|apps/.*)", apps_off.AppsOffSurfaceHandler))
        handlers.append((r"/anvil/api/apps", apps_off.AppsOffHandler))
        handlers.append((r"/anvil/api/apps/.+", apps_off.AppsOffAppHandler))
    handlers.extend(
        [
            (r"/anvil/api/logs", admin.LogsHandler),
            (r"/anvil/api/envs", env_admin.EnvsHandler),
            (r"/anvil/api/envs/(?P<env_id>[^/]+)/log", env_admin.EnvLogHandler),
            (r"/anvil/api/tasks", task_admin.TasksHandler),
            (r"/anvil/api/feed", feed.FeedHandler),
            (r"/anvil/api/tasks/feed", feed.TaskFeedHandler),  # the feed as it was, for its clients
            (rf"/anvil/api/tasks/{TASK_ID}", task_admin.TaskHandler),
            (rf"/anvil/api/tasks/{TASK_ID}/output", task_admin.TaskOutputHandler),
            (rf"/anvil/api/tasks/{TASK_ID}/kill", task_admin.TaskKillHandler),
            (rf"/anvil/api/tasks/{TASK_ID}/media/(?P<media_id>\d{{1,6}})", task_admin.TaskMediaHandler),
            (r"/anvil/api/schedules", schedule_admin.SchedulesHandler),
            (rf"/anvil/api/schedules/{SCHEDULE_ID}", schedule_admin.ScheduleHandler),
            (rf"/anvil/api/schedules/{SCHEDULE_ID}/run", schedule_admin.ScheduleRunHandler),
            (rf"/anvil/api/schedules/{SCHEDULE_ID}/runs", schedule_admin.ScheduleRunsHandler),
            (r"/anvil/api/mail", mail_admin.MailListHandler),
            (rf"/anvil/api/mail/{MAIL_ID}", mail_admin.MailHandler),
            (rf"/anvil/api/mail/{MAIL_ID}/raw", mail_admin.MailRawHandler),
            (rf"/anvil/api/mail/{MAIL_ID}/parts/(?P<index>\d{{1,4}})", mail_admin.MailPartHandler),
        ]
    )
    return handlers
