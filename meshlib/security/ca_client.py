"""``CaClientCertificateSource``: short-lived SVIDs from the control plane's CA, rotated before expiry.

The source generates a key, sends a CSR to ``istio.v1.auth.IstioCertificateService/CreateCertificate``
over TLS and installs the returned chain once it verifies against the configured trust bundle.
It then renews at a random point between 50 % and 80 % of the certificate's lifetime (jitter
spreads a fleet's renewals), without restart; subscribers are told of every new bundle. A failed
renewal keeps the current bundle and retries with capped exponential backoff.

How it proves who it is (see :mod:`meshlib.security.ca_service`):

- ``token_file=``: a per-identity bootstrap token (re-read on every request, so it can rotate);
- otherwise its **current certificate** over mTLS — from ``bootstrap=`` (a pre-issued SVID, e.g. a
  :class:`~meshlib.security.file_source.FileCertificateSource`) for the first request, then its own;
- ``local_socket=``: local trust — the CA's Unix socket identifies it by its uid
  (:mod:`meshlib.security.ca_local`).

Example::

    source = CaClientCertificateSource(
        "127.0.0.1:15012", ca_trust_pem=Path("root-cert.pem").read_bytes(),
        token_file="/var/run/secrets/meshlib/token",
        spiffe_id=SpiffeId.for_workload("default", "reviews"),
    )
    async with source:
        ssl_ctx = build_context(source.current())
        source.subscribe(lambda bundle: rebuild(bundle))

Time and randomness are injected (``clock``, ``sleep``, ``rng``) so rotation is testable without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from meshlib.security.bundle import CertBundle, CertificateSource, load_pem_certificates
from meshlib.security.ca import DEFAULT_SVID_TTL, Clock, certs_pem, make_csr, new_private_key, private_key_pem, utc_now
from meshlib.security.ca_proto import METHOD_PATH, IstioCertificateRequest, IstioCertificateResponse
from meshlib.security.errors import IdentityMismatch, IssuanceRefused, SecurityError
from meshlib.security.rotation import refresh_time, retry_delay_s
from meshlib.security.source_lifecycle import BackgroundCertificateSource
from meshlib.security.spiffe import SpiffeId
from meshlib.security.verify import verify_svid

_log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 64 * 1024


class CaClientCertificateSource(BackgroundCertificateSource):
    """See the module docstring."""

    def __init__(
        self,
        target: str = "",
        *,
        ca_trust_pem: bytes,
        local_socket: str | os.PathLike[str] | None = None,
        token_file: str | os.PathLike[str] | None = None,
        bootstrap: CertificateSource | None = None,
        spiffe_id: SpiffeId | None = None,
        dns_names: Sequence[str] = (),
        ttl: timedelta = DEFAULT_SVID_TTL,
        server_name: str | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        request_timeout_s: float = 10.0,
    ) -> None:
        if local_socket is None and (not target or (token_file is None and bootstrap is None)):
            raise ValueError(
                "CaClientCertificateSource needs target= with token_file= or bootstrap= (to prove its identity), "
                "or local_socket= (local trust by uid)"
            )
        load_pem_certificates(ca_trust_pem, "CA trust bundle")
        super().__init__()
        self.local_socket = os.fspath(local_socket) if local_socket is not None else None
        self.target = target or f"unix:{self.local_socket}"
        self.ca_trust_pem = ca_trust_pem
        self.token_file = Path(token_file) if token_file is not None else None
        self.bootstrap = bootstrap
        self.spiffe_id = spiffe_id
        self.dns_names = tuple(dns_names)
        self.ttl = ttl
        self.server_name = server_name
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._timeout_s = request_timeout_s
        self.refresh_at: datetime | None = None
        self.rotations = 0
        self.last_error: str | None = None

    # --- CertificateSource -------------------------------------------------------------------------------

    def _missing_certificate(self) -> str:
        detail = f": {self.last_error}" if self.last_error else " (call start() first)"
        return f"no certificate from the CA at {self.target} yet{detail}"

    async def start(self) -> None:
        """Fetch the first certificate (errors propagate) and start the rotation task."""
        if self.bootstrap is not None:
            await self.bootstrap.start()
        await self.rotate_now()
        self._start_task(self._rotate_forever, "meshlib-svid-rotation")

    async def stop(self) -> None:
        """Cancel rotation, then stop the bootstrap source."""
        await super().stop()
        if self.bootstrap is not None:
            await self.bootstrap.stop()

    # --- fetching ----------------------------------------------------------------------------------------

    async def rotate_now(self) -> CertBundle:
        """Request a new certificate now; install and announce it. Raises :class:`SecurityError` on failure."""
        try:
            bundle = await self._fetch()
        except SecurityError as exc:
            self.last_error = str(exc)
            raise
        self._bundle = bundle
        self.last_error = None
        self.rotations += 1
        self.refresh_at = refresh_time(bundle, self._rng)
        _log.info(
            "certificate for %s valid until %s; renewing at %s", bundle.spiffe_id, bundle.not_after, self.refresh_at
        )
        self._subscribers.notify(bundle)
        return bundle

    async def _fetch(self) -> CertBundle:
        key = new_private_key()
        request = IstioCertificateRequest(
            csr=make_csr(self.spiffe_id, key, self.dns_names).decode(),
            validity_duration=int(self.ttl.total_seconds()),
        )
        if self.local_socket is not None:
            from meshlib.security.ca_local import request_over_unix_socket

            chain_text = await request_over_unix_socket(self.local_socket, request.csr, request.validity_duration)
        else:
            chain_text = list((await self._call_grpc(request)).cert_chain)
        chain_pem = [pem.encode() for pem in chain_text]
        if not chain_pem:
            raise IssuanceRefused(f"CA at {self.target} returned an empty certificate chain")
        certs = [load_pem_certificates(pem, "issued certificate")[0] for pem in chain_pem]
        without_root = certs[:-1] if len(certs) > 1 else certs
        spiffe_id = verify_svid(without_root, self.ca_trust_pem, now=self._clock())
        if self.spiffe_id is not None and spiffe_id != self.spiffe_id:
            raise IdentityMismatch(f"CA issued {spiffe_id}, expected {self.spiffe_id}")
        return CertBundle(
            cert_chain_pem=certs_pem(without_root),
            private_key_pem=private_key_pem(key),
            trust_bundle_pem=self.ca_trust_pem,
            spiffe_id=spiffe_id,
            not_after=certs[0].not_valid_after_utc,
        )

    async def _call_grpc(self, request: Any) -> Any:
        metadata: list[tuple[str, str]] = []
        credentials = self._channel_credentials(metadata)
        options: list[tuple[str, Any]] = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        async with grpc.aio.secure_channel(self.target, credentials, options=options) as channel:
            call = channel.unary_unary(
                METHOD_PATH,
                request_serializer=IstioCertificateRequest.SerializeToString,
                response_deserializer=IstioCertificateResponse.FromString,
            )
            try:
                return await call(request, metadata=metadata, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise IssuanceRefused(f"CA at {self.target}: {exc.code().name}: {exc.details()}") from None

    def _channel_credentials(self, metadata: list[tuple[str, str]]) -> grpc.ChannelCredentials:
        if self.token_file is not None:
            metadata.append(("authorization", f"Bearer {self._read_token()}"))
            return grpc.ssl_channel_credentials(root_certificates=self.ca_trust_pem)
        identity = self._bundle
        if identity is None or identity.not_after <= self._clock():
            assert self.bootstrap is not None  # checked in __init__
            identity = self.bootstrap.current()
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_trust_pem,
            private_key=identity.private_key_pem,
            certificate_chain=identity.cert_chain_pem,
        )

    def _read_token(self) -> str:
        assert self.token_file is not None
        try:
            with self.token_file.open("rb") as handle:
                data = handle.read(MAX_TOKEN_BYTES + 1)
        except OSError as exc:
            raise IssuanceRefused(f"cannot read bootstrap token {self.token_file}: {exc.strerror}") from None
        token = data.decode("utf-8", "replace").strip()
        if not token or len(data) > MAX_TOKEN_BYTES:
            raise IssuanceRefused(f"bootstrap token file {self.token_file} is empty or too large")
        return token

    async def _rotate_forever(self) -> None:
        failures = 0
        while True:
            due = self.refresh_at or self._clock()
            await self._sleep(max(0.0, (due - self._clock()).total_seconds()))
            try:
                await self.rotate_now()
                failures = 0
            except SecurityError as exc:
                failures += 1
                delay = retry_delay_s(failures, self._rng)
                _log.warning("certificate renewal failed (%s); retrying in %.1fs, current one stays", exc, delay)
                self.refresh_at = self._clock() + timedelta(seconds=delay)
            except Exception:
                failures += 1
                _log.exception("certificate renewal failed unexpectedly")
                self.refresh_at = self._clock() + timedelta(seconds=retry_delay_s(failures, self._rng))
