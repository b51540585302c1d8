"""Which xDS node ids a client certificate's SPIFFE identity may claim.

A secure control plane must not hand one workload's configuration to another just because it
*says* it is that node. The rule, checked on the first request of every ADS stream:

1. **Explicit allow map** (``--node-id-map FILE``): when the caller's SPIFFE ID is listed, the node
   id must match one of its patterns — exact, or a prefix ending in ``*``. Listed identities get
   nothing else.
2. **Otherwise, the Istio form** ``spiffe://<td>/ns/<NS>/sa/<SA>`` may claim node ids that *embed*
   its service account and namespace: ``<SA>.<NS>`` exactly, or ``<SA>.<NS>~<anything>`` (an
   instance suffix, e.g. ``reviews.default~pod-7f9c``); and Istio's sidecar ids
   ``sidecar~<ip>~<pod>.<NS>~<NS>.svc.<domain>`` whose pod name starts with ``<SA>-``.
3. Anything else — no client certificate, another trust domain, a non-Istio ID without a map
   entry — is refused: the stream ends with ``PERMISSION_DENIED`` and nothing is sent.

Map file format (``#`` comments)::

    spiffe://cluster.local/ns/default/sa/productpage   productpage-1 productpage-canary-*
    spiffe://cluster.local/ns/ops/sa/envoy-gateway     gateway~*
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from meshlib.security.errors import InvalidSpiffeId, SecurityError
from meshlib.security.spiffe import SpiffeId
from meshlib.security.table_file import table_lines

MAX_MAP_FILE_BYTES = 1 << 20
MAX_NODE_ID_LENGTH = 1024


class NodeIdRule:
    """Decides whether a SPIFFE identity may claim a node id; see the module docstring.

    >>> rule = NodeIdRule("cluster.local")
    >>> rule.check(SpiffeId.for_workload("default", "reviews"), "reviews.default~pod-1") is None
    True
    >>> rule.check(SpiffeId.for_workload("default", "reviews"), "ratings.default") is None
    False
    """

    def __init__(self, trust_domain: str, allow: Mapping[SpiffeId, Sequence[str]] | None = None) -> None:
        self.trust_domain = SpiffeId.for_trust_domain(trust_domain).trust_domain
        self.allow: dict[SpiffeId, tuple[str, ...]] = {k: tuple(v) for k, v in (allow or {}).items()}

    def check(self, identity: SpiffeId | None, node_id: str) -> str | None:
        """None when ``identity`` may claim ``node_id``; otherwise the reason it may not."""
        shown = repr(node_id[:200])
        if identity is None:
            return f"node id {shown}: the client presented no SPIFFE certificate (mTLS required)"
        if not node_id:
            return f"identity {identity}: the first request carries no node id"
        if len(node_id) > MAX_NODE_ID_LENGTH:
            return f"identity {identity}: node id longer than {MAX_NODE_ID_LENGTH} characters"
        if not identity.member_of(self.trust_domain):
            return f"identity {identity} is not in trust domain {self.trust_domain!r}"
        patterns = self.allow.get(identity)
        if patterns is not None:
            if any(_matches(p, node_id) for p in patterns):
                return None
            return f"identity {identity} may not claim node id {shown} (allowed: {', '.join(patterns)})"
        if identity.is_istio_workload and _embeds(identity, node_id):
            return None
        if identity.is_istio_workload:
            expected = f"{identity.service_account}.{identity.namespace}[~...]"
        else:
            expected = "a node id map entry"
        return f"identity {identity} may not claim node id {shown} (needs {expected})"

    @classmethod
    def from_file(cls, trust_domain: str, path: str | os.PathLike[str]) -> NodeIdRule:
        """Load an allow map; :class:`SecurityError` names ``file:line`` on a bad line."""
        allow: dict[SpiffeId, list[str]] = {}
        for where, parts in table_lines(path, "node id map", MAX_MAP_FILE_BYTES):
            if len(parts) < 2:
                raise SecurityError(f"{where}: expected '<spiffe-id> <node-id-pattern> ...'")
            try:
                identity = SpiffeId.parse(parts[0])
            except InvalidSpiffeId as exc:
                raise SecurityError(f"{where}: {exc}") from None
            for pattern in parts[1:]:
                if "*" in pattern[:-1]:
                    raise SecurityError(f"{where}: {pattern!r}: '*' is only allowed at the end")
            allow.setdefault(identity, []).extend(parts[1:])
        return cls(trust_domain, allow)


def _matches(pattern: str, node_id: str) -> bool:
    if pattern.endswith("*"):
        return node_id.startswith(pattern[:-1])
    return node_id == pattern


def _embeds(identity: SpiffeId, node_id: str) -> bool:
    sa, ns = identity.service_account, identity.namespace
    base = f"{sa}.{ns}"
    if node_id == base or node_id.startswith(base + "~"):
        return True
    parts = node_id.split("~")  # Istio: sidecar~10.0.0.1~reviews-v1-abc.default~default.svc.cluster.local
    if len(parts) == 4 and parts[0] in ("sidecar", "router"):
        pod, _, pod_ns = parts[2].rpartition(".")
        return pod_ns == ns and parts[3].startswith(f"{ns}.svc.") and pod.startswith(f"{sa}-")
    return False
