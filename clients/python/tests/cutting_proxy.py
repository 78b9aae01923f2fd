"""A TCP proxy on loopback that forwards requests, and can drop a connection instead of relaying an answer."""

from __future__ import annotations

import collections
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator


class CuttingProxy:
    """Forwards each connection to `target`; resets the client's connection instead of relaying a chosen answer.

    `cut("PATCH", 2)` cuts the answer to the second PATCH through the proxy: once the server starts answering
    (so it has committed), the client's connection is reset and the answer is thrown away.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: collections.Counter[str] = collections.Counter()  # requests seen, by method
        self.to_cut: set[tuple[str, int]] = set()
        self.cut = 0  # answers thrown away
        self.connections = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def cut_answer(self, method: str, number: int = 1) -> None:
        """Cut the answer to the `number`th request with `method` (counted from the proxy's start)."""
        with self._lock:
            self.to_cut.add((method, number))

    def close(self) -> None:
        """Stop accepting, and end every thread."""
        self._stopping.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.connections += 1
            cutting = threading.Event()  # set: the next bytes from the server answer a request to cut
            for target in (self._forward, self._answer):
                thread = threading.Thread(target=target, args=(client, upstream, cutting), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _forward(self, client: socket.socket, upstream: socket.socket, cutting: threading.Event) -> None:
        """Client to server, noting each request's method (one request at a time: no pipelining)."""
        for data in self._received(client):
            method = data.split(b" ", 1)[0].decode("ascii", "replace")
            if method.isalpha() and method.isupper():
                with self._lock:
                    self.requests[method] += 1
                    if (method, self.requests[method]) in self.to_cut:
                        cutting.set()
            with contextlib.suppress(OSError):
                upstream.sendall(data)
        self._close(client, upstream)

    def _answer(self, client: socket.socket, upstream: socket.socket, cutting: threading.Event) -> None:
        """Server to client, unless the answer is one to cut: then reset the client's connection."""
        for data in self._received(upstream):
            if cutting.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with self._lock:
                    self.cut += 1
                break
            with contextlib.suppress(OSError):
                client.sendall(data)
        self._close(client, upstream)

    def _received(self, source: socket.socket) -> Iterator[bytes]:
        """What arrives on `source`, piece by piece, until it closes or the proxy stops."""
        source.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            yield data

    @staticmethod
    def _close(*ends: socket.socket) -> None:
        for end in ends:
            with contextlib.suppress(OSError):
                end.close()
