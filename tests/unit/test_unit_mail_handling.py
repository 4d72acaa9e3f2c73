"""Running an app's email handler (host/mail/handling.py) on the unit layer: the real
KernelPool, SessionService, AppLog and MailStore, with kernels that have no process
(tests/unit/conftest.py's FakeKernel) answering as a handler would. Real kernels run the
handler in tests/test_mail_inbound.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from jupyter_anvil import errors, wire
from jupyter_anvil.host.apps import App
from jupyter_anvil.host.logs import AppLog
from jupyter_anvil.host.mail.handling import MailHandling, has_email_handler, reply_text
from jupyter_anvil.host.mail.records import MailRecord
from jupyter_anvil.host.mail.store import MailStore, new_mail_id
from jupyter_anvil.host.messages import CallReply, CallRequest
from jupyter_anvil.host.pool import KernelPool, PoolLimits
from jupyter_anvil.host.sessions import SessionService
from jupyter_anvil.host.store import Store
from jupyter_anvil.media import Media
from jupyter_anvil.protocol import CALLABLE, EMAIL_HANDLER, EMAIL_HANDLER_NAME, Registered

from .conftest import FakeKernel

RAW = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


class MailKernel(FakeKernel):
    """A kernel whose server cells registered ``handle_message`` (unless ``handler`` is
    False); ``answer`` says what its handler does."""

    handler = True

    def __init__(self, app: str) -> None:
        super().__init__(app)
        names = {CALLABLE: ["echo"], EMAIL_HANDLER: [EMAIL_HANDLER_NAME] if self.handler else []}
        self.registered = Registered(names)
        self.kinds: list[str] = []
        self.answer: Callable[[CallRequest], CallReply] = lambda request: CallReply(response=None)

    async def call(self, request: CallRequest, timeout: float | None = None, kind: str = CALLABLE) -> CallReply:
        self.kinds.append(kind)
        return await super().call(request, timeout, kind)

    async def _answer(self, request: CallRequest) -> CallReply:
        await asyncio.sleep(0)
        if self.mode == "hang":
            await self._stopped.wait()
            raise errors.ExecutionTerminatedError("The kernel running this call was shut down")
        if self.mode == "die":
            raise errors.ExecutionTerminatedError("The kernel serving this app has died")
        return self.answer(request)


class Apps:
    def __init__(self, app: App) -> None:
        self.app = app

    async def get(self, name: str) -> App | None:
        return self.app if name == self.app.name else None


@dataclass
class Setup:
    handling: MailHandling
    pool: KernelPool
    kernels: list[MailKernel]
    mail: MailStore
    app_log: AppLog
    app: App

    async def handle(self, recipient: str = "support@example.com") -> tuple[tuple[int, str], MailRecord]:
        now = time.time()
        record = MailRecord(
            id=new_mail_id(), app="support", box="inbox", status="received", created=now, updated=now,
            message_id=None, envelope_from="a@example.com", recipients=[recipient], from_header="a@example.com",
            to_header="", subject="hi", size=len(RAW), raw=RAW,
        )  # fmt: skip
        await self.mail.insert(record)
        answer = await self.handling.handle(
            "support",
            record,
            {"valid_from_sender": True, "domains": ["example.com"]},
            {"from_address": "a@example.com", "recipient": recipient},
            peer="192.0.2.7",
        )
        stored = await self.mail.get(record.id)
        assert stored is not None
        return answer, stored


@pytest.fixture
async def setup(store: Store) -> AsyncIterator[Callable[..., Any]]:
    made: list[KernelPool] = []

    async def make(handler: bool = True, timeout: float = 45.0, loaded: bool = True) -> Setup:
        kernels: list[MailKernel] = []

        async def start() -> MailKernel:
            kernel = type("K", (MailKernel,), {"handler": handler})("support")
            kernels.append(kernel)
            return kernel

        pool = KernelPool("support", PoolLimits(min=1, max=1, task_spares=0), start)
        pool.on_problem = lambda stream, text: None
        await pool.start()
        made.append(pool)
        app = App("support")
        app.pool, app.status = pool, "ready"
        if loaded:
            app.loaded.set()
        mail, app_log = MailStore(store), AppLog(store)
        sessions = SessionService(store, idle_timeout=3600)
        handling = MailHandling(Apps(app), sessions, app_log, mail, timeout=timeout)  # type: ignore[arg-type]
        return Setup(handling, pool, kernels, mail, app_log, app)

    yield make
    for pool in made:
        await pool.drain(0)


async def test_a_handler_that_returns_is_250(setup: Callable[..., Any]) -> None:
    s = await setup()
    (code, text), stored = await s.handle()
    assert code == 250 and text.startswith("2.0.0")
    assert (stored.status, stored.smtp_code, stored.outcome) == ("handled", 250, "handled")
    (kernel,) = s.kernels
    (request,) = kernel.calls
    assert stored.call_id == request.call_id and request.call_id
    assert kernel.kinds == [EMAIL_HANDLER] and request.command == EMAIL_HANDLER_NAME and not request.from_client
    # the one argument: the InboundMail, with the message as Media
    (inbound,) = wire.decode({"args": request.args}, request.objects, request.media)["args"]
    assert isinstance(inbound["raw"], Media) and inbound["raw"].get_bytes() == RAW
    assert inbound["raw"].content_type == "message/rfc822"
    assert inbound["mail_id"] == stored.id
    assert inbound["envelope"] == {"from_address": "a@example.com", "recipient": "support@example.com"}
    assert inbound["dkim"] == {"valid_from_sender": True, "domains": ["example.com"]}
    # in a session of its own, as the mail server calls it
    assert request.caller is not None and request.caller.session.record.client_type == "email"
    context = request.caller.context()
    assert context["client"] == {"type": "email", "ip": "192.0.2.7", "location": None}
    assert context["remote_caller"] == {"type": "email_server", "is_trusted": True}
    assert context["call_stack"] == [{"type": "email_server", "is_trusted": True}]
    assert kernel.in_flight == 0  # the lease is given back


async def test_no_handler_is_551(setup: Callable[..., Any]) -> None:
    s = await setup(handler=False)
    (code, text), stored = await s.handle()
    assert (code, text) == (551, "5.7.1 This application cannot handle incoming email")
    assert (stored.status, stored.smtp_code) == ("rejected", 551)
    assert s.kernels[0].calls == []


@pytest.mark.parametrize(
    ("raised", "code", "text", "status"),
    [
        (errors.DeliveryFailure("Go away"), 554, "Go away", "rejected"),
        (errors.DeliveryFailure(), 554, "Message rejected", "rejected"),
        (errors.DeliveryFailure("No such user", 550), 550, "No such user", "rejected"),
        (errors.DeliveryFailure("Mailbox busy", 452), 452, "Mailbox busy", "failed"),  # the author's temporary one
        (errors.DeliveryFailure("250: sneaky"), 554, "sneaky", "rejected"),  # a refusal is never an acceptance
        (errors.DeliveryFailure("line one\r\nline two \x00 \u00e9"), 554, "line one line two", "rejected"),
    ],
)
async def test_delivery_failure(
    setup: Callable[..., Any], raised: errors.DeliveryFailure, code: int, text: str, status: str
) -> None:
    s = await setup()
    s.kernels[0].answer = lambda request: CallReply.failure(raised)
    (got_code, got_text), stored = await s.handle()
    assert got_code == code and got_text.startswith(text) and "\n" not in got_text and got_text.isascii()
    assert (stored.status, stored.smtp_code) == (status, code)
    assert stored.outcome.startswith("DeliveryFailure: ")


async def test_a_long_delivery_failure_is_cut() -> None:
    assert len(reply_text("x" * 10_000)) == 200


async def test_any_other_error_is_451_without_its_text(setup: Callable[..., Any]) -> None:
    s = await setup()
    reply = CallReply.failure(ValueError("secret detail /home/author/x.py"))
    reply.traceback = "Traceback (most recent call last): ..."
    s.kernels[0].answer = lambda request: reply
    (code, text), stored = await s.handle()
    assert code == 451 and "secret" not in text and "Traceback" not in text
    assert (stored.status, stored.smtp_code) == ("failed", 451)
    assert "ValueError: secret detail" in stored.outcome  # the author reads it in the record


async def test_no_answer_in_time_is_451_and_the_kernel_is_retired(setup: Callable[..., Any]) -> None:
    s = await setup(timeout=0.2)
    kernel = s.kernels[0]
    kernel.mode = "hang"
    (code, text), stored = await s.handle()
    assert code == 451 and "too long" in text
    assert (stored.status, stored.smtp_code) == ("failed", 451)
    assert kernel.retiring and kernel not in s.pool.kernels
    await asyncio.sleep(0.05)
    assert kernel.shutdowns == 1  # shut down once its lease was given back
    # what the author sees: the log line of the timeout, filed under the handler's name
    await s.app_log.flush()
    lines = [r for r in await s.app_log.read("support") if r["call_id"] == stored.call_id]
    assert [(r["function"], r["stream"]) for r in lines] == [("email:handle_message", "system")]


async def test_a_kernel_that_dies_is_451(setup: Callable[..., Any]) -> None:
    s = await setup()
    s.kernels[0].mode = "die"
    (code, _), stored = await s.handle()
    assert code == 451 and stored.status == "failed"


async def test_an_app_not_loaded_in_time_is_451(setup: Callable[..., Any]) -> None:
    s = await setup(timeout=0.1, loaded=False)
    (code, _), stored = await s.handle()
    assert code == 451 and stored.status == "failed"


async def test_an_app_without_a_pool_is_451(setup: Callable[..., Any]) -> None:
    s = await setup()
    s.app.pool, s.app.status = None, "error"
    (code, _), stored = await s.handle()
    assert code == 451 and stored.status == "failed"


async def test_an_unknown_app_is_551(setup: Callable[..., Any]) -> None:
    s = await setup()
    s.app.name = "renamed"
    (code, _), stored = await s.handle()
    assert code == 551 and stored.status == "rejected"


async def test_what_the_handler_prints_is_filed_under_its_name(setup: Callable[..., Any]) -> None:
    s = await setup()
    filed: list[bool] = []

    def answer(request: CallRequest) -> CallReply:
        filed.append(s.handling.log_output("support", request.call_id, "stdout", "got mail\n"))
        filed.append(s.handling.log_output("other-app", request.call_id, "stdout", "not mine\n"))
        return CallReply(response=None)

    s.kernels[0].answer = answer
    _, stored = await s.handle()
    assert filed == [True, False]
    assert not s.handling.log_output("support", stored.call_id or "", "stdout", "after the end\n")
    await s.app_log.flush()
    lines = [r for r in await s.app_log.read("support") if r["call_id"] == stored.call_id]
    assert [(r["function"], r["stream"], r["text"]) for r in lines] == [
        ("email:handle_message", "stdout", "got mail\n")
    ]


async def test_the_session_changes_are_kept(setup: Callable[..., Any], store: Store) -> None:
    s = await setup()
    s.kernels[0].answer = lambda request: CallReply(
        response=None, session_changes={"changed": {"n": 1}, "deleted": [], "persist": True}
    )
    (code, _), _ = await s.handle()
    assert code == 250
    (request,) = s.kernels[0].calls
    assert request.caller is not None and request.caller.session.persisted


async def test_has_email_handler(setup: Callable[..., Any]) -> None:
    with_handler, without = await setup(), await setup(handler=False)
    assert has_email_handler(with_handler.pool) and not has_email_handler(without.pool)
    assert not has_email_handler(None)
