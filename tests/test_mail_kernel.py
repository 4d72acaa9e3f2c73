"""The author's email API on a real server and real kernels: what ``email.send`` hands the
host (caught at the kernel's one seam, ``mail_compose.hand_to_host``, inside the app's
kernel), an ``@email.handle_message`` handler and its ``reply()``, and what a browser can
reach of them (nothing), and a send through the host's service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import AnvilServer, private_server
from jupyter_client.manager import AsyncKernelManager
from notebook_files import write_notebook

from jupyter_anvil import wire
from jupyter_anvil.host.app_kernel import AppKernel
from jupyter_anvil.host.messages import CallReply, CallRequest
from jupyter_anvil.media import BlobMedia
from jupyter_anvil.protocol import EMAIL_HANDLER, EMAIL_HANDLER_NAME, EMAIL_SEND

APP = "mailer"

SERVER_CELL = '''
from jupyter_anvil import email, server
from jupyter_anvil.kernel import mail_compose, registry
from jupyter_anvil.media import BlobMedia
from jupyter_anvil.protocol import EMAIL_HANDLER, EMAIL_HANDLER_NAME

handled = []


def captured(send, *args, **kwargs):
    """Run ``send`` with the host call replaced; what the host would have been handed."""
    mails = []

    def host(mail):
        mails.append(mail)
        return {"message_id": "<answered-by-the-host@example.org>"}

    original, mail_compose.hand_to_host = mail_compose.hand_to_host, host
    try:
        result = send(*args, **kwargs)
    finally:
        mail_compose.hand_to_host = original
    return result, [
        {
            "raw": m["raw"].get_bytes().decode("ascii"),
            "raw_type": m["raw"].content_type,
            "envelope_from": m["envelope_from"],
            "recipients": m["recipients"],
        }
        for m in mails
    ]


@server.callable
def send_captured(**kw):
    kw["attachments"] = [BlobMedia("text/csv", b"a,b\\n", name="data.csv")]
    kw["inline_attachments"] = {"logo": BlobMedia("image/png", b"\\x89PNG")}
    report, mails = captured(email.send, **kw)
    return {"message_id": report.message_id, "mails": mails, "domain": mail_compose.mail_from_domain()}


@server.callable
def send_bad(**kw):
    try:
        captured(email.send, **kw)
    except email.SendFailure as e:
        return {"type": type(e).__name__, "message": str(e)}
    except TypeError as e:
        return {"type": "TypeError", "message": str(e)}
    return None


@server.callable
def send_for_real(**kw):
    return email.send(**kw).message_id


@email.handle_message
def incoming(msg):
    handled.append(msg.subject)
    msg.reply(text="Got it: " + (msg.subject or ""))
    return "ignored"


@server.callable
def deliver(raw, require_dkim_ok=False):
    """Call the registered handler as the host does (kind email_handler, one InboundMail)."""
    registration = registry.lookup(EMAIL_HANDLER, EMAIL_HANDLER_NAME)
    inbound = {
        "mail_id": "x" * 26,
        "raw": BlobMedia("message/rfc822", raw.encode()),
        "envelope": {"from_address": "bounce@sender.example", "recipient": "mailer@app.example"},
        "dkim": {"valid_from_sender": require_dkim_ok, "domains": []},
    }
    returned, mails = captured(registration.function, inbound)
    return {"returned": returned, "handled": handled[-1:], "mails": mails, "name": registration.function.__name__}
'''


def write_apps(root: Path) -> None:
    write_notebook(root / f"{APP}.ipynb", [SERVER_CELL])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilServer]:
    with private_server(tmp_path_factory, "mail-kernel", write_apps) as running:
        running.wait_until_loaded((APP,))
        assert running.apps()[APP]["status"] != "error", running.log_tail()
        yield running


def parsed(mail: dict[str, Any]) -> Any:
    return message_from_bytes(mail["raw"].encode("ascii"), policy=policy.default)


def test_send_hands_the_host_a_whole_message_and_its_envelope(server: AnvilServer) -> None:
    result = server.call(
        APP,
        "send_captured",
        to="Zoë <zoe@example.com>, bob@example.com",
        cc=["carol@example.com"],
        bcc="secret@example.com",
        subject="Hello ✓",
        text="plain",
        html='<p>html <img src="cid:logo"></p>',
        reply_to="desk@example.com",
        from_address="support",
    )
    assert result["message_id"] == "<answered-by-the-host@example.org>"  # the host's answer is the report's
    (mail,) = result["mails"]
    assert mail["raw_type"] == "message/rfc822"
    assert mail["envelope_from"] == f"support@{result['domain']}"
    assert mail["recipients"] == ["zoe@example.com", "bob@example.com", "carol@example.com", "secret@example.com"]
    message = parsed(mail)
    assert "Bcc" not in message and "secret" not in mail["raw"]
    assert message["Subject"] == "Hello ✓" and message["To"].addresses[0].display_name == "Zoë"
    assert message["Reply-To"].addresses[0].addr_spec == "desk@example.com"
    assert message["Message-ID"].endswith(f"-{APP}@{result['domain']}>")  # the app's name, the server's domain
    assert message.get_content_type() == "multipart/mixed"
    related, attachment = message.iter_parts()
    assert related.get_content_type() == "multipart/related"
    assert attachment.get_filename() == "data.csv" and attachment.get_payload(decode=True) == b"a,b\n"


def test_bad_input_is_refused_in_the_kernel_before_the_host_is_asked(server: AnvilServer) -> None:
    assert server.call(APP, "send_bad", to="not an address") == {
        "type": "SendFailure",
        "message": "Invalid email address: not an address",
    }
    assert server.call(APP, "send_bad", subject="no recipient")["message"].startswith("No recipients")
    assert server.call(APP, "send_bad", to="a@example.com", attachments="x")["type"] == "SendFailure"
    assert server.call(APP, "send_bad", to="a@example.com", colour="red") == {
        "type": "TypeError",
        "message": "send() got an unexpected keyword argument 'colour'",
    }


def test_the_handler_runs_with_a_message_and_replies_threaded(server: AnvilServer) -> None:
    raw = (
        "From: Zoë <zoe@sender.example>\r\nTo: mailer@app.example\r\nSubject: Question\r\n"
        "Message-ID: <q1@sender.example>\r\nReferences: <q0@sender.example>\r\n\r\nHello?\r\n"
    )
    result = server.call(APP, "deliver", raw)
    assert result["returned"] is None  # the handler's own return value is ignored
    assert result["handled"] == ["Question"] and result["name"] == "incoming"
    (reply,) = result["mails"]
    assert reply["envelope_from"] == "mailer@app.example" and reply["recipients"] == ["zoe@sender.example"]
    message = parsed(reply)
    assert message["Subject"] == "Question"
    assert message["In-Reply-To"] == "<q1@sender.example>"
    assert message["References"] == "<q0@sender.example> <q1@sender.example>"


def test_mail_that_is_not_mail_still_reaches_the_handler(server: AnvilServer) -> None:
    result = server.call(APP, "deliver", "\x00\x01 garbage, no headers, no body")
    assert result["returned"] is None and result["handled"] == [None]
    assert result["mails"][0]["recipients"] == ["bounce@sender.example"]  # replied to the envelope sender


def test_a_browser_cannot_call_the_handler(server: AnvilServer) -> None:
    response = server.post(APP, "handle_message", {"args": [{}], "kwargs": {}})
    assert response.status_code == 404, response.text
    assert "handle_message" not in server.apps()[APP]["functions"]


def test_send_through_the_host_returns_the_message_id(server: AnvilServer) -> None:
    response = server.post(APP, "send_for_real", {"args": [], "kwargs": {"to": "a@example.com", "text": "hi"}})
    assert response.status_code == 200, response.text
    message_id = response.json()["response"]
    assert isinstance(message_id, str) and message_id.startswith("<") and message_id.endswith(">")


# -- a kernel driven as the host drives it ---------------------------------------------------------------
# The host's own AppKernel on a real kernel: the load brings the settings, the handler is called
# with kind email_handler and one InboundMail (its Media in the comm's buffers), and the kernel's
# mail reaches the host as a nested call of EMAIL_SEND, answered here as the host service will.
HANDLER_CELL = """
from jupyter_anvil import email, server

seen = {}

@email.handle_message(require_dkim=True)
def incoming(msg):
    seen["client"] = server.context.client.type
    seen["subject"] = msg.subject
    seen["attachments"] = [(a.name, a.content_type, a.get_bytes().hex()) for a in msg.attachments]
    if msg.subject == "refuse":
        raise email.DeliveryFailure("Not here", 550)
    msg.reply(text="ok")
    return "ignored"

@server.callable
def what_was_seen():
    return seen

@server.callable
def send_default():
    return email.send(to="a@example.com", text="x").message_id

@server.callable
def send_big(size):
    from jupyter_anvil.media import BlobMedia
    try:
        return email.send(to="a@example.com", attachments=BlobMedia("application/octet-stream", b"0" * size)).message_id
    except email.SendFailure as e:
        return "refused: " + str(e)
"""


SETTINGS: Any = {"mail_from_domain": "Mail.Example.org", "mail_max_bytes": 200_000}


class HostStandIn:
    """The host's side of the kernel's nested calls: records each mail and answers as the
    send service does."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, kernel: AppKernel, request: CallRequest) -> CallReply:
        assert request.command == EMAIL_SEND, request.command
        decoded = wire.decode({"args": request.args, "kwargs": request.kwargs}, request.objects, request.media)
        assert decoded["args"] == []
        self.sent.append(decoded["kwargs"])
        answer = wire.encode({"response": {"message_id": f"<host-{len(self.sent)}@mail.example.org>"}})
        return CallReply(response=answer.message["response"], objects=answer.objects)


@pytest.fixture(scope="module")
async def kernel(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[AppKernel, HostStandIn]]:
    folder = tmp_path_factory.mktemp("mail-kernel-direct")
    host = HostStandIn()
    manager = AsyncKernelManager(kernel_name="python3", connection_file=str(folder / "kernel.json"))
    app_kernel = AppKernel(manager, APP, on_log=lambda *_: None, on_nested_call=host, on_death=lambda _: None)
    cells = [{"index": 0, "source": HANDLER_CELL}]
    await app_kernel.start("mailer.ipynb", cells, str(folder), 120, settings=SETTINGS)
    try:
        yield app_kernel, host
    finally:
        await app_kernel.shutdown()


def email_caller() -> Any:
    """What the host passes for a handler run: a session of its own, ``client.type == "email"``."""
    context = {
        "client": {"type": "email", "ip": None, "location": None},
        "remote_caller": {"type": "email", "is_trusted": False},
        "background_task_id": None,
        "call_stack": [{"type": "email_server", "is_trusted": False}],
    }
    return SimpleNamespace(session=SimpleNamespace(id="s1", data={}), cookies=None, context=lambda: context)


async def run_handler(app_kernel: AppKernel, raw: bytes, valid_from_sender: bool) -> CallReply:
    inbound = {
        "mail_id": "a" * 26,
        "raw": BlobMedia("message/rfc822", raw),
        "envelope": {"from_address": "zoe@sender.example", "recipient": "mailer@app.example"},
        "dkim": {"valid_from_sender": valid_from_sender, "domains": ["sender.example"] if valid_from_sender else []},
    }
    encoded = wire.encode({"args": [inbound], "kwargs": {}})
    request = CallRequest(
        command=EMAIL_HANDLER_NAME,
        args=encoded.message["args"],
        kwargs={},
        objects=encoded.objects,
        media=encoded.media,
        call_id="mail-call",
        from_client=False,
        caller=email_caller(),
    )
    return await app_kernel.call(request, timeout=60, kind=EMAIL_HANDLER)


async def call(app_kernel: AppKernel, command: str, *args: Any) -> Any:
    encoded = wire.encode({"args": list(args)})
    request = CallRequest(command=command, args=encoded.message["args"], objects=encoded.objects, call_id=command)
    reply = await app_kernel.call(request, timeout=60)
    assert reply.error is None, reply.error
    return wire.decode({"r": reply.response}, reply.objects, reply.media)["r"]


async def test_the_kernel_registers_the_handler_by_kind(kernel: tuple[AppKernel, HostStandIn]) -> None:
    app_kernel, _ = kernel
    assert app_kernel.registered.of(EMAIL_HANDLER) == {EMAIL_HANDLER_NAME}
    assert EMAIL_HANDLER_NAME not in app_kernel.functions  # not a callable: no caller can name it


async def test_a_handler_run_as_the_host_runs_it(kernel: tuple[AppKernel, HostStandIn]) -> None:
    app_kernel, host = kernel
    message = (
        b"From: Zo\xc3\xab <zoe@sender.example>\r\nSubject: Hi\r\nMessage-ID: <m1@sender.example>\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
        b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--b--\r\n"
    )
    reply = await run_handler(app_kernel, message, valid_from_sender=True)
    assert reply.error is None and reply.response is None  # what the handler returned is ignored
    seen = await call(app_kernel, "what_was_seen")
    assert seen["client"] == "email" and seen["subject"] == "Hi"
    assert seen["attachments"] == [["a.pdf", "application/pdf", b"%PDF".hex()]]
    mail = host.sent[-1]
    assert set(mail) == {"raw", "envelope_from", "recipients"}
    assert mail["envelope_from"] == "mailer@app.example" and mail["recipients"] == ["zoe@sender.example"]
    assert mail["raw"].content_type == "message/rfc822"
    sent = message_from_bytes(mail["raw"].get_bytes(), policy=policy.default)
    assert sent["In-Reply-To"] == "<m1@sender.example>" and sent["Subject"] == "Hi"
    assert sent["To"].addresses[0].display_name == "Zoë"


async def test_require_dkim_and_delivery_failure_reach_the_host_as_errors(
    kernel: tuple[AppKernel, HostStandIn],
) -> None:
    app_kernel, host = kernel
    before = len(host.sent)
    reply = await run_handler(app_kernel, b"From: zoe@sender.example\r\nSubject: unsigned\r\n\r\nx", False)
    assert reply.error is not None
    assert (reply.error["type"], reply.error["message"]) == (
        "anvil.email.DeliveryFailure",
        "No valid DKIM signature for sender.example",
    )
    reply = await run_handler(app_kernel, b"From: zoe@sender.example\r\nSubject: refuse\r\n\r\nx", True)
    assert reply.error is not None and reply.error["type"] == "anvil.email.DeliveryFailure"
    assert reply.error["message"] == "550: Not here"
    assert len(host.sent) == before  # neither replied


async def test_garbage_reaches_the_handler_as_an_empty_message(kernel: tuple[AppKernel, HostStandIn]) -> None:
    app_kernel, host = kernel
    reply = await run_handler(app_kernel, bytes(range(256)) * 8, True)
    assert reply.error is None
    assert host.sent[-1]["recipients"] == ["zoe@sender.example"]  # no From header: the envelope sender


async def test_the_load_settings_name_the_default_sender(kernel: tuple[AppKernel, HostStandIn]) -> None:
    app_kernel, host = kernel
    answer = f"<host-{len(host.sent) + 1}@mail.example.org>"
    assert await call(app_kernel, "send_default") == answer  # the report carries the host's answer
    mail = host.sent[-1]
    assert mail["envelope_from"] == "no-reply@mail.example.org"
    sent = message_from_bytes(mail["raw"].get_bytes(), policy=policy.default)
    assert sent["Message-ID"].endswith(f"-{APP}@mail.example.org>")


async def test_the_load_settings_bound_the_message(kernel: tuple[AppKernel, HostStandIn]) -> None:
    app_kernel, host = kernel
    before = len(host.sent)
    refused = await call(app_kernel, "send_big", 160_000)  # base64: about 216,000 bytes once encoded
    assert refused.startswith("refused: Message too big: ") and "the limit is 200000 bytes" in refused
    assert len(host.sent) == before
    assert (await call(app_kernel, "send_big", 100_000)).startswith("<host-")
    assert len(host.sent[-1]["raw"].get_bytes()) <= 200_000
