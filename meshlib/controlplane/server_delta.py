"""Incremental (delta) ADS protocol logic for one stream (``DeltaAggregatedResources``).

Follows the xDS spec's incremental variant and go-control-plane's delta server
(``pkg/server/delta/v3``):

- per type the session tracks what the client has: ``{name: resource version}``,
  seeded from ``initial_resource_versions`` (a reconnecting client lists what it
  already holds, so unchanged resources are not sent again);
- ``resource_names_subscribe``/``_unsubscribe`` change the named set; ``*`` is
  the explicit wildcard, and the first request for LDS/CDS with no names is
  the legacy wildcard; unsubscribing a name just forgets it (no removal sent);
- a response carries only resources whose version differs from the client's,
  and ``removed_resources`` for names the client has (or has just subscribed
  to) that the snapshot lacks — the spec's way to say "does not exist";
- ACK/NACK: a request echoing a nonce we sent, with or without
  ``error_detail``; a NACK is recorded and the rejected versions are not resent
  (the client's versions were already advanced, so only a new change is sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from meshlib.controlplane.cache import ResourceSnapshot
from meshlib.controlplane.server_sotw import ProtocolError, bind_node
from meshlib.controlplane.status import StreamStatus
from meshlib.controlplane.typeurls import WILDCARD_TYPES, push_rank

__all__ = ["DeltaSession"]

_MAX_OUTSTANDING = 32


@dataclass(slots=True)
class _DeltaSubscription:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    # What the client holds: name -> version; None = we told it the resource does not exist.
    known: dict[str, str | None] = field(default_factory=dict)
    dirty: bool = True  # subscription changed since the last diff
    snapshot_version: str = ""  # type version of the snapshot last diffed
    outstanding: dict[str, str] = field(default_factory=dict)  # nonce -> system version sent


class DeltaSession:
    """Per-stream delta state; feed it requests, ask it for responses after each wake-up."""

    def __init__(self, status: StreamStatus, group_of: Any, wildcard_types: frozenset[str] = WILDCARD_TYPES) -> None:
        self.status = status
        self.group: str | None = None
        self._group_of = group_of
        self._wildcard_types = wildcard_types
        self._subs: dict[str, _DeltaSubscription] = {}
        self._nonce = 0

    def on_request(self, request: Any) -> None:
        if self.group is None:
            self.group = bind_node(self.status, request, self._group_of, "DeltaDiscoveryRequest")
        type_url = request.type_url
        if not type_url:
            raise ProtocolError("DeltaDiscoveryRequest.type_url is required on an aggregated stream")
        sub = self._subs.get(type_url)
        type_status = self.status.type(type_url)
        if sub is None:
            sub = self._subs[type_url] = _DeltaSubscription()
            sub.wildcard = not request.resource_names_subscribe and type_url in self._wildcard_types
            sub.known.update(request.initial_resource_versions)
        nonce = request.response_nonce
        if nonce in sub.outstanding:
            version = sub.outstanding.pop(nonce)
            if request.HasField("error_detail"):
                type_status.nacked(version, nonce, request.error_detail.message or str(request.error_detail))
            else:
                type_status.acked(version, nonce)
        for name in request.resource_names_subscribe:
            if name == "*":
                sub.wildcard = True
            elif name not in sub.names:
                sub.names.add(name)
            sub.dirty = True
        for name in request.resource_names_unsubscribe:
            if name == "*":
                sub.wildcard = False
            else:
                sub.names.discard(name)
                if not sub.wildcard:
                    sub.known.pop(name, None)
        if request.resource_names_unsubscribe and not sub.wildcard:
            # Leaving wildcard mode: forget what is no longer subscribed, without telling the client.
            for name in [n for n in sub.known if n not in sub.names]:
                del sub.known[name]
        type_status.subscribed = None if sub.wildcard else sorted(sub.names)

    def owes_response(self) -> bool:
        """True when a request changed a subscription that has not been diffed since."""
        return any(sub.dirty for sub in self._subs.values())

    def responses(self, snapshot: ResourceSnapshot) -> list[bytes]:
        """Encoded DeltaDiscoveryResponses for what changed, in make-before-break order."""
        out = []
        for type_url in sorted(self._subs, key=push_rank):
            sub = self._subs[type_url]
            resources = snapshot.get(type_url)
            if not sub.dirty and resources.version == sub.snapshot_version:
                continue
            sub.dirty, sub.snapshot_version = False, resources.version
            have = resources.resources
            scope: set[str] = set(sub.names)
            if sub.wildcard:
                scope.update(have)
                scope.update(n for n, v in sub.known.items() if v is not None)
            changed = []
            removed = []
            for name in sorted(scope):
                resource = have.get(name)
                if resource is None:
                    if name not in sub.known or sub.known[name] is not None:
                        removed.append(name)
                        sub.known[name] = None
                elif sub.known.get(name) != resource.version:
                    changed.append(resource)
                    sub.known[name] = resource.version
            if not changed and not removed:
                continue
            self._nonce += 1
            nonce = str(self._nonce)
            head = discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=resources.version, type_url=type_url, nonce=nonce, removed_resources=removed
            )
            out.append(head.SerializeToString() + b"".join(r.delta_entry for r in changed))
            sub.outstanding[nonce] = resources.version
            while len(sub.outstanding) > _MAX_OUTSTANDING:  # a client that never ACKs must not grow this
                del sub.outstanding[next(iter(sub.outstanding))]
            self.status.type(type_url).sent(resources.version, nonce, len(changed))
        return out
