"""The request stack after routing: one coroutine, each step in the order Envoy runs it.

The adapter (aiohttp, gRPC) builds one :class:`UpstreamRunner` per mesh with
three small callables — ``classify`` a response into an :class:`Outcome`,
``classify_error`` an exception, ``discard`` a response a retry replaces —
and per request calls :meth:`UpstreamRunner.run` with a ``send`` for one
attempt. It gets back its own response or a :class:`LocalReply` to render.
The order is the design; each step says why it sits where it does:

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
6. **attempt loop** — pick a host (previous hosts avoided); the per-try
   timeout sits *inside* the retry loop so that a timed-out attempt can be
   retried; classify; feed outlier detection and the load metrics; then the
   retry policy decides "retry after d, or stop", subject to the retry circuit
   breaker and the retry budget.

This is the hot path: no per-request objects beyond what a decision needs,
timeouts as single ``loop.call_at`` handles (:class:`TaskTimer`), counters as
plain dict increments.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from meshlib.balancing import PickContext, observe_rtt
from meshlib.config.model import Endpoint, LbKind, RetryPolicy
from meshlib.decision import Decision
from meshlib.host_stats import HostStatsTable
from meshlib.resilience.cluster_runtime import ClusterRuntime
from meshlib.resilience.deadline import DeadlineExceeded, current_deadline, remaining_timeout
from meshlib.resilience.fault import decide_fault
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.resilience.ratelimit import TokenBucket
from meshlib.resilience.retry import RetryClassifier, RetryState
from meshlib.resilience.timer import TaskTimer

R = TypeVar("R")

OVERLOADED_HEADERS = (("x-envoy-overloaded", "true"),)
Send = Callable[[Endpoint, int, "float | None"], Awaitable[R]]  # (endpoint, attempt number, timeout hint)


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response the mesh gives itself. ``flag`` uses Envoy's response-flag vocabulary."""

    status: int
    body: str
    flag: str
    headers: tuple[tuple[str, str], ...] = ()
    grpc_status: int | None = None  # for gRPC adapters: the status to fail the call with


_PER_TRY_TIMEOUT = Outcome(OutcomeKind.PER_TRY_TIMEOUT)
_ROUTE_TIMEOUT = LocalReply(504, "upstream request timeout", "UT", grpc_status=4)
_DEADLINE_PASSED = LocalReply(504, "deadline exceeded before the request was sent", "UT", grpc_status=4)
_RATE_LIMITED = LocalReply(429, "local_rate_limited", "RL", grpc_status=14)
_OVERFLOW = LocalReply(503, "upstream overflow", "UO", OVERLOADED_HEADERS, grpc_status=14)
_NO_HEALTHY = LocalReply(503, "no healthy upstream", "UH", grpc_status=14)
_LOCAL_ERRORS = {
    OutcomeKind.CONNECT_FAILURE: LocalReply(
        503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", "UF",
        grpc_status=14,
    ),
    OutcomeKind.RESET: LocalReply(
        503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        "UC", grpc_status=14,
    ),
    OutcomeKind.RESET_BEFORE_REQUEST: LocalReply(
        503, "upstream reset before the request was sent", "UF", grpc_status=14
    ),
    OutcomeKind.REFUSED_STREAM: LocalReply(503, "upstream refused the stream", "UR", grpc_status=14),
    OutcomeKind.PER_TRY_TIMEOUT: LocalReply(504, "upstream request timeout", "UT", grpc_status=4),
    OutcomeKind.OVERFLOW: _OVERFLOW,
}


class CallReport:
    """What happened to one routed request, filled by the runner when telemetry wants it."""

    __slots__ = ("attempts", "delay_injected", "upstream_host")

    def __init__(self) -> None:
        self.attempts = 0
        self.upstream_host: str | None = None
        self.delay_injected = False


class UpstreamRunner(Generic[R]):
    """Runs routed requests through the resilience stack for one adapter of one mesh."""

    __slots__ = ("_classifiers", "classify", "classify_error", "clock", "discard", "rng", "stats")

    def __init__(
        self,
        *,
        stats: HostStatsTable,
        rng: random.Random,
        clock: Callable[[], float],
        classify: Callable[[R], Outcome],
        classify_error: Callable[[BaseException], Outcome | None],  # None: not ours, re-raise
        discard: Callable[[R], None],
    ) -> None:
        self.stats = stats
        self.rng = rng
        self.clock = clock
        self.classify = classify
        self.classify_error = classify_error
        self.discard = discard
        # Classifiers by policy identity: hashing a frozen policy per request costs
        # more than the whole retry decision. The policy is kept to guard against id reuse.
        self._classifiers: dict[int, tuple[RetryPolicy, RetryClassifier]] = {}

    def _classifier(self, policy: RetryPolicy) -> RetryClassifier:
        entry = self._classifiers.get(id(policy))
        if entry is None or entry[0] is not policy:
            if len(self._classifiers) > 4096:
                self._classifiers.clear()
            entry = self._classifiers[id(policy)] = (policy, RetryClassifier(policy))
        return entry[1]

    async def run(
        self,
        decision: Decision,
        runtime: ClusterRuntime,
        send: Send[R],
        *,
        idempotent: bool = True,
        body_replayable: Callable[[], bool] | None = None,
        hash_key: int | None = None,
        route_bucket: TokenBucket | None = None,
        report: CallReport | None = None,
    ) -> R | LocalReply:
        route = decision.route
        cluster = decision.cluster
        balancer = decision.balancer
        assert route is not None
        assert cluster is not None
        assert balancer is not None
        counters = runtime.counters
        rng = self.rng
        clock = self.clock
        now = clock()
        counters["upstream_rq_total"] += 1

        # 1. deadline
        deadline = current_deadline()
        if deadline is None:
            timeout = route.timeout_s or None
        else:
            try:
                timeout = remaining_timeout(route.timeout_s, deadline, now)
            except DeadlineExceeded:
                counters["upstream_rq_timeout"] += 1
                return _DEADLINE_PASSED
        # 2. fault
        if route.fault is not None:
            fault = decide_fault(route.fault, rng)
            if fault.delay_s is not None:
                counters["fault_delays_injected"] += 1
                if report is not None:
                    report.delay_injected = True
                await asyncio.sleep(fault.delay_s)
            if fault.abort is not None:
                counters["fault_aborts_injected"] += 1
                return LocalReply(fault.abort.http_status or 200, "fault filter abort", "FI",
                                  grpc_status=fault.abort.grpc_status)
        # 3. local rate limit
        if (route_bucket is not None and not route_bucket.try_consume(now)) or (
            runtime.bucket is not None and not runtime.bucket.try_consume(now)
        ):
            counters["ratelimit_rate_limited"] += 1
            return _RATE_LIMITED
        # 4. admission
        limits = runtime.limits
        if not limits.try_acquire_request():
            return _OVERFLOW
        runtime.budget.deposit(now)

        # 5. route timeout around the pending wait, every attempt and every backoff
        loop = asyncio.get_running_loop()
        expires_at = loop.time() + timeout if timeout is not None else None
        route_timer = TaskTimer(loop, expires_at) if expires_at is not None else None
        holding_connection = False
        policy = route.retry
        classifier = self._classifier(policy) if policy is not None and policy.num_retries > 0 else None
        retry: RetryState | None = None  # made on the first retriable outcome: most requests never need it
        per_try = policy.per_try_timeout_s if policy is not None else None
        avoid_previous = policy is not None and policy.previous_hosts
        lb = cluster.policy.lb
        peak_ewma = lb.kind is LbKind.PEAK_EWMA
        outlier = runtime.outlier
        stats = self.stats
        tried: list[str] = []
        holding_retry = False
        attempt = 1
        try:
            # A connection slot (max_connections), or a place in the pending queue
            # (max_pending_requests); a full queue overflows at once, never retried.
            # Fast path first: a free slot needs no await.
            if not limits.try_acquire_connection() and not await runtime.wait_for_connection():
                return _OVERFLOW
            holding_connection = True
            # 6. attempt loop
            while True:
                endpoint = balancer.pick(PickContext(rng, now, stats, hash_key, attempt - 1, tried))
                if endpoint is None:
                    counters["upstream_cx_none_healthy"] += 1
                    return _NO_HEALTHY
                hint = per_try
                if expires_at is not None:
                    remaining = expires_at - loop.time()
                    hint = remaining if hint is None else min(hint, remaining)
                host = stats.get(endpoint.key, now)
                host.active_requests += 1
                if report is not None:
                    report.attempts = attempt
                    report.upstream_host = endpoint.key
                response: R | None = None
                try_timer = TaskTimer(loop, loop.time() + per_try) if per_try is not None else None
                try:
                    response = await send(endpoint, attempt, hint)
                    outcome = self.classify(response)
                except asyncio.CancelledError:
                    if try_timer is None or not try_timer.expired():
                        raise
                    counters["upstream_rq_per_try_timeout"] += 1
                    outcome = _PER_TRY_TIMEOUT
                except Exception as exc:
                    classified = self.classify_error(exc)
                    if classified is None:
                        if not isinstance(exc, TimeoutError):
                            raise
                        # The transport's own timeout (e.g. a socket read timeout).
                        counters["upstream_rq_per_try_timeout"] += 1
                        classified = _PER_TRY_TIMEOUT
                    outcome = classified
                finally:
                    if try_timer is not None:
                        try_timer.cancel()
                    host.active_requests -= 1
                    if holding_retry:
                        limits.release_retry()  # Envoy holds the retry slot until the retried attempt ends
                        holding_retry = False
                if peak_ewma or outlier is not None:
                    done = clock()
                    if peak_ewma:
                        observe_rtt(host, done - now, done, lb.peak_ewma_decay_s)
                    if outlier is not None:
                        outlier.record(endpoint.key, outcome, done)

                if classifier is None:
                    return _finish(runtime, response, outcome)
                replayable = body_replayable() if body_replayable is not None else True
                if not classifier.should_retry(outcome, idempotent=idempotent, body_replayable=replayable):
                    return _finish(runtime, response, outcome)
                if retry is None:
                    retry = RetryState(classifier)
                if retry.exhausted:
                    counters["upstream_rq_retry_limit_exceeded"] += 1
                    return _finish(runtime, response, outcome)
                if not limits.try_acquire_retry():
                    return _finish(runtime, response, outcome)  # retry overflow: return the last response
                now = clock()
                if not runtime.budget.try_withdraw(now):
                    limits.release_retry()
                    counters["upstream_rq_retry_budget_exhausted"] += 1
                    return _finish(runtime, response, outcome)
                holding_retry = True
                counters["upstream_rq_retry"] += 1
                if response is not None:
                    self.discard(response)
                if avoid_previous:
                    tried.append(endpoint.key)
                delay = retry.next_backoff(rng)
                attempt = retry.attempts
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if route_timer is None or not route_timer.expired():
                raise
            counters["upstream_rq_timeout"] += 1
            return _ROUTE_TIMEOUT
        finally:
            if route_timer is not None:
                route_timer.cancel()
            if holding_retry:
                limits.release_retry()
            if holding_connection:
                runtime.release_connection()
            limits.release_request()


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
    reply = _LOCAL_ERRORS.get(outcome.kind, _LOCAL_ERRORS[OutcomeKind.CONNECT_FAILURE])
    runtime.count_status(reply.status)
    return reply
