"""The gateway glue without a gateway: its reader thread decodes text and binary frames
(Media), hands iopub to the event loop and says when the WebSocket is gone; a gateway's
failure is said in one line."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from typing import Any

from jupyter_server.services.kernels.connection.base import serialize_binary_message
from tornado.web import HTTPError

from jupyter_anvil.host.app_kernel import gateway_error
from jupyter_anvil.host.gateway import BinaryGatewayKernelClient, forward_iopub


class FakeSocket:
    """The frames a gateway would send, then a closed connection."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.frames = list(frames)
        self.sent: list[Any] = []

    def recv(self) -> str | bytes:
        if not self.frames:
            raise ConnectionError("closed")
        return self.frames.pop(0)

    def send(self, message: str) -> None:
        self.sent.append(message)

    def send_binary(self, message: bytes) -> None:
        self.sent.append(message)


def message(channel: str, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    header = {"msg_id": "1", "msg_type": msg_type, "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    return {"channel": channel, "header": header, "parent_header": {}, "metadata": {}, "content": content,
            "msg_id": "1", "msg_type": msg_type}  # fmt: skip


def test_text_and_binary_frames_reach_the_loop_and_a_closed_socket_is_said() -> None:
    async def run() -> tuple[list[dict[str, Any]], int]:
        client = BinaryGatewayKernelClient(kernel_id="k")
        text = message("iopub", "comm_msg", {"comm_id": "c", "data": {"op": "log"}})
        binary = serialize_binary_message({**message("iopub", "comm_msg", {"comm_id": "c"}), "buffers": [b"\x00\xff"]})
        client.channel_socket = FakeSocket([json.dumps(text), "{not json", binary])
        client._channel_queues = {}
        got: list[dict[str, Any]] = []
        closed: list[int] = []
        forward_iopub(client, got.append, lambda: closed.append(1))
        reader = threading.Thread(target=client._route_responses)
        reader.start()
        reader.join(5)
        for _ in range(50):
            await asyncio.sleep(0.01)
        return got, len(closed)

    got, closed = asyncio.run(run())
    # the bad frame stops the reader (the kernel is unreachable then): said, once
    assert [m["content"]["comm_id"] for m in got] == ["c"] and closed == 1


def test_a_binary_frame_keeps_its_buffers() -> None:
    async def run() -> list[dict[str, Any]]:
        client = BinaryGatewayKernelClient(kernel_id="k")
        binary = serialize_binary_message({**message("iopub", "comm_msg", {"comm_id": "c"}), "buffers": [b"\x00\xff"]})
        client.channel_socket = FakeSocket([binary])
        client._channel_queues = {}
        got: list[dict[str, Any]] = []
        forward_iopub(client, got.append, lambda: None)
        client._route_responses()
        await asyncio.sleep(0.05)
        return got

    (got,) = asyncio.run(run())
    assert [bytes(b) for b in got["buffers"]] == [b"\x00\xff"]


def test_messages_with_buffers_go_as_binary_frames_and_name_their_channel() -> None:
    client = BinaryGatewayKernelClient(kernel_id="k")
    socket = FakeSocket([])
    client.channel_socket = socket
    client._channel_queues = {}
    client.send_shell(message("shell", "comm_msg", {"comm_id": "c"}) | {"channel": None}, [b"abc"])
    (frame,) = socket.sent
    assert isinstance(frame, bytes) and frame.endswith(b"abc") and b'"channel": "shell"' in frame


def test_a_gateway_failure_is_one_line() -> None:
    assert gateway_error(HTTPError(503, "Gateway down")) == "503: Gateway down"
    assert gateway_error(ConnectionRefusedError(111, "Connection refused")) == "[Errno 111] Connection refused"
