"""UpstreamRunner with a fake transport: queued timeouts, retries to another host, per-loop plans."""

from __future__ import annotations

import asyncio
import random

import pytest

from meshlib.balancing import ClusterBalancer
from meshlib.config.model import Cluster, Endpoint, RetryPolicy, Route, RouteSource, VirtualHost, WeightedCluster
from meshlib.decision import Action, Decision
from meshlib.host_stats import HostStatsTable
from meshlib.resilience.attempts import CallReport, LocalReply, UpstreamRunner
from meshlib.resilience.cluster_runtime import ClusterRuntime
from meshlib.resilience.deadline import deadline_scope
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.routing.table import RouteHit

HOSTS = (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80))


def _setup(
    *, per_try_s: float | None = None, route_timeout_s: float | None = None, retries: int = 1
) -> tuple[UpstreamRunner[int], Decision, ClusterRuntime]:
    stats = HostStatsTable()
    rng = random.Random(1)
    cluster = Cluster("outbound|80||svc", "svc", 80, "", HOSTS)
    policy = RetryPolicy(num_retries=retries, retry_on=("5xx",), per_try_timeout_s=per_try_s, backoff_base_s=0.001)
    route = Route((), RouteSource(None, "default", 0), (WeightedCluster(cluster.name, "svc", 80),),
                  timeout_s=route_timeout_s, retry=policy)
    hit = RouteHit(route, VirtualHost("svc:80", ("svc",), (route,)), None)
    decision = Decision(Action.ROUTE, hit, route.destinations[0], cluster, ClusterBalancer(cluster))
    runner: UpstreamRunner[int] = UpstreamRunner(
        stats=stats, rng=rng, clock=lambda: asyncio.get_running_loop().time(),
        classify=lambda status: Outcome(OutcomeKind.RESPONSE, status),
        classify_error=lambda exc: None, discard=lambda status: None,
    )
    return runner, decision, ClusterRuntime(cluster, stats, rng, 0.0)


@pytest.mark.asyncio
async def test_per_try_timeout_is_retried_on_the_other_host() -> None:
    runner, decision, runtime = _setup(per_try_s=0.02)
    dialled: list[tuple[str, int, float | None]] = []

    async def send(endpoint: Endpoint, attempt: int, hint: float | None) -> int:
        dialled.append((endpoint.key, attempt, hint))
        if attempt == 1:
            await asyncio.Event().wait()  # hangs: the per-try timeout ends it
        return 200

    report = CallReport()
    assert await runner.run(decision, runtime, send, report=report) == 200
    assert [(a, h) for _, a, h in dialled] == [(1, 0.02), (2, 0.02)]
    assert dialled[0][0] != dialled[1][0]  # previous host avoided
    assert report.attempts == 2
    assert report.upstream_host == dialled[1][0]
    counters = runtime.counters
    assert counters["upstream_rq_per_try_timeout"] == 1
    assert counters["upstream_rq_retry"] == 1
    assert counters["upstream_rq_2xx"] == 1
    assert counters["upstream_rq_completed"] == 1
    assert runtime.limits.upstream_rq_active == runtime.limits.upstream_cx_active == 0


@pytest.mark.asyncio
async def test_route_timeout_ends_the_whole_call() -> None:
    runner, decision, runtime = _setup(route_timeout_s=0.02, per_try_s=10.0, retries=3)
    hints: list[float | None] = []

    async def send(endpoint: Endpoint, attempt: int, hint: float | None) -> int:
        hints.append(hint)
        await asyncio.Event().wait()
        return 200

    result = await runner.run(decision, runtime, send)
    assert isinstance(result, LocalReply)
    assert (result.status, result.flag) == (504, "UT")
    assert runtime.counters["upstream_rq_timeout"] == 1
    assert runtime.counters["upstream_rq_per_try_timeout"] == 0
    assert len(hints) == 1
    assert hints[0] is not None and 0.0 < hints[0] <= 0.02  # capped by the route timeout's remainder
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_caller_cancellation_propagates_through_queued_timers() -> None:
    runner, decision, runtime = _setup(route_timeout_s=60.0, per_try_s=30.0)
    sending = asyncio.Event()

    async def send(endpoint: Endpoint, attempt: int, hint: float | None) -> int:
        sending.set()
        await asyncio.Event().wait()
        return 200

    call = asyncio.create_task(runner.run(decision, runtime, send))
    await sending.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert runtime.counters["upstream_rq_timeout"] == runtime.counters["upstream_rq_per_try_timeout"] == 0
    assert runtime.limits.upstream_rq_active == 0


def test_one_runner_serves_successive_event_loops() -> None:
    runner, decision, runtime = _setup(per_try_s=0.01)

    async def one_call() -> int | LocalReply:
        async def send(endpoint: Endpoint, attempt: int, hint: float | None) -> int:
            if attempt == 1:
                await asyncio.Event().wait()
            return 200

        return await runner.run(decision, runtime, send)

    # Each loop gets its own plans and timeout queues; a queue bound to a closed loop would never fire.
    assert asyncio.run(one_call()) == 200
    assert asyncio.run(one_call()) == 200
    assert runtime.counters["upstream_rq_per_try_timeout"] == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(("route_timeout_s", "deadline_in_s"), [(0.02, 60.0), (60.0, 0.02), (None, 0.02)])
async def test_the_sooner_of_route_timeout_and_inbound_deadline_ends_the_call(
    route_timeout_s: float | None, deadline_in_s: float
) -> None:
    # Route timeout first: its queued timer; inbound deadline first (or alone): a one-off timer.
    runner, decision, runtime = _setup(route_timeout_s=route_timeout_s, retries=0)
    hints: list[float | None] = []

    async def send(endpoint: Endpoint, attempt: int, hint: float | None) -> int:
        hints.append(hint)
        await asyncio.Event().wait()
        return 200

    with deadline_scope(asyncio.get_running_loop().time() + deadline_in_s):
        result = await runner.run(decision, runtime, send)
    assert isinstance(result, LocalReply)
    assert (result.status, result.flag) == (504, "UT")
    assert runtime.counters["upstream_rq_timeout"] == 1
    assert hints[0] is not None and 0.0 < hints[0] <= 0.02
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
