"""Per-request cost of the telemetry sinks (µs per record), printed, never asserted.

Run: ``python bench/telemetry_cost.py``. Measures ``IstioMetrics.outbound`` with
no OpenTelemetry instruments, with the API's global (no-op proxy) provider,
with an SDK ``MeterProvider`` (observable counter only, the default), with
SDK histograms on (``otel_histograms=True``), and the access log (disabled
logger, JSON and text to a stream).
"""

from __future__ import annotations

import io
import logging
import os
import platform
import timeit
from collections.abc import Callable

from meshlib.tracing.access_log import AccessLog
from meshlib.tracing.metrics import IstioMetrics
from meshlib.tracing.record import OutboundRecord

LABELS = {"app": "productpage", "version": "v1"}


def make_records() -> list[OutboundRecord]:
    """A realistic mix: a few distinct label sets, varying durations and sizes."""
    records = []
    for i in range(64):
        status, flags = (503, "UF,URX") if i % 16 == 0 else (200, "-")
        records.append(OutboundRecord(
            start_time_unix_ns=1_700_000_000_000_000_000 + i * 1_000_000, duration_s=0.001 + i * 0.0003,
            method="GET", scheme="http", authority="reviews:9080", path=f"/reviews/{i}", status=status,
            response_flags=flags, route_name="jason",
            upstream_cluster="outbound|9080|v1|reviews.default.svc.cluster.local",
            destination_service="reviews.default.svc.cluster.local", destination_subset=("v1", "v2")[i % 2],
            upstream_host="10.0.0.7:9080", request_id="6b1c3f0e-8d6a-4d7e-9a51-0c4b1f2e3d4a", user_agent="bench",
            request_bytes=i * 10, response_bytes=300 + i,
        ))
    return records


def per_record_us(sink: Callable[[OutboundRecord], None], records: list[OutboundRecord], number: int) -> float:
    """Best of 5 runs of ``number`` passes over ``records``, in µs per record."""
    def run() -> None:
        for r in records:
            sink(r)
    run()  # warm the label cache
    best = min(timeit.repeat(run, number=number, repeat=5))
    return best / (number * len(records)) * 1e6


def main() -> None:
    """Print µs per record for every configuration."""
    records = make_records()
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()}")
    rows: list[tuple[str, float]] = [
        ("IstioMetrics, otel=False (Prometheus only)",
         per_record_us(IstioMetrics("productpage-v1", "default", LABELS, otel=False).outbound, records, 200)),
        ("IstioMetrics, global API provider (no SDK set)",
         per_record_us(IstioMetrics("productpage-v1", "default", LABELS).outbound, records, 200)),
    ]
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError:
        print("opentelemetry-sdk not installed: SDK rows skipped")
    else:
        provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        rows.append(("IstioMetrics, SDK provider (observable counter)",
                     per_record_us(IstioMetrics("p", "default", LABELS, meter_provider=provider).outbound,
                                   records, 200)))
        provider2 = MeterProvider(metric_readers=[InMemoryMetricReader()])
        rows.append(("IstioMetrics, SDK provider + otel_histograms=True",
                     per_record_us(IstioMetrics("p", "default", LABELS, meter_provider=provider2,
                                                otel_histograms=True).outbound, records, 5)))
    quiet = logging.getLogger("bench.access.quiet")
    quiet.setLevel(logging.WARNING)
    rows.append(("AccessLog, logger disabled for INFO", per_record_us(AccessLog(quiet).outbound, records, 200)))
    rows.append(("AccessLog, JSON to a stream",
                 per_record_us(AccessLog(io.StringIO()).outbound, records, 50)))
    rows.append(("AccessLog, text to a stream",
                 per_record_us(AccessLog(io.StringIO(), format="text").outbound, records, 50)))
    for name, us in rows:
        print(f"{name:55s} {us:7.2f} µs/record")


if __name__ == "__main__":
    main()
