"""``anvil.private.email.send`` as the host services table answers it: a request encoded
as a kernel encodes it (wire.encode, Media as bytes), a real MailSender over a real
MailStore (the outbox, so nothing leaves), a browser refused, malformed kwargs refused."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_anvil import errors, wire
from jupyter_anvil.host.host_services import HostCall, HostServices
from jupyter_anvil.host.mail.outbound import MailSender
from jupyter_anvil.host.mail.send_call import CLIENT_REFUSAL, host_services
from jupyter_anvil.host.mail.store import MailStore
from jupyter_anvil.host.mail.transport import Outbox
from jupyter_anvil.host.messages import CallRequest
from jupyter_anvil.host.store import Store
from jupyter_anvil.media import BlobMedia
from jupyter_anvil.protocol import EMAIL_SEND

RAW = b"From: shop@example.com\r\nTo: ann@example.org\r\nBcc: b@example.net\r\nMessage-ID: <42@anvil>\r\n\r\nHi\r\n"


def request(*, args: list[Any] | None = None, **kwargs: Any) -> CallRequest:
    encoded = wire.encode({"args": args or [], "kwargs": kwargs})
    return CallRequest(
        command=EMAIL_SEND,
        args=encoded.message["args"],
        kwargs=encoded.message["kwargs"],
        objects=encoded.objects,
        media=encoded.media,
        call_id="parent-call.7",
        from_client=False,
        parent="parent-call",
    )


def good(**changes: Any) -> dict[str, Any]:
    return {
        "raw": BlobMedia("message/rfc822", RAW),
        "envelope_from": "shop@example.com",
        "recipients": ["ann@example.org", "b@example.net"],
        **changes,
    }


@pytest.fixture
def table(store: Store) -> tuple[HostServices, MailStore]:
    mail = MailStore(store)
    return HostServices(host_services(MailSender(mail, Outbox()))), mail


async def call(table: HostServices, req: CallRequest) -> Any:
    service = table.find(EMAIL_SEND, from_client=False)
    assert service is not None
    return await service.handler(HostCall("shop", req, {}))


async def test_server_code_sends_and_gets_the_message_id(table: tuple[HostServices, MailStore]) -> None:
    services, mail = table
    reply = await call(services, request(**good()))
    assert reply.error is None and reply.response == {"message_id": "<42@anvil>"}
    (summary,) = await mail.list(app="shop")
    record = await mail.get(summary.id)
    assert record is not None
    assert record.raw == RAW.replace(b"Bcc: b@example.net\r\n", b"")
    assert record.recipients == ["ann@example.org", "b@example.net"]
    assert record.call_id == "parent-call"  # the server call in the app log that sent it


def test_a_browser_is_refused(table: tuple[HostServices, MailStore]) -> None:
    services, _ = table
    with pytest.raises(errors.PermissionDenied) as caught:
        services.find(EMAIL_SEND, from_client=True)
    assert str(caught.value) == CLIENT_REFUSAL


@pytest.mark.parametrize(
    ("req", "says"),
    [
        (lambda: request(**good(raw=RAW.decode())), "raw must be Media"),
        (lambda: request(**good(raw=None)), "raw must be Media"),
        (lambda: request(**good(envelope_from=["x@y.z"])), "envelope_from must be a string"),
        (lambda: request(**good(recipients="ann@example.org")), "recipients must be a list of strings"),
        (lambda: request(**good(recipients=["ann@example.org", 5])), "recipients must be a list of strings"),
        (lambda: request(**good(recipients=[])), "no recipients"),
        (lambda: request(**good(envelope_from="not an address")), "Invalid email address"),
        (lambda: request(**good(recipients=["a@b.c\r\nDATA"])), "Invalid email address"),
        (lambda: request(**good(extra=1, more=2)), "unexpected extra, more"),
        (lambda: request(raw=BlobMedia("message/rfc822", RAW)), "missing envelope_from, recipients"),
        (lambda: request(args=["x"], **good()), "keyword arguments only"),
        (lambda: request(**good(raw=BlobMedia("message/rfc822", b"not mail at all"))), "not a header field"),
    ],
)
async def test_malformed_requests_are_send_failures(table: tuple[HostServices, MailStore], req: Any, says: str) -> None:
    services, mail = table
    with pytest.raises(errors.SendFailure, match=says):
        await call(services, req())
    assert await mail.list() == []


async def test_media_the_request_does_not_carry_is_a_send_failure(table: tuple[HostServices, MailStore]) -> None:
    services, _ = table
    req = request(**good())
    req.media = {}
    with pytest.raises(errors.SendFailure, match="could not be read"):
        await call(services, req)
    req = request(**good())
    req.kwargs = ["not", "a", "dict"]
    with pytest.raises(errors.SendFailure):
        await call(services, req)
