"""The mail admin API (Jupyter auth): every message sent or received, read, downloaded
(the whole ``.eml``, or one part) and deleted. Changes go out on the live feed
(``anvil/api/tasks/feed``) as :class:`api_types.MailEvent`."""

from __future__ import annotations

import asyncio
from typing import cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from .. import api_types as api
from ..mail.reading import part_bytes as read_part
from ..mail.reading import read
from ..mail.records import MAIL_BOXES, MAIL_STATUSES, MailBox, MailRecord, MailStatus, MailSummary
from .admin import AUTH_RESOURCE, AdminHandler
from .base import send_download, services

#: the most messages one page lists
MAX_PAGE = 500


def mail_json(mail: MailSummary) -> api.MailInfo:
    return {
        "id": mail.id,
        "app": mail.app,
        "box": mail.box,
        "status": mail.status,
        "created": mail.created,
        "updated": mail.updated,
        "message_id": mail.message_id,
        "envelope_from": mail.envelope_from,
        "recipients": list(mail.recipients),
        "from_header": mail.from_header,
        "to_header": mail.to_header,
        "subject": mail.subject,
        "size": mail.size,
        "attempts": mail.attempts,
        "smtp_code": mail.smtp_code,
        "outcome": mail.outcome,
        "next_attempt": mail.next_attempt,
        "deadline": mail.deadline,
        "owner": mail.owner,
        "call_id": mail.call_id,
    }


def _choice(handler: web.RequestHandler, name: str, allowed: tuple[str, ...]) -> str | None:
    value = handler.get_argument(name, None)
    if value is not None and value not in allowed:
        raise web.HTTPError(400, f"{name} must be one of {', '.join(allowed)}, not {value[:40]!r}")
    return value


class MailListHandler(AdminHandler):
    """``GET anvil/api/mail?app=&box=outbox|sent|inbox&status=&limit=50&before=<created>``:
    newest first; ``next`` is the ``before`` of the following page (null on the last)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        box = _choice(self, "box", MAIL_BOXES)
        status = _choice(self, "status", MAIL_STATUSES)
        try:
            limit = int(self.get_argument("limit", "50"))
            before_arg = self.get_argument("before", None)
            before = float(before_arg) if before_arg is not None else None
        except ValueError:
            raise web.HTTPError(400, "limit must be a whole number and before a time (seconds)") from None
        if not 1 <= limit <= MAX_PAGE:
            raise web.HTTPError(400, f"limit must be from 1 to {MAX_PAGE}, not {limit}")
        if before is not None and not (before == before and abs(before) < 1e12):  # NaN, inf
            raise web.HTTPError(400, "before must be a time (seconds since the epoch)")
        records = await services(self).mail.list(
            app=self.get_argument("app", None),
            box=cast("MailBox | None", box),
            status=cast("MailStatus | None", status),
            limit=limit,
            before=before,
        )
        answer: api.MailPage = {
            "messages": [mail_json(r) for r in records],
            "next": records[-1].created if len(records) == limit else None,
        }
        self.finish(dict(answer))


async def find(handler: JupyterHandler, mail_id: str) -> MailRecord:
    record = await services(handler).mail.get(mail_id)
    if record is None:
        raise web.HTTPError(404, f"no message {mail_id}")
    return record


class MailHandler(AdminHandler):
    """``GET anvil/api/mail/<id>``: the message read (headers, bodies, parts);
    ``DELETE``: 204, the record and its bytes gone."""

    @web.authenticated
    @authorized
    async def get(self, mail_id: str) -> None:
        record = await find(self, mail_id)
        # parsing a 25 MB message takes a while: not on the event loop
        message = await asyncio.get_running_loop().run_in_executor(None, read, record.raw)
        url = f"{self.base_url}anvil/api/mail/{record.id}"
        answer: api.MailDetail = {
            **mail_json(record),
            "headers": [[name, value] for name, value in message.headers],
            "text": message.text,
            "html": message.html,
            "parts": [
                {
                    "index": part.index,
                    "name": part.name,
                    "content_type": part.content_type,
                    "size": part.size,
                    "content_id": part.content_id,
                    "inline": part.inline,
                    "url": f"{url}/parts/{part.index}",
                }
                for part in message.parts
            ],
            "raw_url": f"{url}/raw",
        }
        self.finish(dict(answer))

    @web.authenticated
    @authorized
    async def delete(self, mail_id: str) -> None:
        if not await services(self).mail.delete(mail_id):
            raise web.HTTPError(404, f"no message {mail_id}")
        self.set_status(204)
        self.finish()


class _DownloadHandler(JupyterHandler):  # type: ignore[misc]
    """A download under the admin API's auth (not an APIHandler, which answers JSON only)."""

    auth_resource = AUTH_RESOURCE


class MailRawHandler(_DownloadHandler):
    """``GET anvil/api/mail/<id>/raw``: the message as sent or received, ``<id>.eml``."""

    @web.authenticated
    @authorized
    async def get(self, mail_id: str) -> None:
        record = await find(self, mail_id)
        send_download(self, record.raw, "message/rfc822", f"{record.id}.eml")


class MailPartHandler(_DownloadHandler):
    """``GET anvil/api/mail/<id>/parts/<n>``: one attachment or inline part, downloaded."""

    @web.authenticated
    @authorized
    async def get(self, mail_id: str, index: str) -> None:
        record = await find(self, mail_id)
        found = await asyncio.get_running_loop().run_in_executor(None, read_part, record.raw, int(index))
        if found is None:
            raise web.HTTPError(404, f"message {mail_id} has no part {index}")
        part, data = found
        send_download(self, data, part.content_type, part.name or f"part-{part.index}")
