"""Resilience scenes: a fault contained by a timeout, retries, outlier detection, a breaker's overflow.

The services misbehave deterministically (every n-th request, or always) and
the mesh's RNG is seeded, so each run shows the same story; the claims use
bounds where concurrency could reorder draws.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp

from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.demo.bookinfo import RATINGS, Visit
from meshlib.demo.config import reviews_rules
from meshlib.demo.stage import ALL_TO, RATINGS_CLUSTER, Stage

__all__ = ["breaker", "fault_and_timeout", "outlier_detection", "retries"]


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
