"""The host services table through CallService: who may call each reserved function, what
a browser is told when it may not, unknown reserved names, and nested calls reaching an
entry. No kernel runs: a host service is answered by the host itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from jupyter_anvil import errors
from jupyter_anvil.host import task_calls
from jupyter_anvil.host.calls import CallService
from jupyter_anvil.host.host_services import HostCall, HostServices, browser_readable, server_only
from jupyter_anvil.host.messages import CallReply, CallRequest
from jupyter_anvil.protocol import BACKGROUND_TASKS_PREFIX, RESERVED_PREFIX

from .conftest import FakeKernel


@dataclass
class FakeApp:
    name: str


class FakeApps:
    """The part of the app manager a host service call uses: ``get(name)``."""

    async def get(self, name: str) -> FakeApp | None:
        return FakeApp(name) if name == "app" else None


class Recorder:
    """A host service handler that remembers what reached it."""

    def __init__(self) -> None:
        self.calls: list[HostCall] = []

    async def __call__(self, call: HostCall) -> CallReply:
        self.calls.append(call)
        return CallReply(response={"answered": call.request.command})


def call_service(table: HostServices) -> CallService:
    return CallService(FakeApps(), None, None, table)  # type: ignore[arg-type]


async def client_call(calls: CallService, command: str, *args: Any) -> CallReply:
    return (await calls.call("app", CallRequest(command=command, args=list(args)))).reply


# today's refusals, word for word: the client library and the tests of the wire assert them
REFUSED = {
    "launch": "Can't launch background tasks from the client.",
    "get": "Can't manage background tasks from the client",
    "list": "Can't manage background tasks from the client",
    "kill": "Can't kill background tasks from the client",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
async def test_a_browser_is_refused_each_server_only_task_function(name: str) -> None:
    # the handlers are never reached, so the task service behind them is not needed
    calls = call_service(HostServices(task_calls.host_services(tasks=None)))  # type: ignore[arg-type]
    reply = await client_call(calls, f"{BACKGROUND_TASKS_PREFIX}{name}", "count_to")
    assert reply.error is not None
    assert reply.error["type"] == "anvil.server.BackgroundTaskError"
    assert reply.error["message"] == REFUSED[name]


def test_the_task_functions_are_five_entries_one_readable_by_browsers() -> None:
    entries = {e.name: e for e in task_calls.host_services(tasks=None)}  # type: ignore[arg-type]
    names = ("launch", "get", "list", "record", "kill")
    assert sorted(entries) == sorted(f"{BACKGROUND_TASKS_PREFIX}{n}" for n in names)
    assert [n for n, e in entries.items() if e.browser_refusal is None] == [task_calls.RECORD]


async def test_a_browser_may_call_a_read_only_entry() -> None:
    read = Recorder()
    calls = call_service(HostServices([browser_readable(f"{RESERVED_PREFIX}thing.read", read)]))
    reply = await client_call(calls, f"{RESERVED_PREFIX}thing.read", "x")
    assert reply.error is None and reply.response == {"answered": f"{RESERVED_PREFIX}thing.read"}
    assert [c.app for c in read.calls] == ["app"] and read.calls[0].request.args == ["x"]


async def test_a_browser_refused_a_server_only_entry_never_reaches_it() -> None:
    send = Recorder()
    table = HostServices([server_only(f"{RESERVED_PREFIX}email.send", send, errors.PermissionDenied, "Not here")])
    reply = await client_call(call_service(table), f"{RESERVED_PREFIX}email.send")
    assert reply.error is not None
    assert (reply.error["type"], reply.error["message"]) == ("anvil.server.PermissionDenied", "Not here")
    assert send.calls == []


@pytest.mark.parametrize(
    "command", [f"{RESERVED_PREFIX}email.send", f"{BACKGROUND_TASKS_PREFIX}no_such", RESERVED_PREFIX]
)
async def test_an_unknown_reserved_name_is_no_server_function(command: str) -> None:
    calls = call_service(HostServices(task_calls.host_services(tasks=None)))  # type: ignore[arg-type]
    reply = await client_call(calls, command)
    assert reply.error is not None
    assert reply.error["type"] == "anvil.server.NoServerFunctionError"
    assert reply.error["message"] == f'No server function matching "{command}" has been registered'
    # from server code too, and without asking the kernel (it is no function of the app's)
    kernel = FakeKernel("app", functions=(command,))
    nested = await calls.nested_call(kernel, CallRequest(command=command, from_client=False, depth=1))
    assert nested.error is not None and nested.error["type"] == "anvil.server.NoServerFunctionError"
    assert kernel.calls == []


async def test_a_nested_call_reaches_a_server_only_entry() -> None:
    send = Recorder()
    table = HostServices([server_only(f"{RESERVED_PREFIX}email.send", send, errors.PermissionDenied, "Not here")])
    calls = call_service(table)
    kernel = FakeKernel("app")
    context = {"client": {"type": "browser"}}
    request = CallRequest(command=f"{RESERVED_PREFIX}email.send", from_client=False, depth=1, context=context)
    reply = await calls.nested_call(kernel, request)
    assert reply.error is None and reply.response == {"answered": f"{RESERVED_PREFIX}email.send"}
    assert [(c.app, c.caller_context) for c in send.calls] == [("app", context)]
    assert kernel.calls == []  # answered by the host, not passed to the kernel


async def test_a_scoped_name_is_refused_from_a_browser_before_the_table() -> None:
    calls = call_service(HostServices())
    reply = await client_call(calls, "task:count_to")
    assert reply.error is not None and reply.error["type"] == "anvil.server.PermissionDenied"


async def test_a_failing_entry_fails_the_call_with_its_error() -> None:
    async def broken(call: HostCall) -> CallReply:
        raise errors.BackgroundTaskNotFound("Background Task not found: x")

    table = HostServices([browser_readable(f"{RESERVED_PREFIX}thing.read", broken)])
    calls = call_service(table)
    reply = await client_call(calls, f"{RESERVED_PREFIX}thing.read")
    assert reply.error is not None and reply.error["type"] == "anvil.server.BackgroundTaskNotFound"
    nested = await calls.nested_call(FakeKernel("app"), CallRequest(f"{RESERVED_PREFIX}thing.read", from_client=False))
    assert nested.error is not None and nested.error["type"] == "anvil.server.BackgroundTaskNotFound"


def test_the_table_holds_reserved_names_only_and_each_once() -> None:
    async def answer(call: HostCall) -> CallReply:
        return CallReply()

    with pytest.raises(ValueError, match="reserved name"):
        HostServices([browser_readable("plain_function", answer)])
    with pytest.raises(ValueError, match="two host services"):
        HostServices([browser_readable(f"{RESERVED_PREFIX}a", answer)] * 2)
