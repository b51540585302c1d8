"""The demo's scenes: each changes the Istio rules (hot reload), sends traffic, and checks what happened.

Every scene is ``async def scene(stage: Stage) -> None`` filling
``stage.report`` (table rows while traffic flows, then checks). Randomness is
the mesh's seeded RNG and the services' behaviour is deterministic (every n-th
request fails), so a run is repeatable; checks use bounds where concurrency
could reorder draws.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.demo.bookinfo import RATINGS, Bookinfo, Visit
from meshlib.demo.config import SceneConfig, reviews_rules
from meshlib.demo.render import SceneReport, Screen
from meshlib.mesh import Mesh

__all__ = ["SCENES", "Scene", "Stage"]

RATINGS_CLUSTER = "outbound|9080||ratings.default.svc.cluster.local"
REVIEWS_V2_CLUSTER = "outbound|9080|v2|reviews.default.svc.cluster.local"
CONCURRENCY = 10

ALL_TO = "- route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n  retries: {{attempts: 0}}\n"


@dataclass
class Stage:
    """What a scene works with: the mesh, the services, the config directory, the screen and its report."""

    mesh: Mesh
    bookinfo: Bookinfo
    config: SceneConfig
    screen: Screen
    report: SceneReport
    requests: int  # traffic per step (smaller with --fast)
    ran: frozenset[str] = frozenset()  # the scenes of this run

    async def rules(self, rules: str) -> str:
        return await self.config.apply(self.mesh, rules)

    def cluster_stat(self, cluster: str, stat: str) -> int:
        value = self.mesh.stats()["clusters"].get(cluster, {}).get(stat, 0)
        return len(value) if isinstance(value, dict) else int(value)

    async def visits(self, count: int, user: str | None = None, *, concurrency: int = CONCURRENCY,
                     each: Callable[[Visit], None] | None = None) -> list[Visit]:
        """``count`` productpage visits, ``concurrency`` at a time; ``each`` sees every result as it lands."""
        results: list[Visit] = []
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                visit = await self.bookinfo.visit(user)
            results.append(visit)
            if each is not None:
                each(visit)
                self.screen.update(self.report)

        await asyncio.gather(*(one() for _ in range(count)))
        return results


@dataclass(frozen=True)
class Scene:
    name: str
    title: str
    columns: tuple[str, ...]
    intro: str
    run: Callable[[Stage], Awaitable[None]]


# ---------------------------------------------------------------------------------------------------- canary


async def canary(stage: Stage) -> None:
    report = stage.report
    steps = ((100, 0), (80, 20), (50, 50), (0, 100))
    for v1, v3 in steps:
        version = await stage.rules(reviews_rules(
            "- name: canary\n  route:\n"
            f"  - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}\n"
            f"  - {{destination: {{host: reviews, subset: v3}}, weight: {v3}}}\n"
        ))
        seen: Counter[str] = Counter()
        row: list[object] = [f"v1 {v1}% / v3 {v3}%", version, 0, 0]
        report.rows.append(row)

        def count(visit: Visit, seen: Counter[str] = seen, row: list[object] = row) -> None:
            seen[visit.version or "-"] += 1
            row[2], row[3] = seen["v1"], seen["v3"]

        await stage.visits(stage.requests, each=count)
        total = sum(seen.values())
        share = seen["v3"] / total if total else 0.0
        p = v3 / 100
        tolerance = 4 * (p * (1 - p) / max(total, 1)) ** 0.5 + 1e-9  # 4 standard deviations of the draw
        report.check(f"v3 got {share:.0%} of traffic with weight {v3}%", abs(share - p) <= tolerance)


# ---------------------------------------------------------------------------------------------------- headers


async def header_routing(stage: Stage) -> None:
    report = stage.report
    await stage.rules(reviews_rules(
        "- name: jason-sees-v2\n  match: [{headers: {end-user: {exact: jason}}}]\n"
        "  route: [{destination: {host: reviews, subset: v2}}]\n"
        "- name: everyone-else\n  route: [{destination: {host: reviews, subset: v1}}]\n"
    ))
    for user, rule in (("jason", "jason-sees-v2"), (None, "everyone-else")):
        seen: Counter[str] = Counter()
        row: list[object] = [f"end-user: {user}" if user else "(no end-user)", rule, 0, 0, 0]
        report.rows.append(row)

        def count(visit: Visit, seen: Counter[str] = seen, row: list[object] = row) -> None:
            seen[visit.version or "-"] += 1
            row[2:5] = [seen["v1"], seen["v2"], seen["v3"]]

        await stage.visits(max(stage.requests // 4, 10), user, each=count)
        want = "v2" if user else "v1"
        report.check(f"every {'jason' if user else 'anonymous'} request went to {want}",
                     set(seen) == {want})


# ---------------------------------------------------------------------------------------------------- fault


async def fault_and_timeout(stage: Stage) -> None:
    report = stage.report
    delay_s, timeout_s = 1.0, 0.3
    await stage.rules(reviews_rules(
        f"- name: v2-with-timeout\n  route: [{{destination: {{host: reviews, subset: v2}}}}]\n"
        f"  timeout: {int(timeout_s * 1000)}ms\n  retries: {{attempts: 0}}\n",
        ratings_route=(
            "fault:\n"
            f"  delay: {{percentage: {{value: 40}}, fixedDelay: {int(delay_s * 1000)}ms}}\n"
            "  abort: {percentage: {value: 30}, httpStatus: 503}\n"
            "retries: {attempts: 0}\n"
        ),
    ))
    outcomes: dict[str, list[float]] = {}
    rows: dict[str, list[object]] = {}

    def count(visit: Visit) -> None:
        times = outcomes.setdefault(visit.outcome, [])
        times.append(visit.elapsed_s)
        row = rows.get(visit.outcome)
        if row is None:
            row = rows[visit.outcome] = [visit.outcome, _meaning(visit.outcome), 0, ""]
            report.rows.append(row)
        row[2], row[3] = len(times), f"{max(times) * 1000:.0f} ms"

    started = time.perf_counter()
    await stage.visits(max(stage.requests // 2, 30), concurrency=40, each=count)
    elapsed = time.perf_counter() - started
    report.notes.append(f"{sum(len(t) for t in outcomes.values())} visits in {elapsed:.2f} s "
                        f"(a delayed ratings call would take {delay_s:.1f} s without the timeout)")
    report.check("the 503 abort (FI) reached reviews, which degraded to 'no stars'", "ratings 503 FI" in outcomes)
    timed_out = outcomes.get("reviews 504 UT", [])
    report.check(f"the {delay_s:.0f} s delay was cut by reviews' {timeout_s * 1000:.0f} ms timeout (504 UT)",
                 bool(timed_out) and max(timed_out) < delay_s)
    report.check("the rest were served normally", "stars from ratings" in outcomes)


def _meaning(outcome: str) -> str:
    return {
        "stars from ratings": "ratings answered",
        "ratings 503 FI": "fault abort injected on ratings; reviews shows no stars",
        "reviews 504 UT": "fault delay on ratings; reviews route timeout answered",
        "no stars (v1)": "reviews v1 does not call ratings",
    }.get(outcome, "")


# ---------------------------------------------------------------------------------------------------- retries


async def retries(stage: Stage) -> None:
    report = stage.report
    flaky = stage.bookinfo.ratings[RATINGS[1]]
    for attempts in (0, 3):
        await stage.rules(reviews_rules(
            ALL_TO.format(subset="v2"),
            ratings_route=(f"retries: {{attempts: {attempts}, retryOn: 5xx}}" if attempts else
                           "retries: {attempts: 0}"),
        ))
        flaky.reset()
        flaky.fail_every = 2  # every other request to :19192 fails
        failed_before, retried_before = flaky.failed, stage.cluster_stat(RATINGS_CLUSTER, "upstream_rq_retry")
        seen: Counter[str] = Counter()
        row: list[object] = [f"attempts: {attempts}" + (", retryOn: 5xx" if attempts else ""), 0, 0, 0, 0]
        report.rows.append(row)

        def count(visit: Visit, seen: Counter[str] = seen, row: list[object] = row,
                  failed_before: int = failed_before, retried_before: int = retried_before) -> None:
            seen["ok" if visit.outcome == "stars from ratings" else "failed"] += 1
            row[1:5] = [seen["ok"], seen["failed"], flaky.failed - failed_before,
                        stage.cluster_stat(RATINGS_CLUSTER, "upstream_rq_retry") - retried_before]

        await stage.visits(stage.requests // 2, concurrency=1, each=count)
        if attempts:
            report.check("with retries every visit got its stars, though :19192 kept failing",
                         seen["failed"] == 0 and flaky.failed > 0)
        else:
            report.check("without retries the flaky host's failures reached the caller", seen["failed"] > 0)
    flaky.reset()


# ---------------------------------------------------------------------------------------------------- outlier


async def outlier_detection(stage: Stage) -> None:
    report = stage.report
    base_ejection_s = 1.0
    await stage.rules(reviews_rules(
        ALL_TO.format(subset="v2"),
        ratings_policy=(
            "loadBalancer: {simple: ROUND_ROBIN}\n"
            f"outlierDetection: {{consecutive5xxErrors: 3, interval: 100ms, "
            f"baseEjectionTime: {int(base_ejection_s * 1000)}ms, maxEjectionPercent: 50}}\n"
        ),
        ratings_route="retries: {attempts: 0}",
    ))
    failing = stage.bookinfo.ratings[RATINGS[1]]

    async def phase(label: str, visits: int) -> tuple[Counter[int], int]:
        before = {port: b.seen for port, b in stage.bookinfo.ratings.items()}
        errors = 0
        row: list[object] = [label, 0, 0, 0, ""]
        report.rows.append(row)

        def count(visit: Visit) -> None:
            nonlocal errors
            errors += visit.outcome != "stars from ratings"
            row[1] = stage.bookinfo.ratings[RATINGS[0]].seen - before[RATINGS[0]]
            row[2] = stage.bookinfo.ratings[RATINGS[1]].seen - before[RATINGS[1]]
            row[3] = errors
            row[4] = ", ".join(_ejected(stage)) or "none"

        await stage.visits(visits, concurrency=1, each=count)
        return Counter({p: b.seen - before[p] for p, b in stage.bookinfo.ratings.items()}), errors

    failing.failing = True
    hits, errors = await phase(f":{RATINGS[1]} starts failing (500)", 12)
    report.check(f"3 consecutive 5xx ejected :{RATINGS[1]} (ejections_enforced_total "
                 f"{stage.cluster_stat(RATINGS_CLUSTER, 'outlier_detection.ejections_enforced_total')})",
                 f"127.0.0.1:{RATINGS[1]}" in _ejected(stage) and errors <= 3)
    hits, errors = await phase("while ejected", 10)
    report.check(f"while ejected, :{RATINGS[1]} got no traffic", hits[RATINGS[1]] == 0 and errors == 0)
    failing.failing = False
    due = _ejected_until(stage)
    if due is not None:  # the demo waits out baseEjectionTime on purpose, plus two outlier interval ticks
        await asyncio.sleep(max(0.0, due - stage.mesh.clock()) + 0.2)
    hits, errors = await phase(f"healed, after baseEjectionTime {base_ejection_s:g}s", 10)
    report.check(f":{RATINGS[1]} returned after baseEjectionTime and serves again", hits[RATINGS[1]] > 0)


def _ejected(stage: Stage) -> list[str]:
    value: Any = stage.mesh.stats()["clusters"].get(RATINGS_CLUSTER, {}).get("ejected_hosts", {})
    return sorted(value)


def _ejected_until(stage: Stage) -> float | None:
    """When (mesh clock) the last ejected ratings host is due back, or None if none is ejected."""
    value: Any = stage.mesh.stats()["clusters"].get(RATINGS_CLUSTER, {}).get("ejected_hosts", {})
    return max(value.values()) if value else None


# ---------------------------------------------------------------------------------------------------- breaker


async def breaker(stage: Stage) -> None:
    report = stage.report
    await stage.rules(reviews_rules(
        ALL_TO.format(subset="v1"),
        ratings_policy=(
            "connectionPool:\n"
            "  tcp: {maxConnections: 1}\n"
            "  http: {http1MaxPendingRequests: 1}\n"
        ),
        ratings_route="retries: {attempts: 0}",
    ))
    for behaviour in stage.bookinfo.ratings.values():
        behaviour.delay_s = 0.2  # slow enough that 10 callers at once pile up
    overflow_before = stage.cluster_stat(RATINGS_CLUSTER, "upstream_rq_pending_overflow")
    outcomes: Counter[str] = Counter()
    rows: dict[str, list[object]] = {}

    async def call(http: aiohttp.ClientSession) -> None:
        async with http.get("http://ratings:9080/ratings/0") as resp:
            flag = resp.headers.get(LOCAL_REPLY_HEADER, "")
            overloaded = resp.headers.get("x-envoy-overloaded", "")
            key = f"{resp.status} {flag}".strip()
        outcomes[key] += 1
        row = rows.get(key)
        if row is None:
            meaning = "served (1 in flight + 1 queued allowed)" if resp.status == 200 else (
                f"circuit breaker overflow, x-envoy-overloaded: {overloaded}" if flag == "UO" else "")
            row = rows[key] = [key, meaning, 0]
            report.rows.append(row)
        row[2] = outcomes[key]
        stage.screen.update(report)

    try:
        await asyncio.gather(*(call(stage.bookinfo.http) for _ in range(10)))
    finally:
        for behaviour in stage.bookinfo.ratings.values():
            behaviour.delay_s = 0.0
    overflow = stage.cluster_stat(RATINGS_CLUSTER, "upstream_rq_pending_overflow") - overflow_before
    report.notes.append(f"cluster.{RATINGS_CLUSTER}.upstream_rq_pending_overflow: +{overflow}")
    report.check("calls beyond the pool limits got 503 UO at once, the rest were served",
                 outcomes["503 UO"] > 0 and outcomes["200"] > 0 and outcomes["503 UO"] == overflow)


# ---------------------------------------------------------------------------------------------------- trace


async def trace(stage: Stage) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from rich.tree import Tree

    report = stage.report
    await stage.rules(reviews_rules(
        "- name: jason-sees-v2\n  match: [{headers: {end-user: {exact: jason}}}]\n"
        "  route: [{destination: {host: reviews, subset: v2}}]\n"
        "- route: [{destination: {host: reviews, subset: v1}}]\n"
    ))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stage.mesh.enable_tracing(provider)
    visit = await stage.bookinfo.visit("jason")
    stage.mesh.flush_telemetry()
    spans = list(exporter.get_finished_spans())
    provider.shutdown()

    by_parent: dict[int | None, list[Any]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        by_parent.setdefault(parent, []).append(span)
    roots = by_parent.get(None, [])
    trace_ids = {span.context.trace_id for span in spans}
    tree = Tree(f"trace {next(iter(trace_ids)):032x}" if len(trace_ids) == 1 else "spans")

    def add(node: Tree, span: Any) -> int:
        depth = 1
        for child in sorted(by_parent.get(span.context.span_id, []), key=lambda s: s.start_time or 0):
            depth = max(depth, 1 + add(node.add(_span_label(child)), child))
        return depth

    depth = max((add(tree.add(_span_label(root)), root) for root in roots), default=0)
    report.tree = tree
    report.check(f"one trace, {len(spans)} spans, driver → productpage → reviews v2 → ratings",
                 len(trace_ids) == 1 and len(roots) == 1 and depth >= 6 and visit.version == "v2")


def _span_label(span: Any) -> str:
    attributes = span.attributes or {}
    kind = span.kind.name
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    if kind == "CLIENT":  # outbound|9080|v2|reviews.default.svc.cluster.local → "reviews v2"
        _, _, subset, fqdn = [*str(attributes.get("meshlib.cluster", "")).split("|"), "", "", "", ""][:4]
        where = f"→ {fqdn.split('.')[0]}{' ' + subset if subset else ''} @ {attributes.get('meshlib.endpoint', '?')}"
    else:  # the SERVER span's name already carries the route
        where = f"({attributes.get('url.path', '')})"
    status = attributes.get("http.response.status_code", "")
    return f"{kind} {span.name} {where}  {status}  {duration_ms:.1f} ms"


# ---------------------------------------------------------------------------------------------------- metrics


async def metrics(stage: Stage) -> None:
    report = stage.report
    sink = stage.mesh.enable_metrics()
    totals: Counter[tuple[str, str, str, str]] = Counter()
    for series in sink.snapshot():
        labels = dict(series.labels)
        if labels["reporter"] != "source":
            continue
        totals[(labels["destination_service_name"], labels["destination_version"], labels["response_code"],
                labels["response_flags"])] += series.requests
    for (service, version, code, flag), count in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
        report.rows.append([service, version, code, flag, count])
    stats = stage.mesh.stats()["clusters"]
    for cluster, stat in ((RATINGS_CLUSTER, "upstream_rq_retry"),
                          (RATINGS_CLUSTER, "upstream_rq_pending_overflow"),
                          (REVIEWS_V2_CLUSTER, "upstream_rq_timeout")):
        report.notes.append(f"cluster.{cluster}.{stat}: {stats.get(cluster, {}).get(stat, 0)}")
    lines = stage.mesh.prometheus_text().count("\n")
    report.notes.append(f"(istio_requests_total by destination, reporter=\"source\"; the full Prometheus page has "
                        f"{lines} lines — `meshlib demo --serve` serves it at /stats/prometheus)")
    flags = {key[3] for key in totals}
    expected = {flag for scene, flag in (("breaker", "UO"), ("fault", "FI"), ("fault", "UT")) if scene in stage.ran}
    report.check("istio_requests_total counted the traffic, with Envoy's response flags "
                 f"({', '.join(sorted(expected)) or 'none expected'})",
                 sum(totals.values()) > 0 and expected <= flags)


def _scene(name: str, title: str, columns: Iterable[str], intro: str,
           run: Callable[[Stage], Awaitable[None]]) -> Scene:
    return Scene(name, title, tuple(columns), intro, run)


SCENES: tuple[Scene, ...] = (
    _scene("canary", "Canary: shifting reviews from v1 to v3", ("weights (VirtualService)", "config version", "v1",
                                                                 "v3"),
           "The reviews VirtualService's weights are edited four times; each edit is hot-reloaded.", canary),
    _scene("headers", "Header routing: jason sees v2", ("request", "rule", "v1", "v2", "v3"),
           "A match on the end-user header sends jason to v2; everyone else to v1.", header_routing),
    _scene("fault", "Fault injection and the timeout that contains it", ("outcome", "meaning", "visits", "slowest"),
           "ratings: 40% delayed 1 s, 30% aborted with 503 (fault). reviews → v2 with a 300 ms route timeout.",
           fault_and_timeout),
    _scene("retries", "Retries absorb a flaky host", ("ratings retry policy", "ok", "failed", "host failures",
                                                      "retries"),
           f"ratings :{RATINGS[1]} fails every other request; first without retries, then with 3 on 5xx.", retries),
    _scene("outlier", "Outlier detection ejects a failing host and brings it back",
           ("phase", f":{RATINGS[0]}", f":{RATINGS[1]}", "errors", "ejected"),
           "ratings DestinationRule: consecutive5xxErrors 3, baseEjectionTime 1s.", outlier_detection),
    _scene("breaker", "Circuit breaking: pool overflow answers 503 UO", ("status", "meaning", "calls"),
           "ratings DestinationRule: 1 connection, 1 pending request; 10 callers at once to a slow ratings.", breaker),
    _scene("trace", "The trace of one request across services", ("",),
           "OpenTelemetry SDK with an in-memory exporter; one visit as jason.", trace),
    _scene("metrics", "The Istio metrics behind it all", ("destination", "version", "code", "flags", "requests"),
           "istio_requests_total as recorded in process for every scene above.", metrics),
)
