"""``anvil.private.email.send``: the host service behind ``email.send()`` in server code.

The kernel builds the message and calls this with its bytes and envelope
(:class:`~jupyter_anvil.protocol.MailToSend`); the host sends it (:mod:`.outbound`), so
kernels never hold SMTP credentials. A browser is refused, as Anvil refuses it. The
kwargs are checked here as if a stranger wrote them (a kernel is only as trustworthy
as the code in it): anything malformed is a SendFailure naming what was wrong.
"""

from __future__ import annotations

from typing import Any, Final

from ... import errors, wire
from ...media import Media
from ...protocol import EMAIL_SEND
from ..host_services import HostCall, HostService, server_only
from ..messages import CallReply, CallRequest
from .outbound import MailSender

CLIENT_REFUSAL: Final = (
    "Permission denied. Cannot send email from client code. Call anvil.email.send() from a server module instead!"
)
_KWARGS: Final = frozenset({"raw", "envelope_from", "recipients"})
#: the call_id column's width in the store
_CALL_ID_CHARS: Final = 64


def host_services(sender: MailSender) -> list[HostService]:
    """The entry of the host services table for :data:`EMAIL_SEND` (server code only)."""

    async def send(call: HostCall) -> CallReply:
        raw, envelope_from, recipients = mail_to_send(call.request)
        # the app log's id of the server call that sent it (this request is nested in it)
        call_id = (call.request.parent or call.request.call_id or "")[:_CALL_ID_CHARS] or None
        summary = await sender.send(call.app, raw, envelope_from, recipients, call_id=call_id)
        return CallReply(response={"message_id": summary.message_id})

    return [server_only(EMAIL_SEND, send, errors.PermissionDenied, CLIENT_REFUSAL)]


def mail_to_send(request: CallRequest) -> tuple[bytes, str, list[str]]:
    """The message's bytes, envelope sender and recipients from a request's kwargs."""
    try:
        decoded = wire.decode(
            {"args": wire.copy_json(request.args), "kwargs": wire.copy_json(request.kwargs)},
            request.objects,
            request.media,
        )
    except errors.SerializationError as e:
        raise errors.SendFailure(f"The message could not be read: {e}") from None
    args, kwargs = decoded["args"], decoded["kwargs"]
    if args not in (None, []):
        raise errors.SendFailure(f"{EMAIL_SEND} takes keyword arguments only")
    if not isinstance(kwargs, dict):
        raise errors.SendFailure(f"{EMAIL_SEND} needs keyword arguments raw, envelope_from and recipients")
    unknown = sorted(str(k)[:40] for k in kwargs if k not in _KWARGS)[:5]  # shown, not echoed whole
    missing = sorted(_KWARGS - kwargs.keys())
    if unknown or missing:
        wrong = [f"unexpected {', '.join(unknown)}"] if unknown else []
        wrong += [f"missing {', '.join(missing)}"] if missing else []
        raise errors.SendFailure(f"Bad arguments to {EMAIL_SEND}: {'; '.join(wrong)}")
    raw: Any = kwargs["raw"]
    if not isinstance(raw, Media):
        raise errors.SendFailure(f"raw must be Media (message/rfc822), not {type(raw).__name__}")
    envelope_from, recipients = kwargs["envelope_from"], kwargs["recipients"]
    if not isinstance(envelope_from, str):
        raise errors.SendFailure(f"envelope_from must be a string, not {type(envelope_from).__name__}")
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise errors.SendFailure("recipients must be a list of strings")
    return raw.get_bytes(), envelope_from, recipients
