"""App kernels on a Jupyter (Enterprise) Gateway.

The one place that decides it: when jupyter_server's ``GatewayClient`` is enabled
(``--GatewayClient.url=http://…`` or ``JUPYTER_GATEWAY_URL``), every app and task kernel is
started by the gateway through jupyter_server's ``GatewayKernelManager`` (its channels run
over one WebSocket, not ZeroMQ), whatever ``AnvilApp.kernel_manager_class`` says.

``GatewayKernelClient`` reads the WebSocket on a thread and puts each message on a
``queue.Queue`` per channel, which its ``get_msg`` polls with ``asyncio.sleep(0)``: a reader
waiting on iopub that way would keep a core busy. :func:`forward_iopub` puts a forwarder in
the iopub queue's place instead, which hands each message to the event loop as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelClient, GatewayKernelManager
from jupyter_server.services.kernels.connection.base import deserialize_binary_message, serialize_binary_message

__all__ = ["forward_iopub", "gateway_enabled", "is_gateway_kernel", "new_manager", "secrets_sent_to_kernels"]


def gateway_enabled() -> bool:
    """Whether kernels are to be started on a gateway (jupyter_server's own setting)."""
    return bool(GatewayClient.initialized() and GatewayClient.instance().gateway_enabled)


def secrets_sent_to_kernels(secret_names: frozenset[str]) -> list[str]:
    """The names of the server's credentials that ``GatewayClient.allowed_envs`` would send
    to every kernel on the gateway (jupyter_server sends the server's own ``KERNEL_*``
    variables and those it lists): server code could read them there."""
    if not gateway_enabled():
        return []
    listed = {name.strip() for name in str(GatewayClient.instance().allowed_envs or "").split(",")}
    return sorted(listed & secret_names)


def new_manager(kernel_name: str, parent: Any) -> AsyncKernelManager:
    """A manager of one kernel on the gateway, by the gateway's name for its kernel spec."""
    manager: AsyncKernelManager = GatewayKernelManager(  # type: ignore[no-untyped-call]
        kernel_name=kernel_name, parent=parent, client_factory=BinaryGatewayKernelClient
    )
    return manager


def is_gateway_kernel(manager: AsyncKernelManager) -> bool:
    """Whether ``manager``'s kernel is reached through a gateway's WebSocket."""
    return isinstance(manager, GatewayKernelManager)


class _Forwarder:
    """Stands in for a channel's queue: the client's reader thread puts messages here."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, deliver: Callable[[dict[str, Any]], None], closed: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._closed = closed
        self._finished = False

    def put_nowait(self, message: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self._deliver, message)

    # the reader thread sets this when the WebSocket closes (kernel or gateway gone)
    @property
    def response_router_finished(self) -> bool:
        return self._finished

    @response_router_finished.setter
    def response_router_finished(self, value: bool) -> None:
        if value and not self._finished:
            self._finished = True
            # a closed loop: the server is stopping, and nobody waits to hear
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._closed)

    def empty(self) -> bool:  # what ChannelQueue.stop asks
        return True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def is_alive(self) -> bool:
        return not self._finished


def forward_iopub(client: Any, deliver: Callable[[dict[str, Any]], None], closed: Callable[[], None]) -> None:
    """Have ``client`` (a started ``GatewayKernelClient``) hand each iopub message to
    ``deliver`` on this event loop, and call ``closed`` once its WebSocket is gone."""
    forwarder = _Forwarder(asyncio.get_running_loop(), deliver, closed)
    client._iopub_channel = forwarder
    client._channel_queues["iopub"] = forwarder


class BinaryGatewayKernelClient(GatewayKernelClient):  # type: ignore[misc]
    """jupyter_server's gateway client, also for messages with binary buffers (an app's
    Media): the gateway sends those as binary WebSocket frames, which the original reader
    thread cannot decode (it would stop, and with it every reply from the kernel)."""

    async def start_channels(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """The original opens the WebSocket with a blocking call (up to the gateway's
        launch timeout): run on a thread, so that a slow gateway does not stop the server."""
        opening = super().start_channels(*args, **kwargs)  # type: ignore[no-untyped-call]
        await asyncio.to_thread(asyncio.run, opening)

    def send_shell(self, message: dict[str, Any], buffers: list[bytes]) -> None:
        """Send ``message`` to the kernel's shell: a text frame, or a binary one with buffers.
        It names its channel, or the gateway logs the whole message (the app's data)."""
        message = {**message, "channel": "shell"}
        if not buffers:
            self.shell_channel.send(message)
            return
        assert self.channel_socket is not None
        self.channel_socket.send_binary(serialize_binary_message({**message, "buffers": buffers}))  # type: ignore[no-untyped-call]

    def _route_responses(self) -> None:
        """The reader thread: each frame (text or binary) to its channel's queue, until the
        WebSocket closes; then every queue hears that it is finished."""
        try:
            while not self._channels_stopped and self.channel_socket is not None:
                raw = self.channel_socket.recv()
                if not raw:
                    break
                _ack_at_once(getattr(self.channel_socket, "sock", None))
                message = deserialize_binary_message(raw) if isinstance(raw, bytes) else json.loads(raw)  # type: ignore[no-untyped-call]
                queue = (self._channel_queues or {}).get(message.get("channel"))
                if queue is not None:
                    queue.put_nowait(message)
        except Exception as e:  # noqa: BLE001 - a closed socket or a bad frame: the kernel is unreachable
            if not self._channels_stopped:
                self.log.warning("[jupyter-anvil] gateway WebSocket of kernel %s closed: %s", self.kernel_id, e)
        for queue in list((self._channel_queues or {}).values()):
            queue.response_router_finished = True


#: Linux only; elsewhere the delayed ACKs stay
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _ack_at_once(sock: socket.socket | None) -> None:
    """Acknowledge what the gateway sends at once, not up to 40 ms later.

    The gateway's WebSocket handler (tornado) leaves Nagle's algorithm on: it holds back the
    second small frame of a reply (a comm message after the kernel's busy status) until the
    first is acknowledged, and a Linux receiver delays that ACK by up to 40 ms, so each call
    waited ~40 ms on nothing. The kernel clears quick-ACK mode by itself, hence after each read.
    """
    if sock is None or _TCP_QUICKACK is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
