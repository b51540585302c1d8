"""Telemetry scenes: one request's span tree (OpenTelemetry SDK, in-memory exporter) and the Istio metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

from meshlib.demo.config import reviews_rules
from meshlib.demo.stage import RATINGS_CLUSTER, REVIEWS_V2_CLUSTER, Stage

__all__ = ["metrics", "trace"]


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
