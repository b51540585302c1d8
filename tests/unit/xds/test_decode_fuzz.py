"""Fuzzing the xDS decoder: whatever bytes a server sends, decoding raises only XdsDecodeError.

That is the documented contract (``meshlib.errors``): the client NACKs with
the error's text; any other exception would take the ADS stream down. Two
generators: arbitrary bytes as each resource type, and byte-level mutations
of the real resources meshlib's own control plane encodes (which parse far
more often and so reach deeper into the decoder).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.xds import ClientKind, encode_resources, type_urls
from meshlib.xds.client_state import resource_name, unpack_any
from meshlib.xds.decode_common import XdsDecodeError
from meshlib.xds.decode_snapshot import decode_resource, snapshot_from_resources
from tests.unit.xds.helpers import rich_snapshot

TYPES = (type_urls.CLUSTER, type_urls.CLUSTER_LOAD_ASSIGNMENT, type_urls.ROUTE_CONFIGURATION, type_urls.LISTENER)
_ENCODED: dict[str, list[bytes]] = {}


def _encoded() -> dict[str, list[bytes]]:
    if not _ENCODED:
        for kind in (ClientKind.ENVOY, ClientKind.MESHLIB):
            for type_url, resources in encode_resources(rich_snapshot(), kind).items():
                _ENCODED.setdefault(type_url, []).extend(m.SerializeToString() for m in resources.values())
    return _ENCODED


def _decode(type_url: str, payload: bytes) -> Any:
    """What the client does with one resource: unpack, decode, assemble. Only XdsDecodeError may escape."""
    packed = any_pb2.Any(type_url=f"type.googleapis.com/{_full_name(type_url)}", value=payload)
    try:
        message = unpack_any(type_url, packed)
        name = resource_name(type_url, message)
        decode_resource(type_url, name, message)
        return snapshot_from_resources({type_url: {name: message}})
    except XdsDecodeError as exc:
        message = str(exc)  # names the resource and field
    assert message
    return None


def _full_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(type_url=st.sampled_from(TYPES), payload=st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_are_rejected(type_url: str, payload: bytes) -> None:
    _decode(type_url, payload)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    encoded = _encoded()
    type_url = draw(st.sampled_from(sorted(encoded)))
    original = bytearray(draw(st.sampled_from(encoded[type_url])))
    for _ in range(draw(st.integers(1, 6))):
        if not original:
            break
        at = draw(st.integers(0, len(original) - 1))
        action = draw(st.sampled_from(("flip", "byte", "cut", "dup")))
        if action == "flip":
            original[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "byte":
            original[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del original[at : at + draw(st.integers(1, 8))]
        else:
            original[at:at] = original[at : at + draw(st.integers(1, 16))]
    return type_url, bytes(original)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_mutated())
def test_mutated_real_resources_decode_or_are_rejected(case: tuple[str, bytes]) -> None:
    _decode(*case)


def test_the_unmutated_resources_decode() -> None:
    for type_url, payloads in _encoded().items():
        for payload in payloads:
            assert _decode(type_url, payload) is not None
