"""What a failed gRPC TLS connection was, from grpcio's error text (it exposes nothing else).

grpcio reports handshake failures only inside the ``UNAVAILABLE`` details,
e.g. ``… Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: …
CERTIFICATE_VERIFY_FAILED …`` or ``… Custom verification check failed with
error: UNAUTHENTICATED: Hostname Verification Check failed.``.
:func:`count_grpc_tls_failure` counts them as Envoy names its cluster TLS stats
and returns the reason for the local reply (Envoy's
``upstream_transport_failure_reason``). Kept free of grpc imports.
"""

from __future__ import annotations

_HANDSHAKE_MARKERS = ("tls handshake failed", "ssl handshake failed", "handshake failed")
_VERIFY_MARKER = "verification check failed"
MAX_REASON = 300


def count_grpc_tls_failure(details: str, counters: dict[str, int]) -> str | None:
    """Count a TLS failure found in ``details`` (``ssl.fail_verify_san`` / ``ssl.connection_error``); its reason."""
    lowered = details.lower()
    at = lowered.find(_VERIFY_MARKER)
    if at >= 0:
        counters["ssl.fail_verify_san"] = counters.get("ssl.fail_verify_san", 0) + 1
        return "TLS_error: " + details[at:][:MAX_REASON]
    for marker in _HANDSHAKE_MARKERS:
        at = lowered.find(marker)
        if at >= 0:
            counters["ssl.connection_error"] = counters.get("ssl.connection_error", 0) + 1
            return "TLS_error: " + details[at:][:MAX_REASON]
    return None
