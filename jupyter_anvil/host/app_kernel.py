"""One app kernel: a Jupyter kernel with the runtime installed, spoken to over a comm."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import zmq
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async

from .. import errors, protocol, wire
from ..protocol import (
    CALL,
    CALLABLE,
    COMM_TARGET,
    GET_TASK_STATE,
    HELLO,
    LOAD,
    LOG,
    OPEN,
    REPLY,
    TASK_STATE,
    CallMessage,
    CallReplyMessage,
    GetTaskStateRequest,
    Kind,
    LoadRequest,
    LoadSettings,
    Registered,
    ScheduleDeclaration,
)
from . import gateway
from .background import spawn
from .messages import CallReply, CallRequest

#: environment variables a kernel must not see: the server's own credentials. A kernel needs
#: none of them (it talks to the host over its connection file), and server code is not
#: given them. (It runs as the server's OS user all the same: see the README's trust model.)
SECRET_ENV = frozenset(
    {
        "JUPYTER_TOKEN",  # Jupyter's own login
        "JUPYTER_PASSWORD",
        "JUPYTERHUB_API_TOKEN",  # a JupyterHub single-user server's token to the Hub
        "JPY_API_TOKEN",  # the same, by its old name
        "JUPYTER_GATEWAY_AUTH_TOKEN",  # a kernel gateway the server may use
        "JUPYTER_GATEWAY_HTTP_PWD",
        "JUPYTER_ANVIL_COOKIE_KEY",
        "JUPYTER_ANVIL_SMTP_PASSWORD",  # the mail relay's: the host sends mail, never a kernel
    }
)

log = logging.getLogger(__name__)

LogSink = Callable[[str, str, str], None]  # (call_id, stream, text)
#: the kernel's answer to a request: its data and binary buffers
Reply = asyncio.Future[tuple[dict[str, Any], list[Any]]]
#: where the kernel's hello waits among the requests (no request id of the host's looks like it)
_HELLO_REQ = "hello"
NestedCallHandler = Callable[["AppKernel", CallRequest], Awaitable[CallReply]]


class KernelLoadError(Exception):
    """The server cells failed to run; ``detail`` holds the wire error with cell info."""

    def __init__(
        self, message: str, detail: dict[str, Any] | None = None, traceback: str = "", retry: bool = False
    ) -> None:
        super().__init__(message)
        self.detail = detail or {}
        self.traceback = traceback
        #: not the cells' fault (a kernel gateway that is down): the same load may work later
        self.retry = retry


class AppKernel:
    """A kernel serving one app: started, warmed with the server cells, then called."""

    _numbers = itertools.count(1)
    #: what its server cells declared with ``@server.scheduled`` (checked by the host's
    #: ``schedules.declared``, not here); none until it has loaded
    schedules: tuple[ScheduleDeclaration, ...] = ()

    def __init__(
        self,
        manager: AsyncKernelManager,
        app: str,
        on_log: LogSink,
        on_nested_call: NestedCallHandler,
        on_death: Callable[[AppKernel], None],
        on_task_state: Callable[[str, dict[str, Any]], None] = lambda task_id, state: None,
    ) -> None:
        self.manager = manager
        self.app = app
        self.number = next(self._numbers)
        self.on_log = on_log
        self.on_nested_call = on_nested_call
        self.on_death = on_death
        self.on_task_state = on_task_state
        self.comm_id = uuid.uuid4().hex
        self.client: Any = None
        #: what its server cells registered, by kind
        self.registered = Registered()
        #: calls running here: its lease count, changed by its KernelPool only
        self.in_flight = 0
        self.retiring = False
        self.dead = False
        self._death_reported = False
        self.last_used = asyncio.get_running_loop().time()
        self._pending: dict[str, Reply] = {}
        self._ids = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        #: started by a gateway and reached over its WebSocket (no ZeroMQ sockets, no process)
        self.remote = gateway.is_gateway_kernel(manager)

    def __repr__(self) -> str:
        return f"<AppKernel {self.app}#{self.number} in_flight={self.in_flight}>"

    # -- life cycle -----------------------------------------------------------------
    async def start(
        self,
        notebook: str,
        cells: list[dict[str, Any]],
        cwd: str,
        load_timeout: float,
        settings: LoadSettings | None = None,
    ) -> None:
        """Start the kernel, install the runtime and run the server cells (``settings``:
        what server code may know of the host's configuration).

        Raises :class:`KernelLoadError` if a cell fails (the kernel is shut down).
        """
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        if self.remote:
            # the gateway's manager takes the kernel spec's name here, not from itself; it sends
            # the server's KERNEL_* variables and those GatewayClient.allowed_envs lists (the
            # server refuses to start if that names one of SECRET_ENV), not the rest
            await self._start_remote(cwd, load_timeout)
        else:
            await self.manager.start_kernel(env=env, cwd=cwd)
        try:
            self.client = self.manager.client()
            # a gateway client's start_channels is a coroutine (it opens the WebSocket)
            opening = ensure_async(self.client.start_channels())
            if self.remote:
                await self._remote_ready(opening, load_timeout)
            else:
                await opening
                await self.client.wait_for_ready(timeout=load_timeout)
            await self._install_runtime(load_timeout)
            if self.remote:
                gateway.forward_iopub(self.client, self._on_remote_iopub, self._remote_closed)
            else:
                self._tasks.append(asyncio.create_task(self._read_iopub()))
            self._tasks.append(asyncio.create_task(self._watch_process()))
            await self._handshake(load_timeout)
            load: LoadRequest = {
                "op": LOAD,
                "req": self._new_req(),
                "notebook": notebook,
                "cells": [{"index": int(c["index"]), "source": str(c["source"])} for c in cells],
                "call_id": f"load-{self.number}",
                "settings": settings or {},
            }
            data, _ = await asyncio.wait_for(self.request(load), load_timeout)
        except BaseException:
            await self.shutdown()
            raise
        if "error" in data:
            await self.shutdown()
            raise KernelLoadError(describe_load_error(data["error"]), data["error"], data.get("traceback", ""))
        self.registered = Registered.from_wire(data.get("registrations"))
        self.schedules = schedule_declarations(data.get("schedules"))

    async def _start_remote(self, cwd: str, timeout: float) -> None:
        """Ask the gateway for a kernel; a gateway that is down or does not answer in
        ``timeout`` is a :class:`KernelLoadError` that says so (not a traceback)."""
        try:
            await asyncio.wait_for(self.manager.start_kernel(kernel_name=self.manager.kernel_name, cwd=cwd), timeout)
        except asyncio.TimeoutError:
            raise KernelLoadError(
                f"The kernel gateway did not start a kernel within {timeout:g} s", retry=True
            ) from None
        except Exception as e:  # noqa: BLE001 - tornado's HTTPError or a connection error: its words say what
            raise KernelLoadError(
                f"The kernel gateway could not start a kernel: {gateway_error(e)}", retry=True
            ) from None

    async def _remote_ready(self, opening: Awaitable[Any], timeout: float) -> None:
        """Open the gateway kernel's WebSocket and wait for its first reply, each within
        ``timeout``. The gateway answers the WebSocket only once its kernel answers (or after
        its own minute), so a gateway slow to start kernels would hold the load past
        ``load_timeout``: it is a :class:`KernelLoadError` instead, tried again later (the
        kernel, started late, is shut down on the gateway by :meth:`start`)."""
        late = f"The kernel gateway started a kernel, but it did not answer within {timeout:g} s"
        try:
            await asyncio.wait_for(opening, timeout)
            await self.client.wait_for_ready(timeout=timeout)
        except asyncio.TimeoutError:
            raise KernelLoadError(late, retry=True) from None
        except RuntimeError as e:  # wait_for_ready's: "Kernel didn't respond in N seconds", or it died
            said = str(e)
            raise KernelLoadError(
                late if "respond" in said else f"The kernel gateway's kernel stopped: {said}", retry=True
            ) from None

    @property
    def functions(self) -> frozenset[str]:
        """The callables its server cells registered."""
        return self.registered.callables

    async def _handshake(self, timeout: float) -> None:
        """Open the comm and wait for the kernel's hello: a kernel that speaks another
        protocol version (another jupyter-anvil in its environment) is refused before it
        is sent anything to run."""
        hello = asyncio.get_running_loop().create_future()
        self._pending[_HELLO_REQ] = hello
        hello.add_done_callback(lambda _: self._pending.pop(_HELLO_REQ, None))
        self._send({"op": OPEN, "protocol": protocol.PROTOCOL_VERSION}, msg_type="comm_open")
        try:
            data, _ = await asyncio.wait_for(hello, timeout)
        except asyncio.TimeoutError:
            raise KernelLoadError(
                f"the app's kernel did not say which jupyter-anvil protocol it speaks within {timeout:g} s "
                f"(this server speaks {protocol.PROTOCOL_VERSION}): install the same jupyter-anvil version "
                "in the kernel's environment"
            ) from None
        mismatch = protocol.version_mismatch(data.get("protocol"))
        if mismatch is not None:
            raise KernelLoadError(mismatch)

    async def _install_runtime(self, timeout: float) -> None:
        code = (
            "import jupyter_anvil.kernel.runtime as _anvil_runtime\n"
            f"_anvil_runtime.install({self.app!r})\n"
            "del _anvil_runtime"
        )
        msg_id = self.client.execute(code, silent=True, store_history=False)
        while True:
            reply = await self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content.get("status") != "ok":
            raise KernelLoadError(
                "Could not start the jupyter-anvil runtime in the kernel: "
                f"{content.get('ename')}: {content.get('evalue')} "
                "(is jupyter-anvil installed in the kernel's environment?)"
            )

    async def shutdown(self) -> None:
        """Stop the kernel now; calls still in flight fail with ExecutionTerminatedError."""
        self.retiring = True
        for task in self._tasks:
            task.cancel()
        self._fail_pending(errors.ExecutionTerminatedError("The kernel running this call was shut down"))
        if self.client is not None:
            try:
                self.client.stop_channels()
            except Exception:  # a gateway client whose WebSocket never opened
                log.debug("stopping the channels of %r", self, exc_info=True)
        try:
            if self.manager.has_kernel:
                await self.manager.shutdown_kernel(now=True)
        except Exception:
            log.debug("shutting down %r", self, exc_info=True)

    # -- requests ---------------------------------------------------------------------
    def _send(self, data: Mapping[str, Any], buffers: list[bytes] | None = None, msg_type: str = "comm_msg") -> None:
        content: dict[str, Any] = {"comm_id": self.comm_id, "data": data}
        if msg_type == "comm_open":
            content["target_name"] = COMM_TARGET
        msg = self.client.session.msg(msg_type, content)
        if self.remote:
            self.client.send_shell(msg, buffers or [])
            return
        self.client.session.send(self.client.shell_channel.socket, msg, buffers=buffers or [])

    def _new_req(self) -> str:
        return f"h{next(self._ids)}"

    def request(self, data: Mapping[str, Any], buffers: list[bytes] | None = None) -> Reply:
        """Send a request (its ``req`` made by :meth:`_new_req`); the future resolves to
        the kernel's reply (data, buffers)."""
        if self.dead:
            raise errors.ExecutionTerminatedError("The kernel serving this app has died")
        req = str(data["req"])
        future: Reply = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        future.add_done_callback(lambda _: self._pending.pop(req, None))
        self._send(data, buffers)
        return future

    def get_task_state(self, task_id: str) -> Reply:
        """Ask for a running background task's state now; the reply's ``state`` is None
        if it has none (or it is not running here)."""
        query: GetTaskStateRequest = {"op": GET_TASK_STATE, "req": self._new_req(), "task_id": task_id}
        return self.request(query)

    async def call(self, request: CallRequest, timeout: float | None = None, kind: Kind = CALLABLE) -> CallReply:
        """Run a server call (of ``request.command``, a registration of ``kind``) on this
        kernel; ``asyncio.TimeoutError`` after ``timeout``."""
        media_ids, buffers = wire.media_to_buffers(request.media)
        # waiting on the reply future itself (not a coroutine) spares a task per call
        message: CallMessage = {
            "op": CALL,
            "req": self._new_req(),
            "call_id": request.call_id,
            "command": request.command,
            "depth": request.depth,
            "args": request.args,
            "kwargs": request.kwargs,
            "objects": request.objects,
            "media": media_ids,
        }
        if kind != CALLABLE:
            message["kind"] = kind
        if request.parent is not None:
            message["parent"] = request.parent
        caller = request.caller
        if caller is not None:
            message["session"] = {"id": caller.session.id, "data": caller.session.data}
            message["cookies"] = caller.cookies
            message["context"] = caller.context()
        reply = self.request(message, buffers)
        data, reply_buffers = await asyncio.wait_for(reply, timeout)
        return self._reply_from(cast(CallReplyMessage, data), reply_buffers, request)

    def _reply_from(self, data: CallReplyMessage, buffers: list[Any], request: CallRequest) -> CallReply:
        if "error" in data:
            if data.get("traceback"):
                self.on_log(request.call_id, "traceback", data["traceback"])
            reply = CallReply(error=data["error"])
        else:
            reply = CallReply(
                response=data.get("response"),
                objects=data.get("objects") or [],
                media=wire.media_from_buffers(data.get("media"), buffers),
            )
        # CallReply keeps the changes as plain dicts (the session service reads them with .get)
        reply.session_changes = cast("dict[str, Any] | None", data.get("session"))
        reply.cookie_changes = data.get("cookies")
        reply.traceback, reply.task_state = data.get("traceback"), data.get("task_state")
        return reply

    # -- what the kernel sends ------------------------------------------------------------
    async def _read_iopub(self) -> None:
        """Read the kernel's iopub socket directly.

        Every call brings three messages (status busy, our comm_msg, status idle), and
        jupyter_client's full decoding (dates parsed in every header) was the largest
        cost of a call on the host. Here only the header is decoded to skip what is not
        ours, and the signature is checked on what is.
        """
        socket = self.client.iopub_channel.socket
        # a call's three messages arrive together: after one wait, drain what is there
        # without the asyncio socket's per-message future
        drain: zmq.Socket[bytes] = zmq.Socket.shadow(socket.underlying)
        while True:
            await socket.poll(flags=zmq.POLLIN)
            while True:
                try:
                    frames = drain.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_iopub(frames)

    def _on_iopub(self, frames: list[bytes]) -> None:
        session = self.client.session
        try:
            _, (signature, header, parent, metadata, content, *buffers) = session.feed_identities(frames)
            if json.loads(header).get("msg_type") != "comm_msg":
                return
            if session.auth is not None and not hmac.compare_digest(
                signature, session.sign([header, parent, metadata, content])
            ):
                log.warning("[jupyter-anvil] dropped a message with a bad signature from %r", self)
                return
            message = json.loads(content)
            if message.get("comm_id") == self.comm_id:
                self._on_comm_message(message.get("data") or {}, buffers)
        except Exception:  # one bad message must not stop the reader
            log.exception("[jupyter-anvil] bad message from %r", self)

    def _on_remote_iopub(self, message: dict[str, Any]) -> None:
        """A message from a gateway kernel's iopub (decoded already, and signed by the gateway)."""
        try:
            content = message.get("content") or {}
            if message.get("msg_type") == "status" and content.get("execution_state") in ("restarting", "dead"):
                # the gateway restarts a kernel that died, under the same id: without the
                # runtime and the app's cells, so it is not this app's kernel any more
                self._died(None, f"its kernel died and was {content['execution_state']} on the gateway")
                return
            if message.get("msg_type") != "comm_msg":
                return
            if content.get("comm_id") == self.comm_id:
                self._on_comm_message(content.get("data") or {}, message.get("buffers") or [])
        except Exception:  # one bad message must not stop the reader
            log.exception("[jupyter-anvil] bad message from %r", self)

    def _remote_closed(self) -> None:
        """The gateway's WebSocket closed: the kernel (or the gateway) is gone."""
        if not self.retiring:
            self._died(None, "its kernel gateway closed the connection")

    def _on_comm_message(self, data: dict[str, Any], buffers: list[Any]) -> None:
        op = data.get("op")
        if op in (REPLY, HELLO):
            future = self._pending.get(_HELLO_REQ if op == HELLO else str(data.get("req")))
            if future is not None and not future.done():
                future.set_result((data, buffers))
        elif op == LOG:
            self.on_log(str(data.get("call_id")), str(data.get("stream")), str(data.get("text")))
        elif op == CALL:
            spawn(self._serve_nested_call(cast(CallMessage, data), buffers))
        elif op == TASK_STATE:
            self.on_task_state(str(data.get("task_id")), data.get("state") or {})

    async def _serve_nested_call(self, data: CallMessage, buffers: list[Any]) -> None:
        try:
            request = CallRequest(
                command=str(data.get("command")),
                args=data.get("args") or [],
                kwargs=data.get("kwargs") or {},
                objects=data.get("objects") or [],
                media=wire.media_from_buffers(data.get("media"), buffers),
                call_id=f"{data.get('parent') or 'kernel'}.{data.get('req')}",
                depth=int(data.get("depth", 1)),
                from_client=False,
                parent=str(data["parent"]) if data.get("parent") else None,
                context=data.get("context") if isinstance(data.get("context"), dict) else None,
            )
            reply = await self.on_nested_call(self, request)
        except Exception as e:  # noqa: BLE001 - the nested caller gets the error
            reply = CallReply.failure(e)
        out: CallReplyMessage = {"op": REPLY, "req": data.get("req")}
        out_buffers: list[bytes] = []
        if reply.error is not None:
            out["error"] = reply.error
        else:
            out["response"], out["objects"] = reply.response, reply.objects
            out["media"], out_buffers = wire.media_to_buffers(reply.media)
        if not self.dead:
            self._send(out, out_buffers)

    async def _watch_process(self, interval: float = 0.2) -> None:
        provisioner = self.manager.provisioner
        if provisioner is None:
            return
        while (exit_code := await provisioner.poll()) is None:
            await asyncio.sleep(interval)
        self._died(exit_code)

    def has_exited(self) -> bool:
        """Whether the kernel's process is gone, seen now rather than at the next poll of
        ``_watch_process``: a call leased in between would be sent to a dead kernel."""
        if self.dead:
            return True
        process = getattr(self.manager.provisioner, "process", None)  # local kernels only
        if process is None or self.retiring or process.poll() is None:
            return False
        self.dead = True
        # the pool asks while it looks for a kernel: it hears of the death once it is done
        asyncio.get_running_loop().call_soon(self._died, process.returncode)
        return True

    def _died(self, exit_code: int | None, why: str = "") -> None:
        if self._death_reported:
            return
        self._death_reported = self.dead = True
        kernel = f"{self.app}#{self.number}"
        message = f"Server code exited unexpectedly: {kernel} ({why})" if why else describe_exit(exit_code, kernel)
        self._fail_pending(errors.ExecutionTerminatedError(message))
        self.on_death(self)

    def _fail_pending(self, exc: Exception) -> None:
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(exc)


def describe_exit(exit_code: int | None, kernel: str) -> str:
    """Anvil's wording for a worker that died."""
    if exit_code == -signal.SIGKILL:
        return f"Server code execution process was killed. This is usually caused by running out of memory. ({kernel})"
    if exit_code is not None and exit_code < 0:
        return f"Server code execution process was killed with signal {-exit_code} ({kernel})"
    return f"Server code exited unexpectedly: {kernel} (exit code {exit_code})"


def gateway_error(e: BaseException) -> str:
    """A gateway failure in a line, without the URL's credentials or a traceback."""
    reason = getattr(e, "log_message", None) or getattr(e, "reason", None) or str(e) or type(e).__name__
    status = getattr(e, "status_code", None)
    return f"{status}: {reason}" if status else str(reason)


def describe_load_error(error: dict[str, Any]) -> str:
    """``Server cell 3 (`import foo`) raised ModuleNotFoundError: No module named 'foo' (line 1)``."""
    line = f" (line {error['line']})" if error.get("line") else ""
    cell = error.get("cell")
    number = wire.cell_number(cell) if isinstance(cell, int) and not isinstance(cell, bool) else "?"
    return (
        f"Server cell {number} (`{error.get('first_line', '')}`) raised "
        f"{error.get('type')}: {error.get('message')}{line}"
    )


def schedule_declarations(entries: object) -> tuple[ScheduleDeclaration, ...]:
    """A load reply's ``schedules``: the objects in it, as they came (a kernel that predates
    schedules sends none). Their fields are checked where they become schedules."""
    if not isinstance(entries, list):
        return ()
    return tuple(cast(ScheduleDeclaration, entry) for entry in entries if isinstance(entry, dict))
