"""Istio's standard metrics, recorded in process from :mod:`meshlib.tracing.record`.

:class:`IstioMetrics` is a :class:`~meshlib.tracing.record.TelemetrySink` that
keeps Istio's four HTTP/gRPC metrics with Istio's names and label names, so
existing Istio dashboards (Grafana, Kiali) read meshlib workloads unchanged:

- ``istio_requests_total`` (counter)
- ``istio_request_duration_milliseconds`` (histogram, Istio's default buckets)
- ``istio_request_bytes`` and ``istio_response_bytes`` (histograms)

Two outputs share one fast aggregation keyed by the label tuple:

- the Prometheus text exposition (:func:`meshlib.tracing.prometheus.render_prometheus`),
  which works with only ``opentelemetry-api`` installed;
- OpenTelemetry metrics API instruments on the given (or the global)
  ``MeterProvider``. ``istio_requests_total`` is an *observable* counter read
  from the aggregation at collection time, so it costs nothing per request.
  The API has no observable histogram, and the SDK cleans and hashes every
  attribute of every measurement (~40 µs for Istio's 25 labels, per
  instrument), so the three histograms go to OpenTelemetry only with
  ``otel_histograms=True``; the Prometheus endpoint always has them.

Label values come only from configuration, this workload's identity or small
fixed sets (status codes, response flags): a request to a host outside the
registry is ``destination_service="PassthroughCluster"`` (one refused by
``REGISTRY_ONLY`` ``BlackHoleCluster``), never the Host it named, and
``max_series`` caps the rest, so hostile traffic cannot grow the series count.

Recording one request costs one dict lookup on a cached key plus a few integer
updates (~1-2 µs); labels and attribute dicts are built once per distinct key.

Example::

    metrics = IstioMetrics("productpage-v1", "default", {"app": "productpage", "version": "v1"})
    metrics.outbound(record)                     # called by the mesh for each request
    text = render_prometheus(metrics, mesh.stats())
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from opentelemetry import metrics as otel_metrics

from meshlib.tracing.record import InboundRecord, OutboundRecord

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = [
    "BYTES_BUCKETS",
    "DURATION_BUCKETS_MS",
    "LABEL_NAMES",
    "HistogramSnapshot",
    "IstioMetrics",
    "SeriesSnapshot",
]

#: Istio's default buckets for ``istio_request_duration_milliseconds``.
DURATION_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)
#: Istio's default buckets for ``istio_request_bytes`` / ``istio_response_bytes``.
BYTES_BUCKETS: Final[tuple[float, ...]] = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000)

#: Istio's standard label names, in the order they are rendered.
LABEL_NAMES: Final[tuple[str, ...]] = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)

REQUESTS_TOTAL: Final = "istio_requests_total"
REQUEST_DURATION: Final = "istio_request_duration_milliseconds"
REQUEST_BYTES: Final = "istio_request_bytes"
RESPONSE_BYTES: Final = "istio_response_bytes"

HELP: Final[Mapping[str, str]] = {
    REQUESTS_TOTAL: "Requests handled, by source and destination (Istio standard metric).",
    REQUEST_DURATION: "Request duration in milliseconds (Istio standard metric).",
    REQUEST_BYTES: "Request body size in bytes (Istio standard metric).",
    RESPONSE_BYTES: "Response body size in bytes (Istio standard metric).",
}

UNKNOWN: Final = "unknown"
#: Istio's names for traffic to hosts outside the registry (``ALLOW_ANY``) and traffic refused (``REGISTRY_ONLY``).
PASSTHROUGH_CLUSTER: Final = "PassthroughCluster"
BLACKHOLE_CLUSTER: Final = "BlackHoleCluster"
_OVERFLOW_KEY: Final = ("__overflow__",)


class _Series:
    """Mutable aggregation of one label set (outbound or inbound)."""

    __slots__ = (
        "attrs", "count", "dur_counts", "dur_sum", "labels",
        "req_counts", "req_sum", "resp_counts", "resp_sum",
    )

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.attrs: dict[str, str] = dict(zip(LABEL_NAMES, labels, strict=True))
        self.count = 0
        self.dur_counts = [0] * (len(DURATION_BUCKETS_MS) + 1)  # last slot: above every bound (+Inf)
        self.dur_sum = 0.0
        self.req_counts = [0] * (len(BYTES_BUCKETS) + 1)
        self.req_sum = 0
        self.resp_counts = [0] * (len(BYTES_BUCKETS) + 1)
        self.resp_sum = 0


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One histogram of one series: ``buckets`` are cumulative counts per bound, ``+Inf`` is ``count``."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    sum: float
    count: int


@dataclass(frozen=True, slots=True)
class SeriesSnapshot:
    """A consistent copy of one label set's values (what the Prometheus renderer reads)."""

    labels: tuple[tuple[str, str], ...]  # (name, value) in LABEL_NAMES order
    requests: int
    duration_ms: HistogramSnapshot
    request_bytes: HistogramSnapshot
    response_bytes: HistogramSnapshot


def _cumulative(counts: Sequence[int]) -> tuple[int, ...]:
    out: list[int] = []
    total = 0
    for c in counts[:-1]:
        total += c
        out.append(total)
    return tuple(out)


def _split_fqdn(fqdn: str) -> tuple[str, str]:
    """``reviews.default.svc.cluster.local`` → ``("reviews", "default")``; unknown parts are ``"unknown"``."""
    parts = fqdn.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[0], parts[1]
    return (parts[0] or UNKNOWN), UNKNOWN


def _unrouted_service(record: OutboundRecord) -> str:
    """The service label of a request no configured destination took, from a fixed set of names.

    Traffic passed through to a host outside the registry (``ALLOW_ANY``) is
    ``PassthroughCluster`` and traffic refused by ``REGISTRY_ONLY`` is
    ``BlackHoleCluster``, the clusters Istio reports it under; anything else
    (no route matched, …) is ``unknown``. The Host the caller sent is never a
    label value: a thousand distinct hosts must not make a thousand series.
    """
    if record.upstream_cluster == PASSTHROUGH_CLUSTER:
        return PASSTHROUGH_CLUSTER
    if record.status == 502 and record.response_flags == "NR":
        return BLACKHOLE_CLUSTER
    return UNKNOWN


class IstioMetrics:
    """A telemetry sink keeping Istio's standard metrics for one workload.

    ``workload_name``, ``namespace`` and ``labels`` (the pod labels: ``app``,
    ``version``, optionally ``service.istio.io/canonical-name`` /
    ``canonical-revision``) identify this process: they are the ``source_*``
    labels of outbound requests (``reporter="source"``) and the
    ``destination_*`` labels of inbound ones (``reporter="destination"``).
    The peer's workload identity is not exchanged in process, so those labels
    are ``"unknown"``, except that an outbound request's destination service,
    its namespace and ``destination_version`` (the routed subset) are known.

    ``service`` is the fqdn of this workload's own service (inbound
    ``destination_service``); by default ``<app label or workload>.<namespace>
    .svc.<cluster_domain>``. ``meter_provider`` defaults to the global one;
    ``otel=False`` registers no OpenTelemetry instruments at all.
    ``max_series`` bounds cardinality: once reached, new label sets are counted
    under one series whose destination is ``"unknown"``.

    Example::

        >>> m = IstioMetrics("productpage-v1", "default", {"app": "productpage", "version": "v1"}, otel=False)
        >>> m.outbound(OutboundRecord(0, 0.004, "GET", "http", "reviews:9080", "/r", 200, "-",
        ...            destination_service="reviews.default.svc.cluster.local", destination_subset="v1"))
        >>> [(dict(s.labels)["destination_version"], s.requests) for s in m.snapshot()]
        [('v1', 1)]
    """

    def __init__(
        self,
        workload_name: str,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        *,
        cluster_id: str = "Kubernetes",
        service: str | None = None,
        cluster_domain: str = "cluster.local",
        meter_provider: MeterProvider | None = None,
        otel: bool = True,
        otel_histograms: bool = False,
        max_series: int = 10_000,
    ) -> None:
        labels = dict(labels or {})
        app = labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN
        version = labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN
        canonical = labels.get("service.istio.io/canonical-name") or (
            app if app != UNKNOWN else workload_name
        )
        revision = labels.get("service.istio.io/canonical-revision") or (
            version if version != UNKNOWN else "latest"
        )
        self.workload_name = workload_name
        self.namespace = namespace
        self.cluster_id = cluster_id
        self.service = service or f"{canonical}.{namespace}.svc.{cluster_domain}"
        self.max_series = max_series
        # (workload, canonical service, canonical revision, namespace, principal, app, version, cluster)
        self._self_identity = (workload_name, canonical, revision, namespace, UNKNOWN, app, version, cluster_id)
        self._lock = threading.Lock()
        self._outbound: dict[tuple[object, ...], _Series] = {}
        self._inbound: dict[tuple[object, ...], _Series] = {}
        self._histograms: tuple[otel_metrics.Histogram, otel_metrics.Histogram, otel_metrics.Histogram] | None = None
        # Called before every read: the mesh sets it to finish the records it still has queued.
        self.before_read: Callable[[], None] | None = None
        if otel:
            self._register_otel(meter_provider, otel_histograms)

    # ------------------------------------------------------------------ OpenTelemetry

    def _register_otel(self, meter_provider: MeterProvider | None, histograms: bool) -> None:
        provider = meter_provider if meter_provider is not None else otel_metrics.get_meter_provider()
        with _REGISTRY_LOCK:
            shared = _REGISTRY.get(provider)
            if shared is None:
                shared = _REGISTRY[provider] = _SharedInstruments(provider)
        shared.sinks.add(self)
        if histograms:
            self._histograms = shared.histograms()

    def _observations(self) -> list[tuple[int, dict[str, str]]]:
        if self.before_read is not None:
            self.before_read()
        with self._lock:
            return [(s.count, s.attrs) for s in self._all_series()]

    # ------------------------------------------------------------------ TelemetrySink

    def outbound(self, record: OutboundRecord) -> None:
        """Count one outbound request (``reporter="source"``)."""
        # Only values from configuration (or a fixed name) become labels: never the caller's Host.
        key = (record.destination_service or _unrouted_service(record), record.destination_subset,
               record.status, record.response_flags, record.grpc_status)
        series = self._outbound.get(key)
        if series is None:
            series = self._new_series(self._outbound, key, lambda: self._outbound_labels(record))
        self._add(series, record.duration_s * 1000.0, record.request_bytes, record.response_bytes)

    def inbound(self, record: InboundRecord) -> None:
        """Count one inbound request (``reporter="destination"``)."""
        key = (record.status, record.response_flags, record.grpc_status)
        series = self._inbound.get(key)
        if series is None:
            series = self._new_series(self._inbound, key, lambda: self._inbound_labels(record))
        self._add(series, record.duration_s * 1000.0, record.request_bytes, record.response_bytes)

    def _add(self, s: _Series, ms: float, req: int, resp: int) -> None:
        with self._lock:
            s.count += 1
            s.dur_counts[bisect_left(DURATION_BUCKETS_MS, ms)] += 1
            s.dur_sum += ms
            s.req_counts[bisect_left(BYTES_BUCKETS, req)] += 1
            s.req_sum += req
            s.resp_counts[bisect_left(BYTES_BUCKETS, resp)] += 1
            s.resp_sum += resp
        hist = self._histograms
        if hist is not None:
            attrs = s.attrs
            hist[0].record(ms, attrs)
            hist[1].record(req, attrs)
            hist[2].record(resp, attrs)

    def _new_series(
        self, table: dict[tuple[object, ...], _Series], key: tuple[object, ...],
        build: Callable[[], tuple[str, ...]],
    ) -> _Series:
        with self._lock:
            series = table.get(key)
            if series is not None:
                return series
            if len(self._outbound) + len(self._inbound) >= self.max_series:
                overflow = table.get(_OVERFLOW_KEY)
                if overflow is None:
                    labels = list(build())
                    for name in ("destination_service", "destination_service_name", "destination_service_namespace",
                                 "destination_version", "response_code", "grpc_response_status", "response_flags"):
                        labels[LABEL_NAMES.index(name)] = UNKNOWN
                    overflow = table[_OVERFLOW_KEY] = _Series(tuple(labels))
                return overflow
            series = table[key] = _Series(build())
            return series

    # ------------------------------------------------------------------ labels

    def _outbound_labels(self, r: OutboundRecord) -> tuple[str, ...]:
        workload, canonical, revision, namespace, principal, app, version, cluster = self._self_identity
        if r.destination_service:
            service = r.destination_service
            service_name, service_namespace = _split_fqdn(service)
        else:  # PassthroughCluster / BlackHoleCluster as Istio names them, else "unknown"
            service = service_name = _unrouted_service(r)
            service_namespace = UNKNOWN
        return (
            "source",
            workload, canonical, revision, namespace, principal, app, version, cluster,
            UNKNOWN,  # destination_workload: the peer's identity is not exchanged
            service_namespace,  # destination_workload_namespace: the service's namespace
            UNKNOWN,  # destination_principal
            UNKNOWN,  # destination_app
            r.destination_subset or UNKNOWN,  # destination_version: the routed subset
            service,
            UNKNOWN, UNKNOWN,  # destination canonical service / revision
            service_name, service_namespace,
            UNKNOWN,  # destination_cluster
            *_protocol_labels(r.status, r.grpc_status, r.response_flags),
            UNKNOWN,  # connection_security_policy: not known on the client side
        )

    def _inbound_labels(self, r: InboundRecord) -> tuple[str, ...]:
        workload, canonical, revision, namespace, principal, app, version, cluster = self._self_identity
        service_name, service_namespace = _split_fqdn(self.service)
        return (
            "destination",
            UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN,  # source_*
            workload, namespace, principal, app, version,
            self.service, canonical, revision, service_name, service_namespace, cluster,
            *_protocol_labels(r.status, r.grpc_status, r.response_flags),
            "none",  # plain-text in-process: no mTLS
        )

    # ------------------------------------------------------------------ reading

    def _all_series(self) -> Iterator[_Series]:
        yield from self._outbound.values()
        yield from self._inbound.values()

    def snapshot(self) -> list[SeriesSnapshot]:
        """A consistent copy of every series (outbound first, then inbound), for exporters."""
        if self.before_read is not None:
            self.before_read()
        with self._lock:
            raw = [
                (s.labels, s.count, list(s.dur_counts), s.dur_sum, list(s.req_counts), s.req_sum,
                 list(s.resp_counts), s.resp_sum)
                for s in self._all_series()
            ]
        return [
            SeriesSnapshot(
                labels=tuple(zip(LABEL_NAMES, labels, strict=True)),
                requests=count,
                duration_ms=HistogramSnapshot(DURATION_BUCKETS_MS, _cumulative(dc), ds, count),
                request_bytes=HistogramSnapshot(BYTES_BUCKETS, _cumulative(qc), float(qs), count),
                response_bytes=HistogramSnapshot(BYTES_BUCKETS, _cumulative(pc), float(ps), count),
            )
            for labels, count, dc, ds, qc, qs, pc, ps in raw
        ]

    def series_count(self) -> int:
        """How many label sets are kept (outbound + inbound)."""
        return len(self._outbound) + len(self._inbound)


def _protocol_labels(status: int, grpc_status: int | None, flags: str) -> tuple[str, str, str, str]:
    """``request_protocol``, ``response_code``, ``grpc_response_status``, ``response_flags``."""
    return (
        "http" if grpc_status is None else "grpc",
        str(status),
        "" if grpc_status is None else str(grpc_status),
        flags or "-",
    )


class _SharedInstruments:
    """The instruments of one ``MeterProvider``, shared by every :class:`IstioMetrics` using it.

    The SDK returns the first instrument when a name is registered again (and
    drops the new callback), so one observable counter reports all sinks.
    """

    def __init__(self, provider: MeterProvider) -> None:
        self.sinks: weakref.WeakSet[IstioMetrics] = weakref.WeakSet()
        self._meter = provider.get_meter("meshlib.istio")
        self._histograms: tuple[otel_metrics.Histogram, otel_metrics.Histogram, otel_metrics.Histogram] | None = None
        self._meter.create_observable_counter(
            REQUESTS_TOTAL, callbacks=[self._observe], unit="1", description=HELP[REQUESTS_TOTAL],
        )

    def histograms(self) -> tuple[otel_metrics.Histogram, otel_metrics.Histogram, otel_metrics.Histogram]:
        if self._histograms is None:
            meter = self._meter
            self._histograms = (
                meter.create_histogram(REQUEST_DURATION, unit="ms", description=HELP[REQUEST_DURATION],
                                       explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS),
                meter.create_histogram(REQUEST_BYTES, unit="By", description=HELP[REQUEST_BYTES],
                                       explicit_bucket_boundaries_advisory=BYTES_BUCKETS),
                meter.create_histogram(RESPONSE_BYTES, unit="By", description=HELP[RESPONSE_BYTES],
                                       explicit_bucket_boundaries_advisory=BYTES_BUCKETS),
            )
        return self._histograms

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        totals: dict[tuple[str, ...], tuple[int, dict[str, str]]] = {}
        for sink in list(self.sinks):
            for count, attrs in sink._observations():
                key = tuple(attrs.values())
                previous = totals.get(key)
                totals[key] = (count + (previous[0] if previous else 0), attrs)
        return [Observation(count, attrs) for count, attrs in totals.values()]


_REGISTRY_LOCK = threading.Lock()
_REGISTRY: weakref.WeakKeyDictionary[MeterProvider, _SharedInstruments] = weakref.WeakKeyDictionary()
