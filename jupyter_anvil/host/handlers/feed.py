"""The admin API's live feed (WebSocket, Jupyter auth): one connection tells a panel
everything that changes, so it need not poll.

``anvil/api/feed`` sends a :class:`~..api_types.HelloEvent` first, then one event per
message: tasks (launched, started, their state, ended) and what running tasks print,
schedules, mail, environments and their builds' output, apps (status, error, kernels...)
and app log records. ``anvil/api/tasks/feed`` is the feed as it was before, kept for its
clients: no hello, and only the kinds it always sent.

Bounded: a client that does not read is closed (1008, "feed reader too slow") once more
than :data:`MAX_UNSENT_BYTES` of messages wait to be sent to it; closing a connection
unsubscribes it from everything."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from tornado import web, websocket

from .. import api_types as api
from ..mail.records import MailSummary
from ..mail.store import MailEvent
from ..schedules.records import ScheduleEvent
from ..store import TaskSummary
from .admin import AUTH_RESOURCE
from .base import services
from .env_admin import env_feed_event
from .mail_admin import mail_json
from .schedule_admin import event_json
from .task_admin import summary_json

log = logging.getLogger(__name__)

#: bytes of messages a connection may have waiting to be sent (its client not reading)
MAX_UNSENT_BYTES = 8 * 1024 * 1024
TOO_SLOW = "feed reader too slow"


class TaskFeedHandler(JupyterHandler, websocket.WebSocketHandler):  # type: ignore[misc]
    """``anvil/api/tasks/feed``: tasks, schedules, mail and environments (the feed as it was)."""

    auth_resource = AUTH_RESOURCE
    #: whether this route sends the hello and the app, log and task output events
    full = False

    _subscriptions: tuple[Callable[[], None], ...] = ()
    _unsent = 0  # bytes written and not yet taken by the client's socket
    _cut = False

    async def pre_get(self) -> None:
        allowed = await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not allowed:
            raise web.HTTPError(403)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    def open(self, *args: Any, **kwargs: Any) -> None:
        found = services(self)
        subscriptions = [
            found.tasks.subscribe(self._send_task),
            found.schedule_feed.subscribe(self._send_schedule),
            found.mail_feed.subscribe(self._send_mail),
            found.env_feed.subscribe(self._send_env),
        ]
        if self.full:
            subscriptions += [
                found.apps.changes.feed.subscribe(self._send),
                found.app_log.tail.subscribe(self._send),
                found.tasks.output_feed.subscribe(self._send),
            ]
        self._subscriptions = tuple(subscriptions)
        if self.full:
            followers = {
                "tasks": found.tasks.subscribers,
                "schedules": found.schedule_feed.subscribers,
                "mail": found.mail_feed.subscribers,
                "envs": found.env_feed.subscribers,
                "apps": found.apps.changes.feed.subscribers,
                "logs": found.app_log.tail.feed.subscribers,
                "task_output": found.tasks.output_feed.subscribers,
            }
            hello: api.HelloEvent = {
                "type": "hello", "server": found.tasks.instances.id, "time": time.time(), "followers": followers,
            }  # fmt: skip
            self._send(hello)

    def _unsubscribe(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, ()
        for unsubscribe in subscriptions:
            unsubscribe()

    def _send_task(self, summary: TaskSummary) -> None:
        event: api.TaskEvent = {"type": "task", "task": summary_json(summary)}
        self._send(event)

    def _send_schedule(self, schedule_event: ScheduleEvent) -> None:
        self._send(event_json(schedule_event))

    def _send_mail(self, mail_event: MailEvent) -> None:
        summary = mail_event.get("mail")
        if isinstance(summary, MailSummary):
            changed: api.MailEvent = {"type": "mail", "mail": mail_json(summary)}
            self._send(changed)
        else:
            deleted: api.MailDeletedEvent = {"type": "mail_deleted", "id": mail_event["id"], "app": mail_event["app"]}
            self._send(deleted)

    def _send_env(self, env_event: dict[str, Any]) -> None:
        event = env_feed_event(env_event)
        if event is not None:
            self._send(event)

    def _send(self, event: api.FeedEvent) -> None:
        if self._cut or self.ws_connection is None:
            return
        message = json.dumps(event, default=str)
        size = len(message)  # characters: bytes for the ASCII json.dumps writes
        if self._unsent + size > MAX_UNSENT_BYTES:
            self._cut_off()
            return
        try:
            sent = self.write_message(message)
        except websocket.WebSocketClosedError:
            self._unsubscribe()
            return
        self._unsent += size
        sent.add_done_callback(lambda future: self._written(future, size))

    def _written(self, future: asyncio.Future[None], size: int) -> None:
        self._unsent -= size
        if not future.cancelled():
            future.exception()  # one cut short by the connection closing is no error

    def _cut_off(self) -> None:
        """Close a connection whose client does not read: it reconnects and fetches again."""
        self._cut = True
        self._unsubscribe()
        log.warning("[jupyter-anvil] closing an admin feed: its reader fell over %d MiB behind", MAX_UNSENT_BYTES >> 20)
        connection = self.ws_connection
        stream = getattr(connection, "stream", None)
        self.close(1008, TOO_SLOW)
        if stream is not None:
            stream.close()  # drop the unsent messages now: this reader will not take them

    def on_message(self, message: str | bytes) -> None:
        pass  # the feed only speaks

    def on_close(self) -> None:
        self._unsubscribe()


class FeedHandler(TaskFeedHandler):
    """``anvil/api/feed``: every event, the hello first."""

    full = True
