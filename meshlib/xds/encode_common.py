"""Small proto builders shared by the encoders (durations, percentages, metadata)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

# filter_metadata key for meshlib's own extensions (Envoy keeps and ignores it).
MESHLIB_KEY = "meshlib"
# filter_metadata key istiod writes (config provenance on routes, services on clusters).
ISTIO_KEY = "istio"
MILLION = percent_pb2.FractionalPercent.MILLION


# google.protobuf.Duration's range; validation keeps durations far inside it (Go's ~292 years).
MAX_DURATION_SECONDS = 315_576_000_000


def duration(seconds: float) -> duration_pb2.Duration:
    """``seconds`` as a Duration, clamped to [0, protobuf's maximum] so encoding never raises."""
    if not seconds > 0:  # also NaN
        return duration_pb2.Duration()
    if seconds >= MAX_DURATION_SECONDS:  # also inf
        return duration_pb2.Duration(seconds=MAX_DURATION_SECONDS)
    nanos_total = round(seconds * 1_000_000_000)
    return duration_pb2.Duration(seconds=nanos_total // 1_000_000_000, nanos=nanos_total % 1_000_000_000)


def fractional(percent: float) -> percent_pb2.FractionalPercent:
    """0..100 → FractionalPercent per million (istiod's denominator for faults and mirrors)."""
    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000), denominator=MILLION)


def pack(message: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def set_meshlib_metadata(metadata: Any, values: Mapping[str, Any]) -> None:
    """Write ``values`` under ``filter_metadata["meshlib"]`` of an ``envoy.config.core.v3.Metadata``."""
    if values:
        metadata.filter_metadata[MESHLIB_KEY].update(values)
