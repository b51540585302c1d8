"""Snapshot cache: per node group, one consistent set of resources, each serialised once.

Follows go-control-plane's ``cache/v3`` design: a snapshot holds, per type URL,
a version string and the resources by name; the server only picks from it.
Differences, chosen for fan-out cost:

- each resource is packed into a ``google.protobuf.Any`` **once per version**
  and also pre-encoded as the bytes of one ``DiscoveryResponse.resources``
  entry (and, lazily, one ``DeltaDiscoveryResponse.resources`` entry). Every
  stream of every node in the group shares those objects; a push to a stream
  is a byte concatenation plus its nonce (protobuf messages may be
  concatenated field by field);
- the per-type version is derived from the content (a hash over the
  per-resource hashes), so publishing identical resources is not a change and
  a type whose resources did not change keeps its version and its objects;
- the per-resource version (delta xDS ``Resource.version``) is the xxh3 hash
  of the resource's deterministic serialisation.

Like go-control-plane's ``SnapshotCache``, the cache is keyed by a node group
computed from the ``Node`` (istiod's "proxy type"/client kind by default), and
notifies watchers (streams) of a group when its snapshot is replaced. All
methods must be called from the event loop thread that runs the streams.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import xxhash
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from meshlib.controlplane.nodes import client_kind
from meshlib.controlplane.references import ReferenceExtractor, default_references
from meshlib.controlplane.typeurls import short_name

__all__ = [
    "InconsistentSnapshot",
    "PackedResource",
    "ResourceSnapshot",
    "SnapshotCache",
    "TypeResources",
]

Resources = Mapping[str, Mapping[str, Any]]
"""``{type_url: {name: protobuf Message}}`` as produced by the translator."""

_MAX_BODY_MEMO = 256


class InconsistentSnapshot(ValueError):
    """A snapshot names resources it does not contain (see :meth:`ResourceSnapshot.consistent`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("inconsistent snapshot: " + "; ".join(problems))
        self.problems = problems


class PackedResource:
    """One resource at one version: the shared ``Any`` and its pre-encoded response entries."""

    __slots__ = ("_delta_entry", "any", "name", "sotw_entry", "version")

    def __init__(self, name: str, type_url: str, serialized: bytes) -> None:
        self.name = name
        self.version: str = xxhash.xxh3_64_hexdigest(serialized)
        self.any = any_pb2.Any(type_url=type_url, value=serialized)
        # Field 2 of DiscoveryResponse, ready to be concatenated into any response.
        self.sotw_entry: bytes = discovery_pb2.DiscoveryResponse(resources=[self.any]).SerializeToString()
        self._delta_entry: bytes | None = None

    @property
    def delta_entry(self) -> bytes:
        """Field 2 of DeltaDiscoveryResponse (a ``Resource`` with name and version), built on first use."""
        if self._delta_entry is None:
            wrapped = discovery_pb2.Resource(name=self.name, version=self.version, resource=self.any)
            self._delta_entry = discovery_pb2.DeltaDiscoveryResponse(resources=[wrapped]).SerializeToString()
        return self._delta_entry


class TypeResources:
    """All resources of one type in a snapshot, with the type's version."""

    __slots__ = ("_bodies", "_versions_of", "resources", "type_url", "version")

    def __init__(self, type_url: str, resources: Mapping[str, PackedResource]) -> None:
        self.type_url = type_url
        self.resources: Mapping[str, PackedResource] = resources
        digest = xxhash.xxh3_64()
        for name in sorted(resources):
            digest.update(f"{name}\0{resources[name].version}\n".encode())
        self.version: str = digest.hexdigest()
        self._bodies: dict[frozenset[str] | None, bytes] = {}
        self._versions_of: dict[frozenset[str], tuple[tuple[str, str], ...]] = {}

    def versions_of(self, names: frozenset[str]) -> tuple[tuple[str, str], ...]:
        """``(name, version)`` of the named resources that exist, sorted; memoised per name set.

        A named subscription compares it with what it was last sent. Memoised,
        ten thousand streams asking for the same names hold one tuple, not ten
        thousand (which the garbage collector would walk on every full pass).
        """
        key = self._versions_of.get(names)
        if key is None:
            have = self.resources
            key = tuple((n, have[n].version) for n in sorted(names) if n in have)
            if len(self._versions_of) >= _MAX_BODY_MEMO:
                self._versions_of.clear()
            self._versions_of[names] = key
        return key

    def sotw_body(self, names: frozenset[str] | None) -> bytes:
        """A DiscoveryResponse without nonce for ``names`` (None = all), memoised per name set.

        Streams subscribed to the same names (every wildcard stream, every grpcio
        stream for the same target) get the same ``bytes`` object.
        """
        body = self._bodies.get(names)
        if body is None:
            head = discovery_pb2.DiscoveryResponse(version_info=self.version, type_url=self.type_url)
            chosen = self.resources.values() if names is None else (
                self.resources[n] for n in sorted(names) if n in self.resources
            )
            body = head.SerializeToString() + b"".join(r.sotw_entry for r in chosen)
            if len(self._bodies) >= _MAX_BODY_MEMO:
                self._bodies.clear()
            self._bodies[names] = body
        return body


class ResourceSnapshot:
    """An immutable set of resources by type URL, plus the names they reference."""

    __slots__ = ("_empty", "references", "types")

    def __init__(self, types: Mapping[str, TypeResources], references: Mapping[str, frozenset[str]]) -> None:
        self.types: Mapping[str, TypeResources] = types
        self.references: Mapping[str, frozenset[str]] = references
        self._empty: dict[str, TypeResources] = {}

    @classmethod
    def build(
        cls,
        resources: Resources,
        *,
        previous: ResourceSnapshot | None = None,
        references: ReferenceExtractor = default_references,
    ) -> ResourceSnapshot:
        """Serialise ``resources`` once, reusing ``previous``'s objects for unchanged resources/types."""
        types: dict[str, TypeResources] = {}
        refs: dict[str, set[str]] = {}
        for type_url, by_name in resources.items():
            old = previous.types.get(type_url) if previous is not None else None
            packed: dict[str, PackedResource] = {}
            for name, message in by_name.items():
                for ref_type, ref_name in references(type_url, message):
                    refs.setdefault(ref_type, set()).add(ref_name)
                serialized = message.SerializeToString(deterministic=True)
                resource = PackedResource(name, type_url, serialized)
                kept = old.resources.get(name) if old is not None else None
                packed[name] = kept if kept is not None and kept.version == resource.version else resource
            fresh = TypeResources(type_url, packed)
            types[type_url] = old if old is not None and old.version == fresh.version else fresh
        return cls(types, {t: frozenset(n) for t, n in refs.items()})

    def get(self, type_url: str) -> TypeResources:
        """The resources of ``type_url``; a type the snapshot lacks is empty (so clients get an answer)."""
        found = self.types.get(type_url)
        if found is None:
            found = self._empty.get(type_url)
            if found is None:
                found = self._empty[type_url] = TypeResources(type_url, {})
        return found

    def version(self, type_url: str) -> str:
        return self.get(type_url).version

    def consistent(self) -> list[str]:
        """Problems (empty when consistent): every referenced name must exist in this snapshot."""
        problems = []
        for type_url, names in sorted(self.references.items()):
            have = self.get(type_url).resources
            missing = sorted(n for n in names if n not in have)
            if missing:
                problems.append(f"{short_name(type_url)} resources referenced but missing: {', '.join(missing)}")
        return problems


Watcher = Callable[[], None]

# A push to thousands of streams allocates per stream (its response, gRPC's write operations) while
# every stream's objects are alive: the cyclic collector then runs full passes over the whole heap
# (~1 s each with 10,000 streams on a slow core) in the middle of the push. It is paused for the push
# (reference counting still frees everything), at most this long.
FANOUT_GC_PAUSE_STREAMS = 1000
FANOUT_GC_PAUSE_S = 2.0


def _pause_gc_for_fanout() -> None:
    import asyncio

    from meshlib.config.gc_pause import pause_gc

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # published from outside the loop: no timer to end a pause with
        return
    loop.call_later(FANOUT_GC_PAUSE_S, pause_gc())


class SnapshotCache:
    """Snapshots by node group; streams watch their group and re-read it when told."""

    def __init__(
        self,
        node_group: Callable[[Any], str] = client_kind,
        *,
        references: ReferenceExtractor = default_references,
        on_missing: Callable[[str], None] | None = None,
    ) -> None:
        self._node_group = node_group
        self._references = references
        self._on_missing = on_missing
        self._snapshots: dict[str, ResourceSnapshot] = {}
        self._watchers: dict[str, dict[int, Watcher]] = {}
        self._next_watch = 0

    def group_of(self, node: Any) -> str:
        """The group key of an ``envoy.config.core.v3.Node``."""
        return self._node_group(node)

    def groups(self) -> list[str]:
        """Groups that have a snapshot or a watcher."""
        return sorted(set(self._snapshots) | {g for g, w in self._watchers.items() if w})

    def snapshot(self, group: str) -> ResourceSnapshot | None:
        return self._snapshots.get(group)

    def set_snapshot(self, group: str, snapshot: ResourceSnapshot) -> None:
        """Replace the group's snapshot and wake its watchers (they diff by version themselves)."""
        previous = self._snapshots.get(group)
        self._snapshots[group] = snapshot
        if previous is not None and all(
            previous.types.get(t) is snapshot.types.get(t) for t in set(previous.types) | set(snapshot.types)
        ):
            return  # nothing changed: every type kept its object, so no stream has anything to send
        watchers = list(self._watchers.get(group, {}).values())
        if len(watchers) >= FANOUT_GC_PAUSE_STREAMS:
            _pause_gc_for_fanout()
        for watcher in watchers:
            watcher()

    def set_resources(self, group: str, resources: Resources, *, require_consistent: bool = False) -> ResourceSnapshot:
        """Build a snapshot from messages (reusing unchanged objects of the current one) and publish it."""
        snapshot = ResourceSnapshot.build(resources, previous=self._snapshots.get(group), references=self._references)
        if require_consistent and (problems := snapshot.consistent()):
            raise InconsistentSnapshot(problems)
        self.set_snapshot(group, snapshot)
        return snapshot

    def clear(self, group: str) -> None:
        self._snapshots.pop(group, None)

    def watch(self, group: str, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher`` (synchronously, cheap) whenever ``group``'s snapshot changes; returns cancel."""
        self._next_watch += 1
        key = self._next_watch
        self._watchers.setdefault(group, {})[key] = watcher
        if group not in self._snapshots and self._on_missing is not None:
            self._on_missing(group)

        def cancel() -> None:
            watchers = self._watchers.get(group)
            if watchers is not None:
                watchers.pop(key, None)
                if not watchers:
                    del self._watchers[group]

        return cancel
