"""How one attempt ended, in transport-neutral terms.

Adapters map what their transport reports (an HTTP status, a gRPC status, a
connection refused, a reset, a per-try timeout) to one :class:`Outcome`;
retry, outlier detection, budgets and metrics read only this. Keeping the
classification apart from the retrying (Finagle's ResponseClassifier) lets
aiohttp and gRPC share every policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class OutcomeKind(Enum):
    RESPONSE = "response"  # response headers arrived: see http_status / grpc_status
    CONNECT_FAILURE = "connect_failure"  # could not connect (refused, unreachable, connect timeout)
    RESET_BEFORE_REQUEST = "reset_before_request"  # connection reset before any byte of the request was sent
    RESET = "reset"  # connection reset / closed after the request was (partly) sent, before headers
    REFUSED_STREAM = "refused_stream"  # HTTP/2 REFUSED_STREAM: the server never processed it
    PROTOCOL_ERROR = "protocol_error"  # the upstream answered bytes that are not HTTP (Envoy UPE); retried as a reset
    PER_TRY_TIMEOUT = "per_try_timeout"  # no response headers within the per-try timeout
    OVERFLOW = "overflow"  # a circuit breaker refused the attempt locally (never retried)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    http_status: int = 0  # 0 when no response
    grpc_status: int | None = None  # from grpc-status when the call is gRPC

    @property
    def is_response(self) -> bool:
        return self.kind is OutcomeKind.RESPONSE

    def outlier_status(self) -> int:
        """The HTTP status outlier detection counts: local errors map as Envoy maps them.

        Connect failures and resets count as 503, timeouts as 504; a gRPC
        response is judged by the HTTP status its grpc-status maps to.
        """
        if self.kind is OutcomeKind.RESPONSE:
            if self.grpc_status is not None and self.grpc_status != 0:
                return GRPC_TO_HTTP.get(self.grpc_status, 500)
            return self.http_status
        if self.kind is OutcomeKind.PER_TRY_TIMEOUT:
            return 504
        return 503


# One Outcome per HTTP status a response can carry: classifying a response allocates nothing.
RESPONSE_OUTCOMES: dict[int, Outcome] = {status: Outcome(OutcomeKind.RESPONSE, status) for status in range(100, 600)}


def response_outcome(status: int) -> Outcome:
    """The outcome of an attempt answered with HTTP ``status`` (no gRPC status)."""
    return RESPONSE_OUTCOMES.get(status) or Outcome(OutcomeKind.RESPONSE, status)


# gRPC status → HTTP status, as Envoy's Grpc::Utility::grpcToHttpStatus maps them.
GRPC_TO_HTTP: dict[int, int] = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}
