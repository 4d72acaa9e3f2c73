"""``GET anvil/apps/<app>/_/tasks/<task_id>``: a plain HTTP client follows a Task it was given.

The task id is the capability (25 random base32 characters, as unguessable as a session
token), so no Jupyter token is needed; the route only reads. It answers what a ``Task``'s
methods answer, in the encoding of a call reply (Media inline as base64, as HTTP calls).
"""

from __future__ import annotations

import re
from dataclasses import replace

from ... import errors
from ..task_calls import record_reply
from .base import PublicHandler, services
from .callers import admit_origin
from .calls import inline_media

TASK_ID = re.compile(r"[a-z2-7]{25}")


class PublicTaskHandler(PublicHandler):
    async def get(self, app: str, task_id: str) -> None:
        if not admit_origin(self, app):
            return
        if not TASK_ID.fullmatch(task_id):
            message = "A background task id is 25 characters of a-z and 2-7"
            self.write_anvil_error(errors.BackgroundTaskNotFound(message))
            return
        not_found = errors.BackgroundTaskNotFound(f"App '{app}' has no background task '{task_id}'")
        try:
            record = await services(self).tasks.get(task_id)
        except errors.BackgroundTaskNotFound:
            record = None
        if record is None or record.app != app:  # another app's task is not this app's to show
            self.write_anvil_error(not_found)
            return
        error = record.error
        # the error as a caller sees one: type and message (the traceback is in the app log)
        shown = replace(record, error={"type": error.get("type"), "message": error.get("message")} if error else None)
        reply = record_reply(shown)
        body = reply.to_json()
        inline_media(body, reply.media)
        self.write_json(200, body)
