"""Shared pieces of the xDS decoders: the error type and small proto readers.

Every decoder validates at the edge: anything meshlib cannot honour raises
:class:`XdsDecodeError` naming the resource and the field path, so the xDS
client can NACK with a precise detail and keep its last good snapshot.
Fields meshlib does not act on are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from envoy.type.v3 import percent_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from meshlib.errors import MeshError
from meshlib.xds.encode_common import ISTIO_KEY, MESHLIB_KEY
from meshlib.xds.type_urls import short_name

DENOMINATORS = {
    percent_pb2.FractionalPercent.HUNDRED: 100,
    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
    percent_pb2.FractionalPercent.MILLION: 1_000_000,
}
_OUTBOUND = re.compile(r"^outbound\|(\d+)\|([^|]*)\|([^|]+)$")


class XdsDecodeError(MeshError):
    """An xDS resource meshlib cannot accept. ``str()``: ``Cluster <name>: <field>: <message>``."""

    def __init__(self, type_url: str, resource_name: str, field_path: str, message: str) -> None:
        self.type_url = type_url
        self.resource_name = resource_name
        self.field_path = field_path
        self.message = message
        where = f"{short_name(type_url)} {resource_name}".rstrip()
        super().__init__(f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Where:
    """The resource being decoded, for error messages."""

    type_url: str
    name: str

    def error(self, path: str, message: str) -> XdsDecodeError:
        return XdsDecodeError(self.type_url, self.name, path, message)


# google.protobuf.Duration's valid range is [-315576000000s, 315576000000s]; a timeout is never negative.
_MAX_DURATION_SECONDS = 315_576_000_000.0


class InvalidDuration(XdsDecodeError):
    """A Duration Envoy refuses (negative, or outside protobuf's range), raised where the value is read;
    ``decode_resource`` re-raises it naming the resource, and the response is NACKed as Envoy NACKs it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__("", "", field, message)
        self.field = field


def seconds(value: Any, field: str = "") -> float:
    """A Duration in seconds; :class:`InvalidDuration` for one Envoy refuses (``DurationUtil``:
    a negative duration, or one outside google.protobuf.Duration's range)."""
    whole, nanos = int(value.seconds), int(value.nanos)
    if whole < 0 or nanos < 0:
        raise InvalidDuration(field, f"invalid duration: expected a positive duration, got {whole}s {nanos}ns")
    if whole > _MAX_DURATION_SECONDS or nanos > 999_999_999:
        raise InvalidDuration(field, f"duration out of range for google.protobuf.Duration: {whole}s {nanos}ns")
    return whole + nanos / 1e9


def optional_seconds(message: Any, field: str, path: str = "") -> float | None:
    """``message.field`` in seconds when set; ``path``: where ``message`` is, for an error's field path."""
    if not message.HasField(field):
        return None
    return seconds(getattr(message, field), f"{path}.{field}" if path else field)


def wrapped(message: Any, field: str, default: Any) -> Any:
    """The value of a ``google.protobuf.*Value`` wrapper field, or ``default`` when unset."""
    return getattr(message, field).value if message.HasField(field) else default


def fractional_percent(value: Any) -> float:
    """FractionalPercent → 0..100."""
    denominator = DENOMINATORS.get(value.denominator, 100)
    return min(100.0, float(value.numerator) * 100.0 / denominator)


def metadata(message: Any, key: str = MESHLIB_KEY) -> dict[str, Any]:
    """``metadata.filter_metadata[key]`` as a plain dict ({} when absent)."""
    if not message.HasField("metadata"):
        return {}
    found = message.metadata.filter_metadata.get(key)
    if found is None:
        return {}
    result: dict[str, Any] = json_format.MessageToDict(found)
    return result


def istio_metadata(message: Any) -> dict[str, Any]:
    return metadata(message, ISTIO_KEY)


def unpack(packed: Any, expected: type[Message], where: Where, path: str) -> Any:
    """Unpack an ``Any`` as ``expected``; a wrong type or bad bytes → XdsDecodeError."""
    want = expected.DESCRIPTOR.full_name
    got = packed.type_url.rsplit("/", 1)[-1]
    if got != want:
        raise where.error(path, f"expected {want}, got {got or 'an empty type_url'}")
    out = expected()
    try:
        out.ParseFromString(packed.value)
    except DecodeError as exc:
        raise where.error(path, f"cannot parse {want}: {exc}") from None
    return out


def parse_cluster_name(name: str) -> tuple[str, int, str] | None:
    """``outbound|<port>|<subset>|<fqdn>`` → (fqdn, port, subset); None for other names."""
    found = _OUTBOUND.match(name)
    if found is None:
        return None
    return found.group(3), int(found.group(1)), found.group(2)


def as_int(value: Any, default: int = 0) -> int:
    """A Struct number (always a float) → int."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
