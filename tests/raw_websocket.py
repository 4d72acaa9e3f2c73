"""A WebSocket client on a bare socket, for tests of clients that misbehave: one that never
reads (its receive window small, so the server's messages pile up on the server's side), or
one that writes frames no library would."""

from __future__ import annotations

import base64
import os
import socket
import struct

from conftest import AnvilServer


def raw_socket_client(server: AnvilServer, path: str, headers: dict[str, str] | None = None) -> socket.socket:
    """A WebSocket client that does the handshake (with ``headers``), then reads only if told."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    raw.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    raw.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return raw


def text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:4096])) + _mask_tail(payload, mask)
    return head + mask + masked


def _mask_tail(payload: bytes, mask: bytes) -> bytes:
    tail = payload[4096:]
    if not tail:
        return b""
    # 4096 is a multiple of 4, so the mask lines up again: xor as big integers
    key = (mask * (len(tail) // 4 + 1))[: len(tail)]
    return (int.from_bytes(tail, "big") ^ int.from_bytes(key, "big")).to_bytes(len(tail), "big")
