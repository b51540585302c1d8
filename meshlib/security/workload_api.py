"""The SPIFFE Workload API (a SPIRE agent's gRPC socket) as a certificate source: **not supported**.

Fetching X.509-SVIDs from ``SPIFFE_ENDPOINT_SOCKET`` needs the Workload API protos and a
streaming client; meshlib does not ship one. Use SPIRE's ``spiffe-helper`` (or any agent) to
write the SVID to files and point :class:`~meshlib.security.file_source.FileCertificateSource`
at them — rotations are picked up the same way. Constructing this class raises at once with
that advice, so a configuration asking for it never runs without credentials.
"""

from __future__ import annotations

from meshlib.security.errors import SecurityError

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"


class WorkloadApiNotSupported(SecurityError):
    """Raised when the SPIFFE Workload API is asked for."""


class WorkloadApiCertificateSource:
    """Placeholder that explains the alternative; see the module docstring."""

    def __init__(self, socket_path: str | None = None) -> None:
        where = socket_path or f"${ENDPOINT_ENV}"
        raise WorkloadApiNotSupported(
            f"the SPIFFE Workload API ({where}) is not supported by meshlib; have spiffe-helper (or your agent) "
            "write cert/key/bundle files and use FileCertificateSource, which reloads them on rotation"
        )
