"""VirtualService rule policies: ``retries`` (istiod's retry.ConvertPolicy) and ``fault``."""

from __future__ import annotations

from meshlib.config.fields import Fields
from meshlib.config.istio_checks import RETRY_STATUS_CODES
from meshlib.config.model import ISTIO_DEFAULT_RETRY, FaultPolicy, RetryPolicy

RETRY_FIELDS = frozenset(
    {"attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities", "retryIgnorePreviousHosts", "backoff"}
)
# Envoy's router and gRPC retry conditions (x-envoy-retry-on / x-envoy-retry-grpc-on).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
MS = 0.001


def retries(rule: Fields) -> tuple[RetryPolicy | None, bool | None]:
    """Istio ``ConvertPolicy``; returns (policy, retryIgnorePreviousHosts when set)."""
    fields = rule.mapping("retries", RETRY_FIELDS)
    if fields is None:
        return ISTIO_DEFAULT_RETRY, None
    attempts = fields.integer("attempts", 0, None)
    per_try = fields.duration("perTryTimeout", minimum_s=MS)
    retry_on_text = fields.string("retryOn")
    remote = fields.boolean("retryRemoteLocalities")
    ignore_previous = fields.boolean("retryIgnorePreviousHosts")
    backoff = fields.duration("backoff", minimum_s=MS)
    retry_on = ISTIO_DEFAULT_RETRY.retry_on
    codes: list[int] = []
    if retry_on_text:
        tokens: list[str] = []
        for raw in retry_on_text.split(","):
            token = raw.strip()
            if not token:
                continue
            if token.isdigit():
                code = int(token)
                if code not in RETRY_STATUS_CODES:  # Istio: a status code Go's http.StatusText knows
                    fields.error("retryOn", f'"{token}" is not a valid retryOn policy')
                codes.append(code)
            elif token not in RETRY_ON:
                fields.error("retryOn", f'unknown retry condition "{token}"')
            else:
                tokens.append(token)
        if codes and "retriable-status-codes" not in tokens:
            tokens.append("retriable-status-codes")
        retry_on = tuple(tokens)
    if attempts == 0 and any(fields.has(k) for k in ("perTryTimeout", "retryOn", "retryRemoteLocalities")):
        fields.error(None, "http retry policy configured when attempts are set to 0 (disabled)")
    if not attempts:  # attempts 0 (or unset) explicitly disables retries in Istio
        return None, ignore_previous
    base = ISTIO_DEFAULT_RETRY.backoff_base_s if backoff is None else backoff
    return (
        RetryPolicy(
            num_retries=attempts,
            retry_on=retry_on,
            per_try_timeout_s=per_try,
            retriable_status_codes=tuple(codes),
            retry_remote_localities=bool(remote),
            backoff_base_s=base,
            # Envoy: max_interval defaults to 10x base_interval.
            backoff_max_s=ISTIO_DEFAULT_RETRY.backoff_max_s if backoff is None else 10 * base,
            previous_hosts=True if ignore_previous is None else ignore_previous,
        ),
        ignore_previous,
    )


def fault(rule: Fields) -> FaultPolicy | None:
    """``fault: {delay, abort}``; an unset percentage means the fault never fires."""
    fields = rule.mapping("fault", ("delay", "abort"))
    if fields is None:
        return None
    delay_s = None
    delay_percent = 0.0
    delay = fields.mapping("delay", ("fixedDelay", "exponentialDelay", "percentage", "percent"))
    if delay is not None:
        if delay.has("exponentialDelay"):
            delay.error("exponentialDelay", "exponentialDelay is not supported (use fixedDelay)")
        delay_s = delay.duration("fixedDelay", minimum_s=MS)
        if not delay.has("fixedDelay") and not delay.has("exponentialDelay"):
            delay.require("fixedDelay")
        delay_percent = _fault_percent(delay)
    abort_http = abort_grpc = None
    abort_percent = 0.0
    abort = fields.mapping("abort", ("httpStatus", "grpcStatus", "http2Error", "percentage"))
    if abort is not None:
        kinds = [k for k in ("httpStatus", "grpcStatus", "http2Error") if abort.has(k)]
        if len(kinds) != 1:
            abort.error(None, "must set exactly one of httpStatus, grpcStatus, http2Error")
        abort_http = abort.integer("httpStatus", 200, 599)
        abort_grpc = _grpc_status(abort)
        if abort.string("http2Error") is not None:
            abort.error("http2Error", "http2Error aborts are not supported")
        abort_percent = _fault_percent(abort)
    if delay is None and abort is None:
        fields.error(None, "must set delay or abort")
    return FaultPolicy(delay_s, delay_percent, abort_http, abort_grpc, abort_percent)


def _fault_percent(fields: Fields) -> float:
    if fields.has("percentage") and fields.has("percent"):
        fields.error("percent", "percent and percentage cannot both be set")
    value = fields.percent("percentage")
    if value is not None and 0 < value < 0.0001:
        fields.error("percentage", f"percentage {value:g} is neither 0.0, nor in range [0.0001, 100.0]")
        value = None
    if value is None and "percent" in (fields.node.mapping if fields.ok else {}):
        fields.warn("percent", 'using deprecated setting "percent", use "percentage" instead')
        legacy = fields.integer("percent", 0, 100)
        value = float(legacy) if legacy is not None else None
    return value or 0.0


def _grpc_status(abort: Fields) -> int | None:
    node = abort.get("grpcStatus")
    if node is None:
        return None
    value = node.scalar
    if isinstance(value, str) and value.upper() in GRPC_CODES:
        return GRPC_CODES[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 16:
        return value
    abort.error("grpcStatus", f'unknown gRPC status "{value}"')
    return None
