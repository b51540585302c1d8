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

This is the hot path: no per-request objects beyond what a decision needs.
What depends only on the route (retry classifier, per-try timeout, host
avoidance) is worked out once per route into a cached plan; the one pick
context is refilled, not reallocated; fixed-duration timeouts are entries in a
:class:`TimeoutQueue` (an append, not a heap push), a deadline-capped route
timeout a single ``loop.call_at`` (:class:`TaskTimer`); counters are plain
dict increments.
"""

from __future__ import annotations

import asyncio
import math
import random
from asyncio import current_task
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from meshlib.balancing import PickContext, observe_rtt
from meshlib.config.model import Endpoint, Route
from meshlib.decision import Decision
from meshlib.host_stats import HostStats, HostStatsTable
from meshlib.resilience.cluster_runtime import STATUS_COUNTERS, ClusterRuntime
from meshlib.resilience.deadline import DeadlineExceeded, current_deadline, remaining_timeout
from meshlib.resilience.fault import decide_fault
from meshlib.resilience.injection import NO_INJECTOR, BodyGuard, FaultOwner, InjectedRequest
from meshlib.resilience.limits import ADMITTED, REFUSED
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.resilience.ratelimit import TokenBucket
from meshlib.resilience.retry import RetryClassifier, RetryState
from meshlib.resilience.timer import QueuedTimer, TaskTimer, TimeoutQueue

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
    OutcomeKind.PROTOCOL_ERROR: LocalReply(
        503, "upstream connect error or disconnect/reset before headers. reset reason: protocol error", "UPE",
        grpc_status=14,
    ),
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


class RoutePlan:
    """What :meth:`UpstreamRunner.run` needs from one route, worked out once per route and event loop.

    Routes are frozen, so everything here is a pure function of the route,
    except the timeout queues, which belong to the loop the plan was made on.
    """

    __slots__ = ("avoid_previous", "classifier", "route", "route_queue", "try_queue")

    def __init__(self, route: Route, queue: Callable[[float], TimeoutQueue]) -> None:
        self.route = route  # kept so that a plan found by id(route) can be checked to be this route's
        policy = route.retry
        # No classifier when no retry is allowed: the first outcome is final.
        self.classifier = (
            RetryClassifier.for_policy(policy) if policy is not None and policy.num_retries > 0 else None
        )
        self.avoid_previous = policy is not None and policy.previous_hosts
        per_try = policy.per_try_timeout_s if policy is not None else None
        self.try_queue = queue(per_try) if per_try is not None else None
        # The route timeout when no inbound deadline shortens it (``0`` / ``None``: disabled).
        self.route_queue = queue(route.timeout_s) if route.timeout_s else None


class FirstAttempt(Generic[R]):
    """Attempt 1 as a fused fast path made it, handed to :meth:`UpstreamRunner.run` to carry on.

    The fused path has counted the request, admitted it with a connection slot,
    deposited into the retry budget, armed the route timer (``route_timer``)
    and made attempt 1 on ``host`` (``key``) with the per-try timer
    ``try_timer`` (already disarmed), which ended in ``outcome`` (and
    ``response``, when there is one). Outlier detection and the load metrics
    have not seen the outcome yet: :meth:`UpstreamRunner.run` records it.
    """

    __slots__ = ("host", "key", "now", "outcome", "response", "route_timer", "task", "try_timer")

    def __init__(
        self, *, now: float, task: asyncio.Task[object] | None, route_timer: QueuedTimer | None, key: str,
        host: HostStats, response: R | None, outcome: Outcome, try_timer: QueuedTimer | None,
    ) -> None:
        self.now = now
        self.task = task
        self.route_timer = route_timer
        self.key = key
        self.host = host
        self.response = response
        self.outcome = outcome
        self.try_timer = try_timer


_PLAN_CACHE_LIMIT = 4096


class UpstreamRunner(Generic[R]):
    """Runs routed requests through the resilience stack for one adapter of one mesh."""

    __slots__ = ("_loop", "_pick", "_plans", "_queues", "classify", "classify_error", "clock", "discard", "guard_body",
                 "owner", "rng", "stats", "transport")

    def __init__(
        self,
        *,
        stats: HostStatsTable,
        rng: random.Random,
        clock: Callable[[], float],
        classify: Callable[[R], Outcome],
        classify_error: Callable[[BaseException], Outcome | None],  # None: not ours, re-raise
        discard: Callable[[R], None],
        guard_body: BodyGuard[R] | None = None,
        owner: FaultOwner | None = None,
        transport: str = "http",
    ) -> None:
        self.stats = stats
        self.rng = rng
        self.clock = clock
        self.classify = classify
        self.classify_error = classify_error
        self.discard = discard
        # Keeps the remaining route / per-try deadline over a response body the caller reads later.
        self.guard_body = guard_body
        # The mesh, whose ``_faults`` a test's fault controller sets (meshlib.testing); "http" or "grpc".
        self.owner: FaultOwner = owner if owner is not None else NO_INJECTOR
        self.transport = transport
        # Plans by route identity (hashing a frozen route per request costs more than
        # the plan saves); each plan keeps its route, which guards against id reuse.
        self._plans: dict[int, RoutePlan] = {}
        # One timeout queue per distinct duration, on the loop the plans were made on.
        self._queues: dict[float, TimeoutQueue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # One pick context, refilled before each pick: picks are synchronous and
        # never keep the context, so requests can share it instead of allocating one each.
        self._pick = PickContext(rng, 0.0, stats)

    def _plan(self, route: Route, loop: asyncio.AbstractEventLoop) -> RoutePlan:
        """Make (and cache) ``route``'s plan; a new event loop starts new plans and queues."""
        if self._loop is not loop or len(self._plans) > _PLAN_CACHE_LIMIT:
            # Dropped queues still fire for the timers they hold: their loop handles keep them alive.
            self._plans.clear()
            self._queues.clear()
            self._loop = loop
        plan = self._plans[id(route)] = RoutePlan(route, self._queue)
        return plan

    def plan_for(self, route: Route, loop: asyncio.AbstractEventLoop) -> RoutePlan:
        """``route``'s cached plan on ``loop`` (for a fused fast path; :meth:`run` inlines this)."""
        plan = self._plans.get(id(route))
        if plan is None or plan.route is not route or self._loop is not loop:
            plan = self._plan(route, loop)
        return plan

    def _queue(self, timeout: float) -> TimeoutQueue:
        queue = self._queues.get(timeout)
        if queue is None:
            assert self._loop is not None
            queue = self._queues[timeout] = TimeoutQueue(self._loop, timeout)
        return queue

    def outcome_of_error(self, exc: Exception, counters: dict[str, int]) -> Outcome | None:
        """The outcome of an attempt that raised ``exc``, counted; None: not the transport's, re-raise it."""
        classified = self.classify_error(exc)
        if classified is None:
            if not isinstance(exc, TimeoutError):
                return None
            # The transport's own timeout (e.g. a socket read timeout).
            counters["upstream_rq_per_try_timeout"] += 1
            return _PER_TRY_TIMEOUT
        if classified.kind is OutcomeKind.CONNECT_FAILURE:
            counters["upstream_cx_connect_fail"] += 1  # every failed connection, as Envoy counts
        elif classified.kind is OutcomeKind.PROTOCOL_ERROR:
            counters["upstream_cx_protocol_error"] += 1  # likewise every garbled response
        return classified

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
        first: FirstAttempt[R] | None = None,
    ) -> R | LocalReply:
        """Run ``decision`` through the stack; ``first``: carry on after a fused path's attempt 1.

        A fused fast path (:mod:`meshlib.aiohttp.fused`) runs steps 4–5 and
        attempt 1 itself, exactly as this method would when nothing unusual is
        configured; when that attempt's outcome is not final (a retriable
        status, an error, a per-try timeout) it hands it over here with
        ``first``, and the loop goes on from the outcome of attempt 1.
        """
        hit = decision.hit
        balancer = decision.balancer
        assert hit is not None
        assert balancer is not None
        route = hit.route
        loop = asyncio.get_running_loop()
        plan = self._plans.get(id(route))
        if plan is None or plan.route is not route or self._loop is not loop:
            plan = self._plan(route, loop)
        counters = runtime.counters
        clock = self.clock
        limits = runtime.limits
        try_queue = plan.try_queue
        tap: InjectedRequest[R] | None = None
        route_timer: QueuedTimer | TaskTimer | None = None
        if first is None:
            now = clock()
            counters["upstream_rq_total"] += 1

            # 1. deadline
            deadline = current_deadline()
            timeout: float | None = None  # set only under an inbound deadline: min(route timeout, time left)
            if deadline is not None:
                try:
                    timeout = remaining_timeout(route.timeout_s, deadline, now)
                except DeadlineExceeded:
                    counters["upstream_rq_timeout"] += 1
                    return _DEADLINE_PASSED
            # 2. fault — a test's injected faults first (meshlib.testing; off: this one attribute check)
            injector = self.owner._faults
            if injector is not None:
                tap = injector.begin(decision, runtime, self.transport, report)
                if tap is not None:
                    injected = await tap.before()
                    if injected is not None:
                        return injected
                    send = tap.wrap(send)
            if route.fault is not None:
                fault = decide_fault(route.fault, self.rng)
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
            # 4. admission, with a connection slot when one is free (the pending wait is in step 5)
            route_queue = plan.route_queue
            if timeout is not None and timeout != route.timeout_s:
                route_queue = None  # the inbound deadline comes first: a one-off timer (step 5)
            task: asyncio.Task[object] | None = None
            if try_queue is not None or route_queue is not None or timeout is not None:
                task = current_task(loop)  # before any slot is taken: arming fails without a task
                if task is None:
                    raise RuntimeError("UpstreamRunner.run must run inside a task (its timeouts cancel the task)")
            admission = limits.try_admit()
            if admission == REFUSED:
                return _OVERFLOW
            holding_connection = admission == ADMITTED
            runtime.budget.deposit(now)

            # 5. route timeout around the pending wait, every attempt and every backoff
            if route_queue is not None and task is not None:
                route_timer = route_queue.arm(task)
            elif timeout is not None:
                route_timer = TaskTimer(loop, loop.time() + timeout)  # capped by a deadline: a one-off timer
        else:  # steps 1–5 ran in the fused path: nothing unusual, admitted with a connection
            now = first.now
            task = first.task
            route_timer = first.route_timer
            holding_connection = True
        classifier = plan.classifier
        retry: RetryState | None = None  # made on the first retriable outcome: most requests never need it
        stats = self.stats
        pick = self._pick
        tried: list[str] | tuple[()] = ()  # hosts tried, when the policy avoids them (a list from the first retry)
        holding_retry = False
        attempt = 1
        try_timer: QueuedTimer | None = None
        response: R | None
        try:
            if not holding_connection:
                # Every connection is busy: wait for one as pending (max_pending_requests);
                # a full pending queue overflows at once, never retried.
                if not await runtime.wait_for_connection():
                    return _OVERFLOW
                holding_connection = True
            # 6. attempt loop
            while True:
                if first is not None:  # attempt 1, made by the fused path
                    key = first.key
                    host = first.host
                    response = first.response
                    outcome = first.outcome
                    try_timer = first.try_timer
                    first = None
                else:
                    pick.now = now
                    pick.hash_key = hash_key
                    pick.attempt = attempt - 1
                    pick.avoid = tried
                    endpoint = balancer.pick(pick)
                    if endpoint is None:
                        counters["upstream_cx_none_healthy"] += 1
                        return _NO_HEALTHY
                    key = endpoint.key
                    hint = try_queue.timeout if try_queue is not None else None
                    if route_timer is not None:
                        remaining = route_timer.when - loop.time()
                        hint = remaining if hint is None else min(hint, remaining)
                    host = stats.get(key, now)
                    host.active_requests += 1
                    if report is not None:
                        report.attempts = attempt
                        report.upstream_host = key
                    response = None
                    try_timer = try_queue.arm(task) if try_queue is not None and task is not None else None
                    try:
                        response = await send(endpoint, attempt, hint)
                        outcome = self.classify(response)
                    except asyncio.CancelledError:
                        if try_timer is None or not try_timer.expired():
                            raise
                        counters["upstream_rq_per_try_timeout"] += 1
                        outcome = _PER_TRY_TIMEOUT
                    except Exception as exc:
                        classified = self.outcome_of_error(exc, counters)
                        if classified is None:
                            raise
                        outcome = classified
                    finally:
                        if try_timer is not None:
                            try_timer.cancel()
                        host.active_requests -= 1
                        if holding_retry:
                            limits.release_retry()  # Envoy holds the retry slot until the retried attempt ends
                            holding_retry = False
                if tap is not None:
                    tap.record(outcome)
                decay_s = balancer.ewma_decay_s
                outlier = runtime.outlier
                if decay_s is not None or outlier is not None:
                    done = clock()
                    if decay_s is not None:
                        observe_rtt(host, done - now, done, decay_s)
                    if outlier is not None:
                        outlier.record(key, outcome, done)

                # should_retry is False whenever the body is not replayable, so the (adapter's)
                # replayability check runs only for an outcome that would otherwise be retried.
                if (
                    classifier is None
                    or not classifier.should_retry(outcome, idempotent=idempotent, body_replayable=True)
                    or (body_replayable is not None and not body_replayable())
                ):
                    break
                if retry is None:
                    retry = RetryState(classifier)
                if retry.exhausted:
                    counters["upstream_rq_retry_limit_exceeded"] += 1
                    break
                if not limits.try_acquire_retry():
                    break  # retry overflow: return the last response
                now = clock()
                if not runtime.budget.try_withdraw(now):
                    limits.release_retry()
                    counters["upstream_rq_retry_budget_exhausted"] += 1
                    break
                holding_retry = True
                counters["upstream_rq_retry"] += 1
                if response is not None:
                    self.discard(response)
                if plan.avoid_previous:
                    tried = [*tried, key]
                delay = retry.next_backoff(self.rng)
                attempt = retry.attempts
                await asyncio.sleep(delay)
            # The response is handed back with its body still to come: Envoy's route and per-try
            # timeouts cover the whole response, so the earlier of the two keeps running over the body.
            guard_body = self.guard_body
            if response is not None and guard_body is not None and (route_timer is not None or try_timer is not None):
                route_when = route_timer.when if route_timer is not None else math.inf
                if try_timer is not None and try_timer.when < route_when:
                    guard_body(response, try_timer.when, counters, "upstream_rq_per_try_timeout")
                else:
                    guard_body(response, route_when, counters, "upstream_rq_timeout")
            return _finish(counters, response, outcome)
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
            runtime.release_admitted(holding_connection)


def _finish(counters: dict[str, int], response: R | None, outcome: Outcome) -> R | LocalReply:
    counters["upstream_rq_completed"] += 1
    if response is not None:
        status_counter = STATUS_COUNTERS.get(outcome.http_status // 100)
        if status_counter is not None:
            counters[status_counter] += 1
        return response
    if outcome.kind is OutcomeKind.RESET:
        counters["upstream_rq_rx_reset"] += 1
    reply = _LOCAL_ERRORS.get(outcome.kind, _LOCAL_ERRORS[OutcomeKind.CONNECT_FAILURE])
    counters[STATUS_COUNTERS[reply.status // 100]] += 1
    return reply
