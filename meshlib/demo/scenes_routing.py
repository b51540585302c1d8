"""Routing scenes: a canary shifted by weight edits, and a header route."""

from __future__ import annotations

from collections import Counter

from meshlib.demo.bookinfo import Visit
from meshlib.demo.config import reviews_rules
from meshlib.demo.stage import Stage

__all__ = ["canary", "header_routing"]


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
