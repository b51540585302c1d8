"""UpstreamRunner's two seams, with fakes: a test's fault injector (meshlib.testing) and the body guard."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from meshlib.balancing import ClusterBalancer
from meshlib.config.model import Cluster, Endpoint, RetryPolicy, Route, RouteSource, VirtualHost, WeightedCluster
from meshlib.decision import Action, Decision
from meshlib.host_stats import HostStatsTable
from meshlib.resilience.attempts import CallReport, LocalReply, UpstreamRunner
from meshlib.resilience.cluster_runtime import ClusterRuntime
from meshlib.resilience.injection import AttemptSend, FaultInjector
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.routing.table import RouteHit

pytestmark = pytest.mark.asyncio
HOSTS = (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80))
Guarded = list[tuple[int, float, str]]


class Owner:
    def __init__(self) -> None:
        self._faults: FaultInjector | None = None


class FakeRequest:
    """Aborts when told; otherwise answers 503 on the first attempt instead of sending it."""

    def __init__(self, abort: bool) -> None:
        self.abort = abort
        self.outcomes: list[Outcome] = []

    async def before(self) -> LocalReply | None:
        return LocalReply(418, "fault filter abort", "FI") if self.abort else None

    def wrap(self, send: AttemptSend[Any]) -> AttemptSend[Any]:
        async def faulty(endpoint: Endpoint, attempt: int, hint: float | None) -> Any:
            return 503 if attempt == 1 else await send(endpoint, attempt, hint)

        return faulty

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


class FakeInjector:
    def __init__(self, abort: bool = False) -> None:
        self.request = FakeRequest(abort)
        self.transports: list[str] = []

    def begin(self, decision: Decision, runtime: ClusterRuntime, transport: str,
              report: CallReport | None) -> FakeRequest:
        self.transports.append(transport)
        return self.request


def _setup(owner: Owner | None = None, guarded: Guarded | None = None, *, per_try_s: float | None = None,
           route_timeout_s: float | None = None) -> tuple[UpstreamRunner[int], Decision, ClusterRuntime]:
    stats = HostStatsTable()
    rng = random.Random(1)
    cluster = Cluster("outbound|80||svc", "svc", 80, "", HOSTS)
    policy = RetryPolicy(num_retries=2, retry_on=("5xx",), per_try_timeout_s=per_try_s, backoff_base_s=0.001)
    route = Route((), RouteSource(None, "default", 0), (WeightedCluster(cluster.name, "svc", 80),),
                  timeout_s=route_timeout_s, retry=policy)
    hit = RouteHit(route, VirtualHost("svc:80", ("svc",), (route,)), None)
    decision = Decision(Action.ROUTE, hit, route.destinations[0], cluster, ClusterBalancer(cluster))

    def guard(response: int, when: float, counters: dict[str, int], counter: str) -> None:
        assert guarded is not None
        guarded.append((response, when, counter))

    runner: UpstreamRunner[int] = UpstreamRunner(
        stats=stats, rng=rng, clock=lambda: asyncio.get_running_loop().time(),
        classify=lambda status: Outcome(OutcomeKind.RESPONSE, status),
        classify_error=lambda exc: None, discard=lambda status: None,
        guard_body=guard if guarded is not None else None, owner=owner, transport="grpc",
    )
    return runner, decision, ClusterRuntime(cluster, stats, rng, 0.0)


async def ok(endpoint: Endpoint, attempt: int, hint: float | None) -> int:
    return 200


async def test_an_injected_abort_is_the_answer_and_nothing_is_sent() -> None:
    owner = Owner()
    injector = FakeInjector(abort=True)
    owner._faults = injector
    runner, decision, runtime = _setup(owner)
    sent: list[int] = []

    async def send(endpoint: Endpoint, attempt: int, hint: float | None) -> int:
        sent.append(attempt)
        return 200

    result = await runner.run(decision, runtime, send)
    assert isinstance(result, LocalReply) and (result.status, result.flag) == (418, "FI")
    assert sent == []
    assert injector.transports == ["grpc"]


async def test_attempts_go_through_the_injector_and_their_outcomes_come_back() -> None:
    owner = Owner()
    runner, decision, runtime = _setup(owner)
    assert await runner.run(decision, runtime, ok) == 200  # no injector: untouched
    injector = FakeInjector()
    owner._faults = injector
    assert await runner.run(decision, runtime, ok) == 200  # the injected 503 was retried
    assert [o.http_status for o in injector.request.outcomes] == [503, 200]
    assert runtime.counters["upstream_rq_retry"] == 1
    owner._faults = None
    assert await runner.run(decision, runtime, ok) == 200
    assert len(injector.request.outcomes) == 2  # removed: no longer consulted


async def test_the_body_guard_gets_the_earlier_deadline_and_its_counter() -> None:
    guarded: Guarded = []
    loop = asyncio.get_running_loop()
    runner, decision, runtime = _setup(guarded=guarded, per_try_s=0.5, route_timeout_s=5.0)
    before = loop.time()
    assert await runner.run(decision, runtime, ok) == 200
    [(response, when, counter)] = guarded
    assert response == 200 and counter == "upstream_rq_per_try_timeout"
    assert before + 0.5 <= when <= loop.time() + 0.5

    guarded.clear()
    runner, decision, runtime = _setup(guarded=guarded, per_try_s=5.0, route_timeout_s=0.5)
    assert await runner.run(decision, runtime, ok) == 200
    assert [c for _, _, c in guarded] == ["upstream_rq_timeout"]


async def test_no_timeout_no_guard() -> None:
    guarded: Guarded = []
    runner, decision, runtime = _setup(guarded=guarded)
    assert await runner.run(decision, runtime, ok) == 200
    assert guarded == []
