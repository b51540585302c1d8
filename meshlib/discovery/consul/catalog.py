"""``/v1/health/service/NAME`` entries → endpoints, with Consul's own health semantics.

The rules are those Consul applies when it builds Envoy endpoints
(``agent/xds/endpoints.go``, ``calculateEndpointHealthAndWeight``), over
*every* check of an entry — the service's checks, node-level checks such as
``serfHealth``, and the maintenance checks (``_node_maintenance``,
``_service_maintenance:<id>``, always critical):

- any ``critical`` check → the instance is unhealthy (left out);
- a subset with ``OnlyPassing`` → any check not ``passing`` makes it unhealthy;
- the weight is ``Weights.Passing``, or ``Weights.Warning`` when a check is
  ``warning``; ``Weights`` defaults to ``{"Passing": 1, "Warning": 1}``;
  a weight below 1 makes the instance unhealthy, above 128 is capped at 128.

Consul sends unhealthy endpoints to Envoy marked UNHEALTHY and disables the
panic threshold, so they never take traffic; meshlib simply leaves them out.

The address is ``Service.Address``, else ``Node.Address``. For another
datacenter's instances the WAN address is preferred (``Service.TaggedAddresses
.wan``, then ``Node.TaggedAddresses.wan``), as Consul does across datacenters;
tagged-address keys are read as written or in lower case. Locality comes from
``Service.Locality``, else ``Node.Locality`` (Region/Zone). Labels are the
``Service.Meta`` pairs plus ``consul.tag/<tag>: "true"`` per tag, so Istio
overlay subsets can select on them.

A malformed entry (no usable address or port, a socket-path service) is
skipped with a problem naming it; the others are used.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshlib.config.model import Endpoint, Labels, Locality
from meshlib.discovery.consul.fields import problem
from meshlib.errors import ConfigProblem

MAX_WEIGHT = 128
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 256
MAX_INSTANCES = 100_000
TAG_LABEL_PREFIX = "consul.tag/"
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class Instance:
    """One service instance from a health entry, before subset filtering."""

    service_id: str
    node: str
    address: str
    port: int
    passing_weight: int
    warning_weight: int
    any_critical: bool
    any_warning: bool
    all_passing: bool
    labels: Labels
    locality: Locality
    entry: Mapping[str, Any]  # the raw health entry (what a bexpr subset Filter reads)

    def endpoint(self, only_passing: bool = False, priority: int = 0) -> Endpoint | None:
        """The endpoint Consul would send as HEALTHY, or None when it would be UNHEALTHY."""
        if self.any_critical or (only_passing and not self.all_passing):
            return None
        weight = self.warning_weight if self.any_warning else self.passing_weight
        if weight < 1:
            return None
        return Endpoint(self.address, self.port, min(weight, MAX_WEIGHT), self.labels, self.locality, priority)


def parse_instances(
    service: str, entries: Sequence[Mapping[str, Any]], *, remote: bool = False
) -> tuple[list[Instance], list[ConfigProblem]]:
    """The usable instances of ``service`` and a problem per skipped entry (in entry order)."""
    instances: list[Instance] = []
    problems: list[ConfigProblem] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries[:MAX_INSTANCES]):
        try:
            instance = _instance(entry, remote)
        except _EntrySkipped as exc:
            problems.append(problem("health", service, f"[{index}].{exc.field}", exc.message))
            continue
        if instance is None:
            continue
        key = (instance.node, instance.service_id)
        if key in seen:
            continue  # the same instance listed twice
        seen.add(key)
        instances.append(instance)
    return instances, problems


class _EntrySkipped(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    """The key as Consul writes it, else in lower case (health.mdx's samples write some keys so)."""
    value = mapping.get(key)
    return mapping.get(key.lower()) if value is None else value


def _instance(entry: Any, remote: bool) -> Instance | None:
    if not isinstance(entry, Mapping):
        raise _EntrySkipped("", "a health entry must be a JSON object")
    node = _object(_get(entry, "Node"))
    svc = _object(_get(entry, "Service"))
    if not svc:
        raise _EntrySkipped("Service", "missing")
    kind = _get(svc, "Kind")
    if isinstance(kind, str) and kind not in ("", "typical"):
        return None  # a proxy or gateway registration, not the service itself
    if _get(svc, "SocketPath"):
        raise _EntrySkipped("Service.SocketPath", "unix-socket services cannot be dialled by meshlib")
    address, port = _address(svc, node, remote)
    weights = _object(_get(svc, "Weights"))
    passing = _weight(_get(weights, "Passing"), "Service.Weights.Passing") if weights else 1
    warning = _weight(_get(weights, "Warning"), "Service.Weights.Warning") if weights else 1
    any_critical = any_warning = False
    all_passing = True
    for check in _get(entry, "Checks") or ():
        status = _get(_object(check), "Status")
        if status == "critical":
            any_critical = True
        elif status == "warning":
            any_warning = True
        if status != "passing":
            all_passing = False
    service_id = _get(svc, "ID")
    return Instance(
        service_id=service_id if isinstance(service_id, str) else "",
        node=str(_get(node, "Node") or ""),
        address=address,
        port=port,
        passing_weight=passing,
        warning_weight=warning,
        any_critical=any_critical,
        any_warning=any_warning,
        all_passing=all_passing,
        labels=_labels(svc),
        locality=_locality(_object(_get(svc, "Locality")) or _object(_get(node, "Locality"))),
        entry=entry,
    )


def _weight(value: Any, field: str) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _EntrySkipped(field, "must be an integer")
    return int(value)


def _address(svc: Mapping[str, Any], node: Mapping[str, Any], remote: bool) -> tuple[str, int]:
    port = _get(svc, "Port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _EntrySkipped("Service.Port", f"must be between 1 and 65535, not {port!r}")
    candidates: list[tuple[str, Any, int]] = []
    if remote:
        wan = _object(_get(_object(_get(svc, "TaggedAddresses")), "wan"))
        if wan:
            wan_port = _get(wan, "Port")
            candidates.append(("Service.TaggedAddresses.wan.Address", _get(wan, "Address"),
                               wan_port if isinstance(wan_port, int) and 1 <= wan_port <= 65535 else port))
        node_wan = _get(_object(_get(node, "TaggedAddresses")), "wan")
        candidates.append(("Node.TaggedAddresses.wan", node_wan, port))
    candidates.append(("Service.Address", _get(svc, "Address"), port))
    candidates.append(("Node.Address", _get(node, "Address"), port))
    for field, value, number in candidates:
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not _valid_host(value):
            raise _EntrySkipped(field, f"not an IP address or host name: {value!r:.80}")
        return value, number
    raise _EntrySkipped("Node.Address", "no address (Service.Address and Node.Address are both empty)")


def _valid_host(value: str) -> bool:
    if _IPV4.fullmatch(value):
        return all(int(octet) <= 255 for octet in value.split("."))
    if ":" in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME.fullmatch(value))


def _labels(svc: Mapping[str, Any]) -> Labels:
    labels: dict[str, str] = {}
    meta = _object(_get(svc, "Meta"))
    for key, value in meta.items():
        if len(labels) >= MAX_LABELS:
            break
        if isinstance(key, str) and isinstance(value, str) and len(key) <= MAX_LABEL_KEY:
            labels[key] = value[:MAX_LABEL_VALUE]
    for tag in _get(svc, "Tags") or ():
        if len(labels) >= MAX_LABELS:
            break
        if isinstance(tag, str) and len(tag) <= MAX_LABEL_KEY:
            labels[TAG_LABEL_PREFIX + tag] = "true"
    return Labels(labels)


def _locality(raw: Mapping[str, Any]) -> Locality:
    region = _get(raw, "Region")
    zone = _get(raw, "Zone")
    return Locality(region if isinstance(region, str) else "", zone if isinstance(zone, str) else "")
