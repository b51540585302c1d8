"""State-of-the-world ADS protocol logic for one stream (``StreamAggregatedResources``).

Follows go-control-plane's SotW server (``pkg/server/sotw/v3``) and the xDS spec:

- the first request carries the ``Node``; later requests may omit it;
- per type: the last nonce sent; a request whose ``response_nonce`` is not the
  latest for its type is stale and ignored (the client has not seen our newest
  response yet), except on a type we never answered — a client reconnecting
  from another server instance may still carry that server's nonce;
- a request echoing our nonce with ``error_detail`` is a NACK: the error is
  kept and the same version is not sent again (it would be rejected again);
  without ``error_detail`` it is an ACK of ``version_info``;
- empty ``resource_names`` on the first request for LDS/CDS is the legacy
  wildcard, ``*`` the explicit one; other types are named;
- a new type or newly added names get an immediate answer with what exists
  (possibly empty, so a proxyless client can tell "does not exist" quickly);
  after that a type is sent only when its version changed and, for named
  subscriptions, when the subscribed resources themselves changed (istiod
  likewise skips EDS pushes to proxies whose clusters did not change).

The session does no I/O: :meth:`SotwSession.responses` returns encoded
``DiscoveryResponse`` bytes built from the snapshot's shared, pre-encoded
entries plus this stream's nonce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from meshlib.controlplane.cache import ResourceSnapshot
from meshlib.controlplane.nodes import user_agent
from meshlib.controlplane.status import StreamStatus
from meshlib.controlplane.typeurls import WILDCARD_TYPES, push_rank

__all__ = ["ProtocolError", "SotwSession"]


class ProtocolError(Exception):
    """The client broke the protocol (no node on the first request, no type URL); the stream is aborted."""


@dataclass(slots=True)
class _Subscription:
    names: frozenset[str] | None = None  # None = wildcard
    legacy_wildcard: bool = False
    pending: bool = True  # must answer even if the version did not change
    version_sent: str = ""
    nonce: str = ""
    sent_key: tuple[tuple[str, str], ...] | None = None  # named: (name, resource version) last sent


def bind_node(status: StreamStatus, request: Any, group_of: Any, kind: str) -> str:
    """Record the stream's node from its first request and return the node's group.

    xDS requires the node on a stream's first request (later ones may omit it).
    """
    if not request.HasField("node"):
        raise ProtocolError(f"the first {kind} on a stream must carry the node")
    node = request.node
    status.node_id, status.node_cluster = node.id, node.cluster
    status.user_agent = user_agent(node)
    group: str = group_of(node)
    status.group = group
    return group


class SotwSession:
    """Per-stream SotW state; feed it requests, ask it for responses after each wake-up."""

    def __init__(self, status: StreamStatus, group_of: Any, wildcard_types: frozenset[str] = WILDCARD_TYPES) -> None:
        self.status = status
        self.group: str | None = None
        self._group_of = group_of
        self._wildcard_types = wildcard_types
        self._subs: dict[str, _Subscription] = {}
        self._nonce = 0

    def on_request(self, request: Any) -> None:
        if self.group is None:
            self.group = bind_node(self.status, request, self._group_of, "DiscoveryRequest")
        type_url = request.type_url
        if not type_url:
            raise ProtocolError("DiscoveryRequest.type_url is required on an aggregated stream")
        sub = self._subs.get(type_url)
        first = sub is None
        if sub is None:
            sub = self._subs[type_url] = _Subscription()
        nonce = request.response_nonce
        if nonce and sub.nonce and nonce != sub.nonce:
            return  # stale: answers a response the client has since been superseded by
        type_status = self.status.type(type_url)
        if nonce and sub.nonce:
            if request.HasField("error_detail"):
                type_status.nacked(sub.version_sent, nonce, request.error_detail.message or str(request.error_detail))
            else:
                type_status.acked(request.version_info, nonce)
        names = frozenset(request.resource_names)
        wildcard = "*" in names or (not names and type_url in self._wildcard_types and (first or sub.legacy_wildcard))
        if first:
            sub.legacy_wildcard = wildcard and not names
        new_names = None if wildcard else names - {"*"}
        if not first and new_names == sub.names:
            return  # an ACK for the same names (the usual request): keep the objects already held
        if first or _grew(sub.names, new_names):
            sub.pending = True
        sub.names = new_names
        type_status.subscribed = None if new_names is None else sorted(new_names)

    def owes_response(self) -> bool:
        """True when a request asked for something not answered yet (a new type, new names)."""
        return any(sub.pending for sub in self._subs.values())

    def responses(self, snapshot: ResourceSnapshot) -> list[bytes]:
        """Encoded responses owed to the client, in make-before-break order (CDS, EDS, LDS, RDS)."""
        out = []
        for type_url in sorted(self._subs, key=push_rank):
            sub = self._subs[type_url]
            resources = snapshot.get(type_url)
            if not sub.pending and (resources.version == sub.version_sent or sub.names == frozenset()):
                continue  # unchanged, or the client unsubscribed from every name of this type
            key = None
            if sub.names is not None:
                key = resources.versions_of(sub.names)  # shared by every stream asking for these names
                if not sub.pending and key == sub.sent_key:
                    continue  # the version moved, but not for anything this stream asked for
            self._nonce += 1
            nonce = str(self._nonce)
            body = resources.sotw_body(sub.names)
            out.append(body + _nonce_field(nonce))
            sub.pending, sub.version_sent, sub.nonce, sub.sent_key = False, resources.version, nonce, key
            count = len(resources.resources) if key is None else len(key)
            self.status.type(type_url).sent(resources.version, nonce, count)
        return out


def _nonce_field(nonce: str) -> bytes:
    """``DiscoveryResponse.nonce`` (field 5, a short ASCII string) as wire bytes, appended to a shared body."""
    data = nonce.encode()
    if len(data) > 127:  # never for a counter; the general encoder for anything longer
        return bytes(discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString())
    return b"\x2a" + bytes((len(data),)) + data


def _grew(old: frozenset[str] | None, new: frozenset[str] | None) -> bool:
    """True when ``new`` asks for something ``old`` did not (so the client expects an answer)."""
    if new is None:
        return old is not None
    return old is not None and not new <= old
