"""The SPIFFE Workload API (X.509 part): a certificate source reading it, and a server offering it.

The Workload API is a gRPC service on a Unix socket (``SPIFFE_ENDPOINT_SOCKET``, e.g. a SPIRE
agent's): ``SpiffeWorkloadAPI/FetchX509SVID`` streams the workload's SVIDs (DER certificates, a
PKCS#8 DER key, the trust bundle) and streams again on every rotation. Every call carries the
``workload.spiffe.io: true`` metadata; a server refuses calls without it.

- :class:`WorkloadApiCertificateSource` — a :class:`CertificateSource` fed by that stream (the
  default SVID, or the one with ``spiffe_id=``); invalid updates are refused and the previous
  bundle stays; a broken stream is re-opened with backoff.
- :class:`WorkloadApiServer` — serves one :class:`CertificateSource` on a Unix socket, so libraries
  that speak the Workload API (e.g. ``py-spiffe``, go-spiffe, Envoy's SDS via SPIRE) can take the
  mesh's SVIDs. **Trust is the socket file's permissions** (created 0600, owner = this process):
  whoever can open it gets this identity — one socket per identity, as Istio's agent does.
  JWT-SVIDs are not offered (``UNIMPLEMENTED``).

Message classes are built from a hand-written descriptor (``spiffe/go-spiffe:proto/spiffe/workload/
workload.proto``, X.509 messages only; the proto has no package).

Example::

    async with WorkloadApiCertificateSource("unix:///run/spire/agent.sock") as source:
        source.current().spiffe_id
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from meshlib.lifecycle import StartStopContext
from meshlib.security.bundle import CertBundle, CertificateSource, load_pem_certificates
from meshlib.security.ca import certs_pem, private_key_pem
from meshlib.security.errors import CertificateInvalid, NoCertificateYet, SecurityError
from meshlib.security.source_lifecycle import BackgroundCertificateSource
from meshlib.security.spiffe import SpiffeId
from meshlib.security.verify import verify_svid

_log = logging.getLogger(__name__)

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"
SECURITY_HEADER = ("workload.spiffe.io", "true")
SERVICE_NAME = "SpiffeWorkloadAPI"
FETCH_X509_SVID = f"/{SERVICE_NAME}/FetchX509SVID"
MAX_DER_BYTES = 1 << 20
FIRST_UPDATE_TIMEOUT_S = 10.0
RETRY_MAX_S = 30.0


class WorkloadApiNotSupported(SecurityError):
    """The Workload API cannot be used here (e.g. no socket configured)."""


# --- messages --------------------------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto(name="meshlib/spiffe_workload.proto", syntax="proto3")
    proto.message_type.add(name="X509SVIDRequest")
    svid = proto.message_type.add(name="X509SVID")
    svid.field.add(name="spiffe_id", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    svid.field.add(name="x509_svid", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    svid.field.add(name="x509_svid_key", number=3, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    svid.field.add(name="bundle", number=4, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    svid.field.add(name="hint", number=5, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    response = proto.message_type.add(name="X509SVIDResponse")
    response.field.add(name="svids", number=1, type=_F.TYPE_MESSAGE, type_name=".X509SVID", label=_F.LABEL_REPEATED)
    response.field.add(name="crl", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED)
    # field 3 (federated_bundles, a map) is not used: proto3 parsing skips it.
    pool.Add(proto)
    return pool


_POOL = _build_pool()
X509SVIDRequest: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("X509SVIDRequest"))
X509SVIDResponse: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("X509SVIDResponse"))
X509SVID: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("X509SVID"))


# --- DER helpers -----------------------------------------------------------------------------------------


def split_der_certificates(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates (each an ASN.1 SEQUENCE); :class:`CertificateInvalid` if malformed."""
    if len(data) > MAX_DER_BYTES:
        raise CertificateInvalid(f"DER certificates larger than {MAX_DER_BYTES} bytes")
    out: list[bytes] = []
    offset = 0
    while offset < len(data):
        if data[offset] != 0x30 or offset + 2 > len(data):
            raise CertificateInvalid("DER certificate list is malformed (expected a SEQUENCE)")
        first = data[offset + 1]
        header = 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or offset + 2 + count > len(data):
                raise CertificateInvalid("DER certificate list has a bad length")
            length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
            header += count
        end = offset + header + length
        if end > len(data):
            raise CertificateInvalid("DER certificate list is truncated")
        out.append(data[offset:end])
        offset = end
    return out


def _der_to_pem(data: bytes, what: str) -> bytes:
    try:
        return certs_pem([x509.load_der_x509_certificate(der) for der in split_der_certificates(data)])
    except ValueError as exc:
        raise CertificateInvalid(f"{what}: {exc}") from None


def bundle_from_svid(svid: Any) -> CertBundle:
    """A :class:`CertBundle` from a Workload API ``X509SVID`` message (validated)."""
    try:
        key = serialization.load_der_private_key(bytes(svid.x509_svid_key), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateInvalid(f"Workload API key is not PKCS#8 DER: {exc}") from None
    bundle = CertBundle.from_pem(
        _der_to_pem(bytes(svid.x509_svid), "x509_svid"),
        private_key_pem(key),  # type: ignore[arg-type]
        _der_to_pem(bytes(svid.bundle), "bundle"),
    )
    if svid.spiffe_id and SpiffeId.parse(svid.spiffe_id) != bundle.spiffe_id:
        raise CertificateInvalid(f"Workload API says {svid.spiffe_id} but the certificate is {bundle.spiffe_id}")
    verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem)
    return bundle


def svid_message(bundle: CertBundle) -> Any:
    """The ``X509SVID`` message for ``bundle`` (DER certificates, PKCS#8 DER key)."""
    der = serialization.Encoding.DER
    chain = load_pem_certificates(bundle.cert_chain_pem, "certificate chain")
    roots = load_pem_certificates(bundle.trust_bundle_pem, "trust bundle")
    key = serialization.load_pem_private_key(bundle.private_key_pem, password=None)
    return X509SVID(
        spiffe_id=str(bundle.spiffe_id),
        x509_svid=b"".join(c.public_bytes(der) for c in chain),
        x509_svid_key=key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        bundle=b"".join(c.public_bytes(der) for c in roots),
    )


def endpoint_target(endpoint: str | None) -> str:
    """A grpc target for a Workload API address (``unix:///path``, ``unix:path`` or a bare path)."""
    value = endpoint or os.environ.get(ENDPOINT_ENV, "")
    if not value:
        raise WorkloadApiNotSupported(f"no Workload API socket: pass one or set {ENDPOINT_ENV}")
    if value.startswith("unix://"):
        return "unix:" + value[len("unix://") :]
    if value.startswith("unix:"):
        return value
    if value.startswith("/"):
        return "unix:" + value
    raise WorkloadApiNotSupported(f"{value!r}: only unix:// Workload API sockets are supported")


# --- client ----------------------------------------------------------------------------------------------


class WorkloadApiCertificateSource(BackgroundCertificateSource):
    """A :class:`CertificateSource` fed by ``FetchX509SVID``; see the module docstring."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        spiffe_id: SpiffeId | None = None,
        first_update_timeout_s: float = FIRST_UPDATE_TIMEOUT_S,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.target = endpoint_target(endpoint)
        self.spiffe_id = spiffe_id
        self.first_update_timeout_s = first_update_timeout_s
        self._rng = rng or random.Random()
        self._first = asyncio.Event()
        self.last_error: str | None = None
        self.updates = 0

    def _missing_certificate(self) -> str:
        detail = f": {self.last_error}" if self.last_error else ""
        return f"no SVID from the Workload API at {self.target} yet{detail}"

    async def start(self) -> None:
        """Open the stream and wait for the first SVID (bounded); raises :class:`NoCertificateYet` on timeout."""
        self._start_task(self._run, "meshlib-workload-api")
        try:
            async with asyncio.timeout(self.first_update_timeout_s):
                await self._first.wait()
        except TimeoutError:
            await self.stop()
            raise NoCertificateYet(
                f"no SVID from the Workload API at {self.target} within {self.first_update_timeout_s}s"
                + (f": {self.last_error}" if self.last_error else "")
            ) from None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    call = channel.unary_stream(
                        FETCH_X509_SVID,
                        request_serializer=X509SVIDRequest.SerializeToString,
                        response_deserializer=X509SVIDResponse.FromString,
                    )
                    async for response in call(X509SVIDRequest(), metadata=[SECURITY_HEADER]):
                        self._on_response(response)
                        failures = 0
                self.last_error = "the Workload API closed the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            failures += 1
            delay = self._rng.uniform(0.5, 1.0) * min(RETRY_MAX_S, 0.2 * 2 ** min(failures, 10))
            _log.warning("Workload API stream to %s: %s; retrying in %.1fs", self.target, self.last_error, delay)
            await asyncio.sleep(delay)

    def _on_response(self, response: Any) -> None:
        svids = list(response.svids)
        if self.spiffe_id is not None:
            svids = [s for s in svids if s.spiffe_id == str(self.spiffe_id)]
        if not svids:
            self.last_error = "the Workload API sent no (matching) SVID"
            _log.warning("%s; keeping the current one", self.last_error)
            return
        try:
            bundle = bundle_from_svid(svids[0])  # the first one is the default SVID
        except SecurityError as exc:
            self.last_error = f"invalid SVID from the Workload API: {exc}"
            _log.warning("%s; keeping the current one", self.last_error)
            return
        self._bundle = bundle
        self.updates += 1
        self.last_error = None
        self._first.set()
        self._subscribers.notify(bundle)


# --- server ----------------------------------------------------------------------------------------------


class WorkloadApiServer(StartStopContext):
    """Serves ``source``'s SVID over the Workload API on a Unix socket (file mode 0600)."""

    def __init__(self, source: CertificateSource, path: str | os.PathLike[str], *, mode: int = 0o600) -> None:
        self.source = source
        self.path = Path(path)
        self.mode = mode
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Condition()
        self._generation = 0  # bumped on every rotation; streams wait for it to move
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def endpoint(self) -> str:
        """``unix://<path>``, the value for ``SPIFFE_ENDPOINT_SOCKET``."""
        return f"unix://{self.path}"

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            self._fetch_x509_svid,
            request_deserializer=X509SVIDRequest.FromString,
            response_serializer=X509SVIDResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"FetchX509SVID": handler}),)
        )
        old_umask = os.umask(0o177)  # the socket is created 0600: no window where others could connect
        try:
            server.add_insecure_port(f"unix:{self.path}")
            await server.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self.mode)
        self._server = server
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        def rotated(_: CertBundle) -> None:
            self._generation += 1
            task = loop.create_task(self._notify())
            pending.add(task)
            task.add_done_callback(pending.discard)

        self._unsubscribe = self.source.subscribe(rotated)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _fetch_x509_svid(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(SECURITY_HEADER[0]) != SECURITY_HEADER[1]:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")
        while True:
            generation = self._generation
            try:
                bundle: CertBundle | None = self.source.current()
            except NoCertificateYet:
                bundle = None
            if bundle is not None:
                yield X509SVIDResponse(svids=[svid_message(bundle)])
            async with self._changed:  # the predicate is checked first: a rotation meanwhile is not missed
                await self._changed.wait_for(lambda seen=generation: self._generation != seen)  # type: ignore[misc]
