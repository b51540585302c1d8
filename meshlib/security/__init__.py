"""Workload identity and transport security.

- :mod:`meshlib.security.spiffe` — :class:`SpiffeId` (``spiffe://td/ns/NS/sa/SA``), parsed and validated.
- :mod:`meshlib.security.bundle` — :class:`CertBundle` (a workload's credentials) and the
  :class:`CertificateSource` protocol (current bundle + rotation notifications).
- :mod:`meshlib.security.ca` — :class:`MeshCA`: root / intermediate CAs, X.509-SVIDs from a CSR or key.
- :mod:`meshlib.security.verify` — :func:`verify_svid`: chain + SPIFFE leaf checks, clear errors.
- certificate sources: :class:`FileCertificateSource` (watched files), :class:`LocalCaCertificateSource`
  (an in-process CA); with the ``grpc`` extra ``meshlib.security.ca_client.CaClientCertificateSource``
  (the control plane's CA) and ``meshlib.security.workload_api.WorkloadApiCertificateSource``;
  their shared start/stop/subscribe lifecycle is :mod:`meshlib.security.source_lifecycle`.

Example::

    from meshlib.security import MeshCA, SpiffeId, verify_svid

    ca = MeshCA.create_root("cluster.local")
    bundle = ca.issue_bundle(SpiffeId.for_workload("default", "reviews"))
    verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, expected=bundle.spiffe_id)
"""

from meshlib.security.bundle import CertBundle, CertificateSource, StaticCertificateSource
from meshlib.security.ca import MeshCA
from meshlib.security.errors import (
    CertificateExpired,
    CertificateInvalid,
    IdentityMismatch,
    InvalidSpiffeId,
    IssuanceRefused,
    NoCertificateYet,
    SecurityError,
)
from meshlib.security.file_source import FileCertificateSource
from meshlib.security.local_source import LocalCaCertificateSource
from meshlib.security.spiffe import SpiffeId
from meshlib.security.verify import verify_svid

__all__ = [
    "CertBundle",
    "CertificateExpired",
    "CertificateInvalid",
    "CertificateSource",
    "FileCertificateSource",
    "IdentityMismatch",
    "InvalidSpiffeId",
    "IssuanceRefused",
    "LocalCaCertificateSource",
    "MeshCA",
    "NoCertificateYet",
    "SecurityError",
    "SpiffeId",
    "StaticCertificateSource",
    "verify_svid",
]
