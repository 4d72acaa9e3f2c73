"""A TCP forwarder on loopback that a test can cut and restore: the browser talks to the
forwarder's port, which relays to the server's. Stopping it closes the listening socket
and every relayed connection, so the page AND its service worker (whose fetches
Playwright's ``context.set_offline`` does not cut) find no server; starting it listens on
the same port again. It can also swallow the server's replies (a reply lost on the way)."""

from __future__ import annotations

import contextlib
import socket
import threading

from conftest import free_port


class Forwarder:
    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        #: how many connections were accepted (tests use it to see traffic)
        self.accepted = 0
        #: while true, what the server sends is dropped (counted in `swallowed`): the server
        #: answers, and the browser never gets the answer
        self.swallow_replies = False
        self.swallowed = 0

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one (as a server going away does)."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in connections:
            self._close(conn)

    @staticmethod
    def _close(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                self._close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    self._close(client)
                    self._close(upstream)
                    return
                self.accepted += 1
                self._connections.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.swallow_replies:
                    with self._lock:
                        self.swallowed += len(data)
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)
            self._close(source)
            self._close(sink)
