"""The request stack after routing: one function, each step in the order Envoy runs it.

The adapter (aiohttp, gRPC) supplies three small callables — ``send`` one
attempt to an endpoint, ``classify`` a response into an :class:`Outcome`,
``classify_error`` an exception — and gets back either its own response or a
:class:`LocalReply` to render. The order below is the design; each step says
why it sits where it does:

1. **deadline** — the caller's inbound deadline caps the route timeout; an
   already-passed deadline fails here, before any work or any byte is sent.
2. **fault** — Envoy's fault filter runs before the router, so an injected
   delay is not counted in the route timeout and an injected abort is never
   retried and never reaches a server.
3. **local rate limit** — after faults (a fault test still sees its fault),
   before admission (a limited request must not hold a circuit-breaker slot).
4. **admission** (``max_requests``) — overflow is answered at once with 503
   ``x-envoy-overloaded`` and never retried: retrying into a saturated
   cluster is the load the breaker exists to shed.
5. **route timeout** around the whole attempt loop — it covers every attempt
   and every backoff; on expiry 504, no retry.
6. **attempt loop** — pick a host (previous hosts avoided), per-try timeout
   *inside* the retry loop so that a timed-out attempt can be retried;
   classify; feed outlier detection and the load metrics; then the retry
   policy decides "retry after d, or stop", subject to the retry circuit
   breaker and the retry budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from meshlib.balancing import PickContext, observe_rtt
from meshlib.config.model import Endpoint, LbKind
from meshlib.decision import Decision
from meshlib.host_stats import HostStatsTable
from meshlib.resilience.cluster_runtime import ClusterRuntime
from meshlib.resilience.deadline import DeadlineExceeded, current_deadline, remaining_timeout
from meshlib.resilience.fault import decide_fault
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.resilience.ratelimit import TokenBucket
from meshlib.resilience.retry import RetryClassifier, RetryState

R = TypeVar("R")

OVERLOADED_HEADERS = (("x-envoy-overloaded", "true"),)


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response the mesh gives itself. ``flag`` uses Envoy's response-flag vocabulary."""

    status: int
    body: str
    flag: str
    headers: tuple[tuple[str, str], ...] = ()
    grpc_status: int | None = None  # for gRPC adapters: the status to fail the call with


@dataclass(slots=True)
class UpstreamCall(Generic[R]):
    """Everything one routed request needs; built by the adapter per request."""

    decision: Decision
    runtime: ClusterRuntime
    stats: HostStatsTable
    rng: object  # random.Random (kept loose to avoid importing random on the hot path type check)
    clock: Callable[[], float]
    send: Callable[[Endpoint, int, float | None], Awaitable[R]]  # (endpoint, attempt number, timeout hint)
    classify: Callable[[R], Outcome]
    classify_error: Callable[[BaseException], Outcome | None]  # None: not ours, re-raise
    discard: Callable[[R], None]  # release a response that a retry replaces
    idempotent: bool = True
    body_replayable: Callable[[], bool] = lambda: True
    hash_key: int | None = None
    route_bucket: TokenBucket | None = None


async def run_upstream_call(call: UpstreamCall[R]) -> R | LocalReply:
    decision = call.decision
    route = decision.route
    assert route is not None
    runtime = call.runtime
    counters = runtime.counters
    now = call.clock()
    counters["upstream_rq_total"] += 1

    try:
        timeout = remaining_timeout(route.timeout_s, current_deadline(), now)
    except DeadlineExceeded:
        counters["upstream_rq_timeout"] += 1
        return LocalReply(504, "deadline exceeded before the request was sent", "UT", grpc_status=4)

    if route.fault is not None:
        fault = decide_fault(route.fault, call.rng)  # type: ignore[arg-type]
        if fault.delay_s is not None:
            counters["fault_delays_injected"] += 1
            await asyncio.sleep(fault.delay_s)
        if fault.abort is not None:
            counters["fault_aborts_injected"] += 1
            status = fault.abort.http_status or 200
            return LocalReply(status, "fault filter abort", "FI", grpc_status=fault.abort.grpc_status)

    if (call.route_bucket is not None and not call.route_bucket.try_consume(now)) or (
        runtime.bucket is not None and not runtime.bucket.try_consume(now)
    ):
        counters["ratelimit_rate_limited"] += 1
        return LocalReply(429, "local_rate_limited", "RL", grpc_status=14)

    limits = runtime.limits
    if not limits.try_acquire_request():
        return LocalReply(503, "upstream overflow", "UO", OVERLOADED_HEADERS, grpc_status=14)
    runtime.budget.deposit(now)
    try:
        if timeout is None:
            return await _attempts(call, None)
        try:
            async with asyncio.timeout(timeout):
                return await _attempts(call, now + timeout)
        except TimeoutError:
            counters["upstream_rq_timeout"] += 1
            return LocalReply(504, "upstream request timeout", "UT", grpc_status=4)
    finally:
        limits.release_request()


async def _attempts(call: UpstreamCall[R], deadline: float | None) -> R | LocalReply:
    decision = call.decision
    route = decision.route
    cluster = decision.cluster
    balancer = decision.balancer
    assert route is not None and cluster is not None and balancer is not None
    runtime = call.runtime
    counters = runtime.counters
    stats = call.stats
    clock = call.clock
    rng = call.rng
    policy = route.retry
    retry = RetryState(RetryClassifier.for_policy(policy)) if policy is not None and policy.num_retries > 0 else None
    per_try = policy.per_try_timeout_s if policy is not None else None
    avoid_previous = policy is not None and policy.previous_hosts
    peak_ewma = cluster.policy.lb.kind is LbKind.PEAK_EWMA
    outlier = runtime.outlier
    tried: list[str] = []
    holding_retry = False
    attempt = 1
    while True:
        now = clock()
        endpoint = balancer.pick(PickContext(rng, now, stats, call.hash_key, attempt - 1, tried))  # type: ignore[arg-type]
        if endpoint is None:
            if holding_retry:
                runtime.limits.release_retry()
            counters["upstream_cx_none_healthy"] += 1
            return LocalReply(503, "no healthy upstream", "UH", grpc_status=14)
        hint = per_try
        if deadline is not None:
            remaining = deadline - now
            hint = remaining if hint is None else min(hint, remaining)
        host = stats.get(endpoint.key, now)
        host.active_requests += 1
        response: R | None = None
        try:
            if per_try is None:
                response = await call.send(endpoint, attempt, hint)
            else:
                async with asyncio.timeout(per_try):
                    response = await call.send(endpoint, attempt, hint)
            outcome = call.classify(response)
        except TimeoutError:
            counters["upstream_rq_per_try_timeout"] += 1
            outcome = _PER_TRY_TIMEOUT
        except Exception as exc:
            classified = call.classify_error(exc)
            if classified is None:
                raise
            outcome = classified
        finally:
            host.active_requests -= 1
            if holding_retry:
                runtime.limits.release_retry()  # Envoy holds the retry slot until the retried attempt ends
                holding_retry = False
        done = clock()
        if peak_ewma:
            observe_rtt(host, done - now, done, cluster.policy.lb.peak_ewma_decay_s)
        if outlier is not None:
            outlier.record(endpoint.key, outcome, done)

        if retry is None:
            return _finish(runtime, response, outcome)
        wanted = retry.classifier.should_retry(
            outcome, idempotent=call.idempotent, body_replayable=call.body_replayable()
        )
        if not wanted:
            return _finish(runtime, response, outcome)
        if retry.exhausted:
            counters["upstream_rq_retry_limit_exceeded"] += 1
            return _finish(runtime, response, outcome)
        if not runtime.limits.try_acquire_retry():
            return _finish(runtime, response, outcome)  # retry overflow: return the last response
        if not runtime.budget.try_withdraw(done):
            runtime.limits.release_retry()
            counters["upstream_rq_retry_budget_exhausted"] += 1
            return _finish(runtime, response, outcome)
        holding_retry = True
        counters["upstream_rq_retry"] += 1
        if response is not None:
            call.discard(response)
        if avoid_previous:
            tried.append(endpoint.key)
        delay = retry.next_backoff(rng)  # type: ignore[arg-type]
        attempt = retry.attempts
        try:
            await asyncio.sleep(delay)
        except BaseException:
            runtime.limits.release_retry()
            raise


_PER_TRY_TIMEOUT = Outcome(OutcomeKind.PER_TRY_TIMEOUT)

_LOCAL_ERRORS = {
    OutcomeKind.CONNECT_FAILURE: (503, "upstream connect error or disconnect/reset before headers. "
                                  "reset reason: connection failure", "UF"),
    OutcomeKind.RESET: (503, "upstream connect error or disconnect/reset before headers. "
                        "reset reason: connection termination", "UC"),
    OutcomeKind.RESET_BEFORE_REQUEST: (503, "upstream reset before the request was sent", "UF"),
    OutcomeKind.REFUSED_STREAM: (503, "upstream refused the stream", "UR"),
    OutcomeKind.PER_TRY_TIMEOUT: (504, "upstream request timeout", "UT"),
    OutcomeKind.OVERFLOW: (503, "upstream overflow", "UO"),
}


def _finish(runtime: ClusterRuntime, response: R | None, outcome: Outcome) -> R | LocalReply:
    counters = runtime.counters
    counters["upstream_rq_completed"] += 1
    if response is not None:
        runtime.count_status(outcome.http_status)
        return response
    if outcome.kind is OutcomeKind.CONNECT_FAILURE:
        counters["upstream_cx_connect_fail"] += 1
    elif outcome.kind is OutcomeKind.RESET:
        counters["upstream_rq_rx_reset"] += 1
    status, body, flag = _LOCAL_ERRORS.get(outcome.kind, (503, "upstream error", "UF"))
    runtime.count_status(status)
    return LocalReply(status, body, flag, grpc_status=14 if status == 503 else 4)
