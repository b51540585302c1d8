"""Per-request cost of meshlib's CLIENT-span work, in µs and (with valgrind) instructions, never asserted.

    python bench/tracing_cost.py               # µs per request, best of 5
    python bench/tracing_cost.py --valgrind    # + instructions per request (callgrind; ~1 min)

Each row is the tracing work one outbound request does, outside the HTTP stack:

- ``sampled, SDK span``: mint ids, write traceparent, then record through the
  SDK (``start_span`` with preset ids + ``end``) into a ``BatchSpanProcessor``;
- ``sampled, lean record``: the same, the span built as a ``ReadableSpan`` and
  ended on the processor directly (:mod:`meshlib.tracing.lean_spans`);
- ``sampled out, Observation path``: what the aiohttp adapter does today for a
  span the sampler drops (``begin_client`` + ``inject``; the adapter also builds
  its ``Observation``);
- ``sampled out, begin_client_or_propagate``: ids and ``traceparent`` only (a root;
  then under an unsampled parent, as a handler's call under ``ParentBased``).

Rows run as root spans unless said otherwise; the row after the last is the loop
and the headers dict each request makes, to subtract.

Instruction counts come from two callgrind runs of the same row (N and 0
requests) subtracted, so start-up cancels out; they repeat to well under 1%.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from yarl import URL

from meshlib.tracing.observation import Observation
from meshlib.tracing.spans import Tracing

URL_ = URL("http://reviews:9080/reviews/1")


class DropExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _tracing(sampled: bool, *, lean: bool = True) -> Tracing:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    # A large queue and batch: the exporter thread stays asleep, so the row measures the request side only.
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 20,
                                                   max_export_batch_size=1 << 19, schedule_delay_millis=60_000))
    tracing = Tracing(provider)
    if not lean:
        assert tracing._lazy is not None
        tracing._lazy._lean = None  # the SDK span path, as before lean recording
    return tracing


def _observation() -> Observation:
    observation = Observation()
    observation.status, observation.attempts, observation.upstream_host = 200, 1, "10.0.0.7:9080"
    return observation


def sampled_row(lean: bool) -> Callable[[], None]:
    tracing = _tracing(True, lean=lean)
    observation = _observation()

    def request() -> None:
        headers: dict[str, str] = {}
        span = tracing.begin_client_or_propagate("GET", URL_, headers)
        assert span is not None
        observation.end_ns = span.start_ns + 1_000_000
        tracing.finish_client(span, observation)

    return request


def sampled_out_observation_row() -> Callable[[], None]:
    tracing = _tracing(False)

    def request() -> None:
        headers: dict[str, str] = {}
        observation = Observation()
        observation.span = tracing.begin_client("GET", URL_, 1)
        tracing.inject(observation.span, headers)

    return request


def sampled_out_fast_row() -> Callable[[], None]:
    tracing = _tracing(False)

    def request() -> None:
        tracing.begin_client_or_propagate("GET", URL_, {})

    return request


def under_unsampled_parent_row() -> Callable[[], None]:
    """A handler's outbound call while its (remote, unsampled) parent context is current."""
    tracing = _tracing(False)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True, trace_flags=trace.TraceFlags(0))))
    otel_context.attach(parent)  # the row's process does nothing else

    def request() -> None:
        tracing.begin_client_or_propagate("GET", URL_, {})

    return request


def nothing_row() -> Callable[[], None]:
    def request() -> None:
        {}  # noqa: B018 - the headers dict every row makes

    return request


ROWS: dict[str, Callable[[], Callable[[], None]]] = {
    "sampled, SDK span": lambda: sampled_row(lean=False),
    "sampled, lean record": lambda: sampled_row(lean=True),
    "sampled out, Observation path": sampled_out_observation_row,
    "sampled out, begin_client_or_propagate": sampled_out_fast_row,
    "  the same, under an unsampled parent": under_unsampled_parent_row,
    "(loop and headers dict only)": nothing_row,
}


def run_row(name: str, count: int) -> None:
    """The child process of --valgrind: ``count`` requests of one row, nothing else."""
    request = ROWS[name]()
    request()  # warm

    def loop() -> None:
        for _ in range(count):
            request()

    loop()


def instructions(name: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
             "--row", name, "--count", str(count)],
            capture_output=True, text=True, check=True,
        )
        found = re.search(r"Collected : (\d+)", result.stderr)
        assert found, result.stderr[-2000:]
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--valgrind", action="store_true", help="also count instructions per request")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        run_row(args.row, args.count)
        return
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()}; root spans (no parent)")
    for name, make in ROWS.items():
        request = make()
        loop = lambda request=request: [request() for _ in range(500)]  # type: ignore[misc]  # noqa: E731
        loop()
        us = min(timeit.repeat(loop, number=1, repeat=5)) / 500 * 1e6
        line = f"  {name:42s} {us:8.2f} µs"
        if args.valgrind:
            per = (instructions(name, 2000) - instructions(name, 0)) / 2000
            line += f"   {per / 1000:8.1f}k instructions"
        print(line, flush=True)


if __name__ == "__main__":
    main()
