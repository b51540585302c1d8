"""Loopback servers that fail the way broken hosts fail, for upstream faults.

An upstream fault does not imitate a failure in Python objects: the attempt is
sent to one of these servers instead of the real endpoint, so aiohttp and
grpcio meet a real refused connection, a real TCP reset, a real silent peer, a
real garbage status line — and the mesh classifies, retries, ejects and
counts exactly as it would for a broken host. (Stats and outlier detection
stay keyed by the endpoint the balancer picked.)

The servers run on threads of their own, so they need no event loop: a sync
fixture can start and stop them whatever loop (or none) the test runs on.
Each listens on ``127.0.0.1`` only, is started on first use and stopped by
:meth:`FaultServers.close`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

# Behaviours; what each does is in FaultServers.address's docstring.
HTTP_BEHAVIOURS = ("refuse", "reset", "blackhole", "malformed", "status", "stall_body", "slow_body")

_MAX_HEAD = 64 * 1024
_GARBAGE = b"SSH-2.0-meshlib-fault this is not an HTTP response\r\n\r\n"
_BODY_SIZE = 1024


class FaultServers:
    """The misbehaving servers of one fault controller, by (transport, behaviour, parameters)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listeners: dict[tuple[Any, ...], tuple[str, int]] = {}
        self._closers: list[Callable[[], None]] = []

    def address(self, transport: str, behaviour: str, *, status: int = 503, grpc_status: int | None = None,
                seconds: float = 0.0) -> tuple[str, int]:
        """``(ip, port)`` of a server that misbehaves as asked; started on first use.

        - ``refuse``: nothing accepts (connect fails: ``UF``);
        - ``reset``: reads the request head, then resets the connection (TCP RST: ``UC``);
        - ``blackhole``: accepts and never answers (the per-try / route timeout fires: ``UT``);
        - ``malformed``: answers bytes that are not HTTP (``UPE``);
        - ``status``: answers ``status`` (gRPC: ``grpc_status``, or the status Envoy maps ``status`` to);
        - ``stall_body``: answers 200 headers and part of the body, then stalls;
        - ``slow_body``: answers 200 and trickles a 1 KiB body over ``seconds``.
        """
        key = (transport, behaviour, status, grpc_status, seconds)
        with self._lock:
            found = self._listeners.get(key)
            if found is None:
                found = self._listeners[key] = self._start(transport, behaviour, status, grpc_status, seconds)
            return found

    def close(self) -> None:
        """Stop every server and release every stalled connection (idempotent)."""
        self._stop.set()
        with self._lock:
            closers, self._closers = self._closers, []
            self._listeners.clear()
        for close in closers:
            with contextlib.suppress(Exception):
                close()

    # ------------------------------------------------------------------ servers

    def _start(self, transport: str, behaviour: str, status: int, grpc_status: int | None,
               seconds: float) -> tuple[str, int]:
        if behaviour == "refuse":
            return self._refusing()
        if transport == "grpc" and behaviour in ("status", "stall_body", "slow_body"):
            from meshlib.testing.fault_grpc import start_grpc_fault_server

            port, stop = start_grpc_fault_server(behaviour, status, grpc_status, seconds, self._stop)
            self._closers.append(stop)
            return "127.0.0.1", port
        return self._tcp(lambda conn: self._serve(conn, transport, behaviour, status, seconds))

    def _refusing(self) -> tuple[str, int]:
        # Bound but never listening: the kernel refuses every connection to it, and keeping the
        # socket bound keeps the port from being handed to anyone else meanwhile.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._closers.append(sock.close)
        return "127.0.0.1", int(sock.getsockname()[1])

    def _tcp(self, serve: Callable[[socket.socket], None]) -> tuple[str, int]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.1)
        stop = self._stop
        connections: list[socket.socket] = []

        def accept_loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                connections.append(conn)
                threading.Thread(target=self._guarded, args=(serve, conn), daemon=True).start()

        def close() -> None:
            listener.close()
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.close()

        threading.Thread(target=accept_loop, name="meshlib-fault-server", daemon=True).start()
        self._closers.append(close)
        return "127.0.0.1", int(listener.getsockname()[1])

    @staticmethod
    def _guarded(serve: Callable[[socket.socket], None], conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            serve(conn)

    def _serve(self, conn: socket.socket, transport: str, behaviour: str, status: int, seconds: float) -> None:
        if transport == "grpc":
            # HTTP/2 behaviours at the TCP level: wait for the client's first bytes (its preface).
            if not self._wait_readable(conn):
                return
            conn.recv(_MAX_HEAD)
        elif not self._read_request(conn):
            return
        if behaviour == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close → RST
        elif behaviour == "blackhole":
            self._hold(conn)
        elif behaviour == "malformed":
            conn.sendall(_GARBAGE)
        elif behaviour == "status":
            body = f"meshlib fault: status {status}\n".encode()
            conn.sendall(_head(status, len(body)) + body)
        elif behaviour == "stall_body":
            conn.sendall(_head(200, _BODY_SIZE) + b"x" * 16)
            self._hold(conn)
        elif behaviour == "slow_body":
            conn.sendall(_head(200, _BODY_SIZE))
            chunks = 16
            for _ in range(chunks):
                if self._stop.wait(seconds / chunks):
                    return
                conn.sendall(b"x" * (_BODY_SIZE // chunks))

    def _read_request(self, conn: socket.socket) -> bool:
        """Read one HTTP/1.1 request (head and Content-Length body); False if the peer went away."""
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > _MAX_HEAD or not self._wait_readable(conn):
                return False
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        while len(rest) < length:
            if not self._wait_readable(conn):
                return False
            chunk = conn.recv(65536)
            if not chunk:
                return False
            rest += chunk
        return True

    def _wait_readable(self, conn: socket.socket) -> bool:
        while not self._stop.is_set():
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable:
                return True
        return False

    def _hold(self, conn: socket.socket) -> None:
        """Keep the connection open, saying nothing, until the peer closes it or the servers stop."""
        while self._wait_readable(conn):
            if not conn.recv(65536):
                return


def _head(status: int, length: int) -> bytes:
    return (
        f"HTTP/1.1 {status} meshlib fault\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n"
        f"Connection: close\r\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n\r\n"
    ).encode()
