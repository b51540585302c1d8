"""What the meshlib xDS client holds, independent of the wire protocol (no I/O here).

Modelled on grpc-go's xdsclient and Envoy's subscription logic:

- LDS and CDS are wildcard subscriptions; RDS follows the route configuration
  names the listeners reference and EDS the EDS service names of the
  clusters (Envoy derives them the same way while warming listeners/clusters);
- every resource of a response is decoded with :func:`decode_resource`
  before anything is accepted: one bad resource rejects the whole response
  (the client NACKs it) and the last good resources of that type stay;
- SotW: a LDS/CDS response is the complete set (absent names are removed);
  a RDS/EDS response only says what it holds — absence is not removal there
  (xDS spec); delta: ``removed_resources`` removes, also for RDS/EDS;
- a subscribed resource neither received nor declared removed within the
  initial fetch timeout is treated as absent (Envoy's
  ``initial_fetch_timeout``, grpc-go's does-not-exist timer);
- the first snapshot is built once every subscription is resolved (received,
  removed or timed out); a snapshot whose routes name clusters not received
  yet is held back (an eventual-consistency gap, not a NACK) and the previous
  one stays in force.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError, Message

from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.xds import type_urls
from meshlib.xds.decode_clusters import decode_cluster
from meshlib.xds.decode_common import XdsDecodeError
from meshlib.xds.decode_listeners import decode_listener
from meshlib.xds.decode_snapshot import dangling_clusters, decode_resource, snapshot_from_resources

__all__ = ["MESSAGE_TYPES", "WILDCARD_TYPES", "ClientState", "Rejected", "TypeState", "resource_name"]

MESSAGE_TYPES: dict[str, type[Message]] = {
    type_urls.LISTENER: listener_pb2.Listener,
    type_urls.ROUTE_CONFIGURATION: route_pb2.RouteConfiguration,
    type_urls.CLUSTER: cluster_pb2.Cluster,
    type_urls.CLUSTER_LOAD_ASSIGNMENT: endpoint_pb2.ClusterLoadAssignment,
}
WILDCARD_TYPES = (type_urls.CLUSTER, type_urls.LISTENER)
NAMED_TYPES = (type_urls.CLUSTER_LOAD_ASSIGNMENT, type_urls.ROUTE_CONFIGURATION)
# Subscribe in Envoy's order: CDS, then EDS for its clusters; LDS, then RDS for its listeners.
SUBSCRIBE_ORDER = (
    type_urls.CLUSTER,
    type_urls.CLUSTER_LOAD_ASSIGNMENT,
    type_urls.LISTENER,
    type_urls.ROUTE_CONFIGURATION,
)
_RESOURCE_WRAPPER = discovery_pb2.Resource.DESCRIPTOR.full_name


class Rejected(Exception):
    """A response was rejected; ``str()`` is the NACK's error detail."""


def resource_name(type_url: str, message: Any) -> str:
    """The name a resource is known by (ClusterLoadAssignment names itself ``cluster_name``)."""
    if type_url == type_urls.CLUSTER_LOAD_ASSIGNMENT:
        return str(message.cluster_name)
    return str(message.name)


def unpack_any(type_url: str, packed: Any) -> Message:
    """An ``Any`` from a response → the typed message; a wrong type raises XdsDecodeError."""
    got = packed.type_url.rsplit("/", 1)[-1]
    if got == _RESOURCE_WRAPPER:  # some servers wrap SotW resources in discovery.v3.Resource
        wrapper = discovery_pb2.Resource()
        wrapper.ParseFromString(packed.value)
        packed = wrapper.resource
        got = packed.type_url.rsplit("/", 1)[-1]
    cls = MESSAGE_TYPES[type_url]
    if got != cls.DESCRIPTOR.full_name:
        raise XdsDecodeError(type_url, "", "type_url", f"expected {cls.DESCRIPTOR.full_name}, got {got or 'nothing'}")
    message = cls()
    try:
        message.ParseFromString(packed.value)
    except DecodeError as exc:
        raise XdsDecodeError(type_url, "", "", f"cannot parse: {exc}") from None
    return message


@dataclass(slots=True)
class TypeState:
    """Per resource type: what was accepted, what was rejected, for ``mesh.status()``."""

    version_acked: str = ""
    last_nack: str | None = None
    last_nack_version: str = ""
    nacks: int = 0
    updated_at: float | None = None  # wall clock of the last accepted response
    resolved: bool = False  # wildcard types: a response (or the fetch timeout) has been seen

    def to_dict(self, count: int) -> dict[str, Any]:
        return {
            "version_acked": self.version_acked,
            "resources": count,
            "last_nack": self.last_nack,
            "last_nack_version": self.last_nack_version,
            "nacks": self.nacks,
            "updated_at": self.updated_at,
        }


class ClientState:
    """Accepted resources, subscriptions and the snapshot they build."""

    def __init__(self, workload: WorkloadIdentity) -> None:
        self.workload = workload
        self.resources: dict[str, dict[str, Message]] = {t: {} for t in SUBSCRIBE_ORDER}
        self.versions: dict[str, dict[str, str]] = {t: {} for t in SUBSCRIBE_ORDER}  # delta resource versions
        self.types: dict[str, TypeState] = {t: TypeState() for t in SUBSCRIBE_ORDER}
        # Named subscriptions and, of those, the names resolved (received, removed or timed out).
        self.names: dict[str, frozenset[str]] = {t: frozenset() for t in NAMED_TYPES}
        self.resolved: dict[str, set[str]] = {t: set() for t in NAMED_TYPES}
        self.timed_out: list[str] = []
        self.published: MeshSnapshot | None = None

    # ------------------------------------------------------------------ responses

    def decode_all(self, type_url: str, packed: Iterable[Any]) -> dict[str, Message]:
        """Decode every resource; Rejected lists every bad one (``Type name: field: message``)."""
        if type_url not in MESSAGE_TYPES:
            raise Rejected(f"unsupported resource type {type_url}")
        out: dict[str, Message] = {}
        problems: list[str] = []
        for i, item in enumerate(packed):
            try:
                message = unpack_any(type_url, item)
                name = resource_name(type_url, message)
                if name in out:
                    raise XdsDecodeError(type_url, name, "", "duplicate resource name in one response")
                decode_resource(type_url, name, message)
            except XdsDecodeError as exc:
                problems.append(str(exc) if exc.resource_name else f"{exc} (resources[{i}])")
                continue
            out[name] = message
        if problems:
            raise Rejected("\n".join(problems))
        return out

    def apply(
        self,
        type_url: str,
        updated: Mapping[str, Message],
        removed: Iterable[str],
        *,
        complete: bool,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        """Accept decoded resources; ``complete`` (SotW LDS/CDS) replaces the whole set.

        The result must still assemble: if the snapshot fails to build, the type
        is restored and Rejected raised (the response is NACKed).
        """
        before = dict(self.resources[type_url]), dict(self.versions[type_url])
        have = {} if complete else dict(self.resources[type_url])
        have.update(updated)
        for name in removed:
            have.pop(name, None)
            self.versions[type_url].pop(name, None)
        self.resources[type_url] = have
        if versions is not None:
            self.versions[type_url].update(versions)
        try:
            snapshot_from_resources(self.resources, self.workload)
        except XdsDecodeError as exc:
            self.resources[type_url], self.versions[type_url] = before
            raise Rejected(str(exc)) from None
        if type_url in self.resolved:
            self.resolved[type_url].update(updated)
            self.resolved[type_url].update(removed)
        self.types[type_url].resolved = True

    def accepted(self, type_url: str, version: str) -> None:
        state = self.types[type_url]
        state.version_acked, state.updated_at = version, time.time()

    def rejected(self, type_url: str, version: str, error: str) -> None:
        state = self.types[type_url]
        state.last_nack, state.last_nack_version, state.nacks = error, version, state.nacks + 1

    # ------------------------------------------------------------------ subscriptions

    def wanted(self, type_url: str) -> frozenset[str]:
        """The names RDS/EDS should be subscribed to, derived from the accepted listeners/clusters."""
        names: set[str] = set()
        if type_url == type_urls.ROUTE_CONFIGURATION:
            for message in self.resources[type_urls.LISTENER].values():
                found = decode_listener(message)
                if found is not None and found[1] is None:  # RDS, not inline
                    names.add(found[0].route_config)
        else:
            for message in self.resources[type_urls.CLUSTER].values():
                eds = decode_cluster(message).eds_name
                if eds is not None:
                    names.add(eds)
        return frozenset(names)

    def resubscribe(self, type_url: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """Move the subscription to :meth:`wanted`; (added, dropped) or None when unchanged."""
        new = self.wanted(type_url)
        old = self.names[type_url]
        if new == old:
            return None
        self.names[type_url] = new
        dropped = old - new
        for name in dropped:  # unsubscribed: forget it (Envoy drops resources nothing references)
            self.resources[type_url].pop(name, None)
            self.versions[type_url].pop(name, None)
        self.resolved[type_url] -= dropped
        return new - old, dropped

    def pending(self) -> list[str]:
        """What the first snapshot still waits for, as ``Type name`` strings."""
        out = [f"{type_urls.short_name(t)} (all)" for t in WILDCARD_TYPES if not self.types[t].resolved]
        for type_url in NAMED_TYPES:
            out.extend(
                f"{type_urls.short_name(type_url)} {n}" for n in sorted(self.names[type_url] - self.resolved[type_url])
            )
        return out

    def expire(self, type_url: str | None = None, name: str | None = None) -> list[str]:
        """Fetch timeout: treat what is still pending (all, or one name) as absent; returns what expired."""
        expired: list[str] = []
        for wildcard in WILDCARD_TYPES:
            if type_url in (None, wildcard) and not self.types[wildcard].resolved:
                self.types[wildcard].resolved = True
                expired.append(f"{type_urls.short_name(wildcard)} (all)")
        for named in NAMED_TYPES:
            if type_url not in (None, named):
                continue
            for missing in sorted(self.names[named] - self.resolved[named]):
                if name is None or name == missing:
                    self.resolved[named].add(missing)
                    expired.append(f"{type_urls.short_name(named)} {missing}")
        self.timed_out.extend(expired)
        return expired

    # ------------------------------------------------------------------ snapshots

    def version(self) -> str:
        """A snapshot version from the accepted content (stable across reconnects to the same config)."""
        digest = hashlib.sha256()
        for type_url in SUBSCRIBE_ORDER:
            for name, message in sorted(self.resources[type_url].items()):
                digest.update(type_url.encode())
                digest.update(name.encode())
                digest.update(message.SerializeToString(deterministic=True))
        return digest.hexdigest()[:12]

    def build(self, *, allow_dangling: bool) -> tuple[MeshSnapshot | None, list[str]]:
        """(snapshot to publish or None, dangling cluster names).

        None while subscriptions are pending, when nothing changed since the
        last publish, or when routes name clusters not received and
        ``allow_dangling`` is false.
        """
        if self.pending():
            return None, []
        version = self.version()
        if self.published is not None and self.published.version == version:
            return None, []
        snapshot = snapshot_from_resources(self.resources, self.workload, version)
        missing = dangling_clusters(snapshot)
        if missing and not allow_dangling:
            return None, missing
        self.published = snapshot
        return snapshot, missing

    def counts(self) -> dict[str, int]:
        return {t: len(r) for t, r in self.resources.items()}
