"""Local trust on a Unix socket: the CA identifies a caller by its **peer credentials** (uid).

For workloads on the same machine as the CA (a node agent, a sidecar-less VM): the kernel tells
the server which user opened the connection (``SO_PEERCRED``), which cannot be forged by the
client. A uid → SPIFFE ID map decides the identity; a uid that is not in the map gets nothing.

grpcio does not expose a Unix-socket peer's credentials, so this transport is a small
line-delimited JSON exchange, one request per connection::

    → {"csr": "<PEM>", "validity_duration": 86400}
    ← {"cert_chain": ["<leaf PEM>", ..., "<root PEM>"]}      or   {"error": "...", "code": "PERMISSION_DENIED"}

Linux only (``SO_PEERCRED``). Example::

    server = LocalCaServer(service, "/run/meshlib/ca.sock", {1001: SpiffeId.for_workload("default", "reviews")})
    await server.start()
    source = CaClientCertificateSource(local_socket="/run/meshlib/ca.sock", ca_trust_pem=root_pem)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from meshlib.lifecycle import StartStopContext
from meshlib.security.ca_service import Caller, CertificateAuthorityService, Refused
from meshlib.security.errors import IssuanceRefused, SecurityError
from meshlib.security.spiffe import SpiffeId

_log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 256 * 1024
REQUEST_TIMEOUT_S = 10.0
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (Linux ``SO_PEERCRED``)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        raise SecurityError("local trust needs SO_PEERCRED (Linux); not available on this platform")
    _pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size))
    return int(uid)


class LocalCaServer(StartStopContext):
    """Serves :class:`CertificateAuthorityService` on a Unix socket, identifying callers by uid."""

    def __init__(
        self, service: CertificateAuthorityService, path: str | os.PathLike[str], identities: Mapping[int, SpiffeId]
    ) -> None:
        self.service = service
        self.path = Path(path)
        self.identities = dict(identities)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        # Anyone may connect; the uid map decides who gets what (the kernel vouches for the uid).
        os.chmod(self.path, 0o666)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self.path.exists():
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._answer(reader, writer)
        except Exception:  # never let one connection take the server down
            _log.exception("local CA connection failed")
            reply = {"error": "internal error", "code": "INTERNAL"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        peer = f"unix:uid={uid}"
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                line = await reader.readuntil(b"\n")
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            return self._refuse(peer, Refused(grpc.StatusCode.INVALID_ARGUMENT, "expected one JSON line"))
        if len(line) > MAX_REQUEST_BYTES:
            return self._refuse(peer, Refused(grpc.StatusCode.INVALID_ARGUMENT, "request too large"))
        identity = self.identities.get(uid)
        try:
            if identity is None:
                raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"uid {uid} has no identity on this CA socket")
            try:
                request = json.loads(line)
                csr, validity = str(request["csr"]), int(request.get("validity_duration", 0))
            except (ValueError, KeyError, TypeError) as exc:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {exc}") from None
            chain = self.service.issue(Caller(identity, "local"), csr.encode(), validity)
        except Refused as exc:
            return self._refuse(peer, exc)
        return {"cert_chain": chain}

    def _refuse(self, peer: str, exc: Refused) -> dict[str, Any]:
        self.service.record_refusal(peer, str(exc))
        return {"error": str(exc), "code": exc.code.name}


async def request_over_unix_socket(path: str | os.PathLike[str], csr_pem: str, validity_s: int) -> list[str]:
    """Client side: send one CSR to a :class:`LocalCaServer`; return the PEM chain or raise IssuanceRefused."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(os.fspath(path), limit=MAX_RESPONSE_BYTES)
            try:
                writer.write(json.dumps({"csr": csr_pem, "validity_duration": validity_s}).encode() + b"\n")
                await writer.drain()
                line = await reader.readuntil(b"\n")
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise IssuanceRefused(f"local CA at {os.fspath(path)}: {exc}") from None
    try:
        reply = json.loads(line)
    except ValueError:
        raise IssuanceRefused(f"local CA at {os.fspath(path)}: unreadable reply") from None
    if "error" in reply:
        raise IssuanceRefused(f"local CA at {os.fspath(path)}: {reply.get('code')}: {reply['error']}")
    chain = reply.get("cert_chain")
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        raise IssuanceRefused(f"local CA at {os.fspath(path)}: reply has no cert_chain")
    return chain
