"""Secure mode of the control plane: xDS over mTLS, node ids bound to identities, the CA service.

``ControlPlane(..., security=ControlPlaneSecurity(...))`` changes three things:

- the ADS port is TLS and **requires a client certificate** the client CA verifies
  (a client without one fails the handshake and gets nothing);
- on the first request of each stream the caller's SPIFFE ID (from the verified certificate)
  must be allowed to claim the announced node id (:class:`~meshlib.security.node_identity.NodeIdRule`);
  otherwise the stream ends with ``PERMISSION_DENIED`` before any resource is sent, the refusal
  is logged and listed under ``security.denied`` in ``/status``;
- with a CA (``from_ca``), ``istio.v1.auth.IstioCertificateService`` is served on the same
  mTLS port (renewal with the current certificate) and, when ``ca_port`` is given, on a second
  **TLS-only** port for bootstrap-token clients that have no certificate yet. ADS on that
  second port refuses every stream (no client certificate ⇒ no identity).

Examples::

    security = ControlPlaneSecurity.from_files("cp.pem", "cp-key.pem", client_ca="root-cert.pem")
    security = ControlPlaneSecurity.from_ca(MeshCA.load("ca/"), hosts=["127.0.0.1"],
                                            tokens=BootstrapTokens.from_file("tokens"), ca_port=15012)
    async with ControlPlane(source, port=15010, security=security) as plane: ...
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from meshlib.security.bundle import CertificateSource, load_pem_certificates
from meshlib.security.ca import MeshCA
from meshlib.security.ca_service import BootstrapTokens, CertificateAuthorityService
from meshlib.security.file_source import FileCertificateSource
from meshlib.security.grpc_credentials import peer_identity, rotating_server_credentials
from meshlib.security.local_source import LocalCaCertificateSource
from meshlib.security.node_identity import NodeIdRule
from meshlib.security.spiffe import SpiffeId

_log = logging.getLogger(__name__)

CONTROL_PLANE_IDENTITY = ("istio-system", "meshlib-control-plane")
MAX_DENIALS_SHOWN = 50


class ControlPlaneSecurity:
    """See the module docstring."""

    def __init__(
        self,
        certificates: CertificateSource,
        *,
        client_ca_pem: bytes,
        node_rule: NodeIdRule,
        ca_service: CertificateAuthorityService | None = None,
        ca_port: int | None = None,
    ) -> None:
        load_pem_certificates(client_ca_pem, "client CA")
        self.certificates = certificates
        self.client_ca_pem = client_ca_pem
        self.node_rule = node_rule
        self.ca_service = ca_service
        self._requested_ca_port = ca_port
        self.ca_port: int | None = None
        self._unsubscribers: list[Callable[[], None]] = []
        self.denied_total = 0
        self.denials: deque[dict[str, Any]] = deque(maxlen=MAX_DENIALS_SHOWN)

    # --- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        cert_file: str | Path,
        key_file: str | Path,
        *,
        client_ca: str | Path,
        trust_domain: str | None = None,
        node_rule: NodeIdRule | None = None,
    ) -> ControlPlaneSecurity:
        """Serving certificate and key from files (watched, reloaded on change); clients verified by ``client_ca``."""
        ca_pem = Path(client_ca).read_bytes()
        source = FileCertificateSource(cert_file, key_file, client_ca)
        rule = node_rule or NodeIdRule(trust_domain or _trust_domain_of(source))
        return cls(source, client_ca_pem=ca_pem, node_rule=rule)

    @classmethod
    def from_ca(
        cls,
        ca: MeshCA,
        *,
        hosts: Sequence[str] = ("127.0.0.1", "localhost"),
        tokens: BootstrapTokens | None = None,
        ca_port: int | None = None,
        node_rule: NodeIdRule | None = None,
        accept_certificates: bool = True,
    ) -> ControlPlaneSecurity:
        """Self-issue the serving certificate from ``ca`` (renewed before expiry) and serve the CA API."""
        ips, names = [], []
        for host in hosts:
            try:
                address = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                names.append(host)
                continue
            if not address.is_unspecified:  # 0.0.0.0 / :: is where it listens, never what a client dials
                ips.append(str(address))
        source = LocalCaCertificateSource(
            ca, SpiffeId.for_workload(*CONTROL_PLANE_IDENTITY, ca.trust_domain), dns_names=names, ip_addresses=ips
        )
        service = CertificateAuthorityService(ca, tokens=tokens, accept_certificates=accept_certificates)
        return cls(
            source,
            client_ca_pem=ca.trust_bundle_pem,
            node_rule=node_rule or NodeIdRule(ca.trust_domain),
            ca_service=service,
            ca_port=ca_port,
        )

    # --- lifecycle (called by ControlPlane) --------------------------------------------------------------

    async def start(self) -> None:
        """Load / issue the serving certificate."""
        await self.certificates.start()

    async def stop(self) -> None:
        while self._unsubscribers:
            self._unsubscribers.pop()()
        await self.certificates.stop()

    def bind(self, server: grpc.aio.Server, host: str, port: int) -> int:
        """Add the mTLS port (and the TLS-only CA port) to ``server``; register the CA; return the ADS port."""
        mtls = rotating_server_credentials(
            self.certificates,
            require_client_auth=True,
            client_ca_pem=self.client_ca_pem,
            unsubscribers=self._unsubscribers,
        )
        bound: int = server.add_secure_port(f"{host}:{port}", mtls)
        if self.ca_service is not None:
            self.ca_service.add_to_server(server)
            if self._requested_ca_port is not None:
                tls_only = rotating_server_credentials(
                    self.certificates, require_client_auth=False, unsubscribers=self._unsubscribers
                )
                self.ca_port = server.add_secure_port(f"{host}:{self._requested_ca_port}", tls_only)
        return bound

    # --- per stream --------------------------------------------------------------------------------------

    def authorize(self, context: grpc.aio.ServicerContext, node_id: str) -> str | None:
        """None if the stream's peer may claim ``node_id``; else the reason (logged and recorded)."""
        identity = peer_identity(context.auth_context())
        reason = self.node_rule.check(identity, node_id)
        if reason is not None:
            self.denied_total += 1
            peer = context.peer()
            self.denials.append(
                {
                    "time": time.time(),
                    "peer": peer,
                    "node_id": node_id[:200],
                    "identity": str(identity) if identity else None,
                    "reason": reason,
                }
            )
            _log.warning("xDS stream from %s refused: %s", peer, reason)
        return reason

    def status(self) -> dict[str, Any]:
        """JSON-ready: mode, trust domain, refusals (and the CA's counters)."""
        out: dict[str, Any] = {
            "security": {
                "mode": "mtls",
                "trust_domain": self.node_rule.trust_domain,
                "denied_total": self.denied_total,
                "denied": list(self.denials),
                "ca_port": self.ca_port,
            }
        }
        if self.ca_service is not None:
            out.update(self.ca_service.status())
        return out


def _trust_domain_of(source: FileCertificateSource) -> str:
    source.check()
    return source.current().spiffe_id.trust_domain
