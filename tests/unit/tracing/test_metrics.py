"""Istio standard metrics and their Prometheus exposition, from hand-built records (no sockets)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

import meshlib
from meshlib.tracing.metrics import BYTES_BUCKETS, DURATION_BUCKETS_MS, LABEL_NAMES, IstioMetrics
from meshlib.tracing.prometheus import (
    CONTENT_TYPE,
    escape_label_value,
    format_value,
    prometheus_handler,
    render_prometheus,
)
from meshlib.tracing.record import InboundRecord, OutboundRecord

REVIEWS = "reviews.default.svc.cluster.local"
V1_CLUSTER = f"outbound|9080|v1|{REVIEWS}"
SELF = {"app": "productpage", "version": "v1"}

Sample = tuple[str, dict[str, str], str]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: str) -> tuple[list[Sample], dict[str, str]]:
    """Samples ``(name, labels, value)`` and ``{family: type}`` of a text exposition; strict."""
    samples: list[Sample] = []
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            assert family not in types, f"family {family} declared twice"
            types[family] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = _LINE.match(line)
        assert m, f"unparseable line {line!r}"
        name, raw_labels, value = m.groups()
        labels: dict[str, str] = {}
        if raw_labels:
            consumed = 0
            for lm in _LABEL.finditer(raw_labels):
                assert lm.start() == consumed, f"bad labels in {line!r}"
                labels[lm.group(1)] = _unescape(lm.group(2))
                consumed = lm.end()
            assert consumed == len(raw_labels), f"bad labels in {line!r}"
        samples.append((name, labels, value))
    return samples, types


def find(samples: list[Sample], name: str, **match: str) -> list[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in match.items())]


def out_record(status: int = 200, flags: str = "-", duration_ms: float = 5.0, *, subset: str | None = "v1",
               service: str | None = REVIEWS, request_bytes: int = 0, response_bytes: int = 0,
               grpc_status: int | None = None, authority: str = "reviews:9080") -> OutboundRecord:
    return OutboundRecord(
        start_time_unix_ns=1_700_000_000_000_000_000, duration_s=duration_ms / 1000, method="GET", scheme="http",
        authority=authority, path="/reviews/0", status=status, response_flags=flags, route_name="jason",
        upstream_cluster=V1_CLUSTER if service else None, destination_service=service, destination_subset=subset,
        upstream_host="10.0.0.7:9080", request_bytes=request_bytes, response_bytes=response_bytes,
        grpc_status=grpc_status,
    )


def known_traffic(metrics: IstioMetrics) -> None:
    """3 × 200 to reviews v1 via route "jason" (2, 7, 30 ms), 1 × 503 UF,URX (1200 ms)."""
    for ms, size in ((2.0, 0), (7.0, 50), (30.0, 5000)):
        metrics.outbound(out_record(200, "-", ms, request_bytes=size, response_bytes=300))
    metrics.outbound(out_record(503, "UF,URX", 1200.0, response_bytes=91))


EXPECTED_200 = {
    "reporter": "source",
    "source_workload": "productpage-v1",
    "source_canonical_service": "productpage",
    "source_canonical_revision": "v1",
    "source_workload_namespace": "default",
    "source_principal": "unknown",
    "source_app": "productpage",
    "source_version": "v1",
    "source_cluster": "Kubernetes",
    "destination_workload": "unknown",
    "destination_workload_namespace": "default",
    "destination_principal": "unknown",
    "destination_app": "unknown",
    "destination_version": "v1",
    "destination_service": REVIEWS,
    "destination_canonical_service": "unknown",
    "destination_canonical_revision": "unknown",
    "destination_service_name": "reviews",
    "destination_service_namespace": "default",
    "destination_cluster": "unknown",
    "request_protocol": "http",
    "response_code": "200",
    "grpc_response_status": "",
    "response_flags": "-",
    "connection_security_policy": "unknown",
}
EXPECTED_503 = {**EXPECTED_200, "response_code": "503", "response_flags": "UF,URX"}


@pytest.fixture
def metrics() -> IstioMetrics:
    return IstioMetrics("productpage-v1", "default", SELF, otel=False)


def test_requests_total_has_istio_labels_and_counts(metrics: IstioMetrics) -> None:
    known_traffic(metrics)
    text = render_prometheus(metrics, None)
    samples, types = parse(text)
    totals = find(samples, "istio_requests_total")
    assert [(labels, value) for _, labels, value in totals] == [(EXPECTED_200, "3"), (EXPECTED_503, "1")]
    assert types == {
        "istio_requests_total": "counter",
        "istio_request_duration_milliseconds": "histogram",
        "istio_request_bytes": "histogram",
        "istio_response_bytes": "histogram",
    }
    # The exact line, labels in Istio's order.
    line = "istio_requests_total{" + ",".join(f'{k}="{v}"' for k, v in EXPECTED_200.items()) + "} 3"
    assert line in text.splitlines()
    assert "# HELP istio_requests_total " in text


def test_duration_histogram_buckets_sum_and_count(metrics: IstioMetrics) -> None:
    known_traffic(metrics)
    samples, _ = parse(render_prometheus(metrics, None))
    name = "istio_request_duration_milliseconds"
    buckets = {labels["le"]: int(v) for _, labels, v in find(samples, name + "_bucket", response_code="200")}
    assert list(buckets) == [format_value(b) for b in DURATION_BUCKETS_MS] + ["+Inf"]
    assert list(buckets)[:3] == ["0.5", "1", "5"]
    # 2 ms, 7 ms, 30 ms: cumulative
    assert buckets["1"] == 0
    assert buckets["5"] == 1
    assert buckets["10"] == 2
    assert buckets["25"] == 2
    assert buckets["50"] == 3
    assert buckets["+Inf"] == 3
    counts = list(buckets.values())
    assert counts == sorted(counts)
    [(_, count_labels, count)] = find(samples, name + "_count", response_code="200")
    [(_, _, total)] = find(samples, name + "_sum", response_code="200")
    assert count_labels == EXPECTED_200
    assert count == "3"
    assert float(total) == pytest.approx(39.0)
    failed = {labels["le"]: int(v) for _, labels, v in find(samples, name + "_bucket", response_code="503")}
    assert failed["1000"] == 0
    assert failed["2500"] == 1
    [(_, _, failed_sum)] = find(samples, name + "_sum", response_code="503")
    assert float(failed_sum) == pytest.approx(1200.0)


def test_byte_histograms(metrics: IstioMetrics) -> None:
    known_traffic(metrics)
    samples, _ = parse(render_prometheus(metrics, None))
    req = {labels["le"]: int(v) for _, labels, v in find(samples, "istio_request_bytes_bucket", response_code="200")}
    assert list(req) == [format_value(b) for b in BYTES_BUCKETS] + ["+Inf"]
    assert (req["1"], req["10"], req["100"], req["1000"], req["10000"], req["+Inf"]) == (1, 1, 2, 2, 3, 3)
    [(_, _, req_sum)] = find(samples, "istio_request_bytes_sum", response_code="200")
    assert req_sum == "5050"
    resp = {labels["le"]: int(v) for _, labels, v in find(samples, "istio_response_bytes_bucket", response_code="200")}
    assert (resp["100"], resp["1000"]) == (0, 3)
    [(_, _, resp_sum)] = find(samples, "istio_response_bytes_sum", response_code="200")
    assert resp_sum == "900"
    [(_, _, resp_count)] = find(samples, "istio_response_bytes_count", response_code="503")
    assert resp_count == "1"


def test_inbound_is_reported_by_destination() -> None:
    metrics = IstioMetrics("reviews-v2", "bookinfo", {"app": "reviews", "version": "v2"}, otel=False,
                           cluster_id="east")
    for _ in range(2):
        metrics.inbound(InboundRecord(0, 0.003, "GET", "http", "reviews:9080", "/r", 200))
    samples, _ = parse(render_prometheus(metrics))
    [(_, labels, value)] = find(samples, "istio_requests_total")
    assert value == "2"
    assert labels["reporter"] == "destination"
    assert labels["source_workload"] == labels["source_app"] == "unknown"
    assert labels["destination_workload"] == "reviews-v2"
    assert labels["destination_workload_namespace"] == "bookinfo"
    assert labels["destination_app"] == "reviews"
    assert labels["destination_version"] == "v2"
    assert labels["destination_service"] == "reviews.bookinfo.svc.cluster.local"
    assert labels["destination_service_name"] == "reviews"
    assert labels["destination_cluster"] == "east"
    assert labels["connection_security_policy"] == "none"
    assert list(labels) == list(LABEL_NAMES)


def test_grpc_and_unrouted_requests() -> None:
    metrics = IstioMetrics("client", "default", {}, otel=False)
    metrics.outbound(out_record(200, "-", grpc_status=14))
    metrics.outbound(out_record(404, "NR", service=None, subset=None, authority="nowhere.example:80"))
    samples, _ = parse(render_prometheus(metrics))
    [(_, grpc, _)] = find(samples, "istio_requests_total", request_protocol="grpc")
    assert grpc["grpc_response_status"] == "14"
    assert grpc["source_app"] == "unknown"
    assert grpc["source_canonical_service"] == "client"  # Istio falls back to the workload name
    assert grpc["source_canonical_revision"] == "latest"
    [(_, nr, value)] = find(samples, "istio_requests_total", response_flags="NR")
    assert value == "1"
    assert nr["destination_service"] == "unknown"  # never the caller's Host (unbounded)
    assert nr["destination_service_name"] == nr["destination_version"] == "unknown"


def test_passthrough_and_blackhole_traffic_is_labelled_as_istio_does() -> None:
    metrics = IstioMetrics("client", "default", {}, otel=False)
    for i in range(1000):  # 1,000 distinct hosts outside the registry (ALLOW_ANY)
        record = out_record(service=None, subset=None, authority=f"host{i}.example:80")
        record.upstream_cluster = "PassthroughCluster"
        metrics.outbound(record)
    metrics.outbound(out_record(502, "NR", service=None, subset=None, authority="blocked.example:80"))
    assert metrics.series_count() == 2
    samples, _ = parse(render_prometheus(metrics))
    by_name = {labels["destination_service_name"]: (labels, int(v)) for _, labels, v in
               find(samples, "istio_requests_total")}
    passthrough, count = by_name["PassthroughCluster"]
    assert count == 1000
    assert passthrough["destination_service"] == "PassthroughCluster"
    assert passthrough["destination_service_namespace"] == "unknown"
    blackhole, count = by_name["BlackHoleCluster"]
    assert (blackhole["destination_service"], blackhole["response_code"], count) == ("BlackHoleCluster", "502", 1)


def test_label_values_are_escaped() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    metrics = IstioMetrics('wei"rd\\work\nload', "default", {}, otel=False)
    metrics.outbound(out_record())
    text = render_prometheus(metrics)
    assert 'source_workload="wei\\"rd\\\\work\\nload"' in text
    samples, _ = parse(text)
    assert find(samples, "istio_requests_total")[0][1]["source_workload"] == 'wei"rd\\work\nload'


def test_cardinality_is_bounded() -> None:
    metrics = IstioMetrics("client", "default", {}, otel=False, max_series=3)
    for i in range(10):
        metrics.outbound(out_record(service=f"s{i}.default.svc.cluster.local"))
    assert metrics.series_count() == 4  # 3 + one overflow series
    samples, _ = parse(render_prometheus(metrics))
    totals = {labels["destination_service"]: int(v) for _, labels, v in find(samples, "istio_requests_total")}
    assert totals == {f"s{i}.default.svc.cluster.local": 1 for i in range(3)} | {"unknown": 7}


# ---------------------------------------------------------------------- OpenTelemetry


def _otel_points(reader: Any) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_otel_sdk_sees_the_same_counts_and_attributes() -> None:
    sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    reader = export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    metrics = IstioMetrics("productpage-v1", "default", SELF, meter_provider=provider, otel_histograms=True)
    known_traffic(metrics)
    points = _otel_points(reader)
    counts = {(p.attributes["response_code"], p.attributes["response_flags"]): p.value
              for p in points["istio_requests_total"]}
    assert counts == {("200", "-"): 3, ("503", "UF,URX"): 1}
    by_code = {p.attributes["response_code"]: p for p in points["istio_requests_total"]}
    assert dict(by_code["200"].attributes) == EXPECTED_200
    [duration] = [p for p in points["istio_request_duration_milliseconds"] if p.attributes["response_code"] == "200"]
    assert dict(duration.attributes) == EXPECTED_200
    assert tuple(duration.explicit_bounds) == tuple(float(b) for b in DURATION_BUCKETS_MS)
    assert duration.count == 3
    assert duration.sum == pytest.approx(39.0)
    assert list(duration.bucket_counts[:6]) == [0, 0, 1, 1, 0, 1]  # per bucket, not cumulative: ≤5, ≤10, ≤50
    [req] = [p for p in points["istio_request_bytes"] if p.attributes["response_code"] == "200"]
    assert (req.count, req.sum) == (3, 5050)
    assert tuple(req.explicit_bounds) == tuple(float(b) for b in BYTES_BUCKETS)
    assert "istio_response_bytes" in points
    # Observable counter is cumulative across collections.
    metrics.outbound(out_record(200, "-", 3.0))
    again = {p.attributes["response_code"]: p.value for p in _otel_points(reader)["istio_requests_total"]}
    assert again == {"200": 4, "503": 1}


def test_otel_default_exports_only_the_free_counter() -> None:
    sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    reader = export.InMemoryMetricReader()
    metrics = IstioMetrics("p", "default", SELF, meter_provider=sdk_metrics.MeterProvider(metric_readers=[reader]))
    known_traffic(metrics)
    points = _otel_points(reader)
    assert set(points) == {"istio_requests_total"}
    assert sum(p.value for p in points["istio_requests_total"]) == 4


def test_two_sinks_on_one_provider_are_both_observed() -> None:
    sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    reader = export.InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    first = IstioMetrics("a", meter_provider=provider)
    second = IstioMetrics("b", meter_provider=provider)
    first.outbound(out_record())
    second.outbound(out_record())
    second.outbound(out_record())
    totals = {p.attributes["source_workload"]: p.value for p in _otel_points(reader)["istio_requests_total"]}
    assert totals == {"a": 1, "b": 2}


# ---------------------------------------------------------------------- mesh.stats()


def _mesh_stats_sample() -> dict[str, Any]:
    return {
        "clusters": {
            V1_CLUSTER: {
                "upstream_rq_total": 7, "upstream_rq_retry": 2, "upstream_rq_pending_overflow": 1,
                "upstream_rq_active": 3, "rq_open": 1, "remaining_rq": 5, "retry_budget_balance": 2.5,
                "outlier_detection.ejections_enforced_total": 1, "outlier_detection.ejections_active": 1,
                "ejected_hosts": {"10.0.0.8:9080": 123.0}, "not_a_number": "x",
            },
        },
        "hosts": {"10.0.0.7:9080": {"active_requests": 2, "ejected": False, "ejection_count": 0, "ewma_cost_s": 0.01},
                  "10.0.0.8:9080": {"active_requests": 0, "ejected": True, "ejection_count": 1, "ewma_cost_s": 0.0}},
        "breakers": {"db": {"name": "db", "state": "open", "calls": 9, "successes": 4, "failures_total": 5,
                            "rejections": 3, "excluded": 0, "cancellations": 0}},
    }


def test_mesh_stats_use_envoy_names() -> None:
    samples, types = parse(render_prometheus(None, _mesh_stats_sample()))
    values = {(name, labels.get("cluster_name") or labels.get("host") or labels.get("breaker"),
               labels.get("state")): value for name, labels, value in samples}
    assert values[("envoy_cluster_upstream_rq_retry", V1_CLUSTER, None)] == "2"
    assert values[("envoy_cluster_upstream_rq_pending_overflow", V1_CLUSTER, None)] == "1"
    assert values[("envoy_cluster_outlier_detection_ejections_enforced_total", V1_CLUSTER, None)] == "1"
    assert values[("envoy_cluster_circuit_breakers_default_rq_open", V1_CLUSTER, None)] == "1"
    assert values[("meshlib_cluster_retry_budget_balance", V1_CLUSTER, None)] == "2.5"
    assert values[("meshlib_cluster_ejected_hosts", V1_CLUSTER, None)] == "1"
    assert values[("meshlib_host_active_requests", "10.0.0.7:9080", None)] == "2"
    assert values[("meshlib_host_ejected", "10.0.0.8:9080", None)] == "1"
    assert values[("meshlib_breaker_state", "db", "open")] == "1"
    assert values[("meshlib_breaker_state", "db", "closed")] == "0"
    assert values[("meshlib_breaker_rejections_total", "db", None)] == "3"
    assert not any("not_a_number" in name for name, _, _ in samples)
    assert types["envoy_cluster_upstream_rq_retry"] == "counter"
    assert types["envoy_cluster_upstream_rq_active"] == "gauge"
    assert types["envoy_cluster_outlier_detection_ejections_active"] == "gauge"
    assert types["envoy_cluster_circuit_breakers_default_remaining_rq"] == "gauge"
    assert types["meshlib_host_ejections_total"] == "counter"


def test_real_mesh_stats_render(tmp_path: Path) -> None:
    from tests.integration.misbehaving import mesh_yaml

    path = tmp_path / "mesh.yaml"
    path.write_text(mesh_yaml({"a": 1, "b": 2}, dr_policy="    outlierDetection: {consecutive5xxErrors: 2}"))
    mesh = meshlib.Mesh.from_files(path, rng=random.Random(1))
    metrics = IstioMetrics("productpage-v1", "default", SELF, otel=False)
    known_traffic(metrics)
    samples, types = parse(render_prometheus(metrics, mesh.stats()))
    cluster = "outbound|9080||svc.default.svc.cluster.local"
    assert find(samples, "envoy_cluster_upstream_rq_retry", cluster_name=cluster)[0][2] == "0"
    assert find(samples, "envoy_cluster_outlier_detection_ejections_enforced_total", cluster_name=cluster)
    assert find(samples, "istio_requests_total", response_code="200")[0][2] == "3"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", family) for family in types)


# ---------------------------------------------------------------------- endpoint


@pytest.mark.asyncio
async def test_prometheus_handler_serves_text_format(metrics: IstioMetrics) -> None:
    known_traffic(metrics)
    handler = prometheus_handler(lambda: render_prometheus(metrics, _mesh_stats_sample()))
    response = await handler(make_mocked_request("GET", "/stats/prometheus"))
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    body = response.body
    assert isinstance(body, bytes)
    samples, _ = parse(body.decode())
    assert find(samples, "istio_requests_total", response_flags="UF,URX")[0][2] == "1"


def test_empty_render() -> None:
    assert render_prometheus(IstioMetrics("w", otel=False), None) == ""
