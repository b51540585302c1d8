"""AuthorizationPolicy at the two inbound edges: aiohttp servers and ``grpc.aio`` servers.

The adapters call :func:`authorize_aiohttp` / :func:`authorize_grpc` only when
a policy applies to the workload (``mesh.state.authz is not None``), so a mesh
without AuthorizationPolicies pays one attribute check per request.

What each attribute is read from:

- ``principal``: the verified peer certificate's SPIFFE ID (mTLS,
  :mod:`meshlib.security.peer`: exactly one ``spiffe://`` URI SAN), without
  ``spiffe://``; read once per connection.
- ``source.ip``: the TCP peer address. ``remote.ip`` is the same address:
  like Istio with ``numTrustedProxies: 0``, ``X-Forwarded-For`` is not trusted.
- ``port`` / ``destination.ip``: the local socket the request arrived on (gRPC:
  the ``port`` given to the interceptor, since grpcio does not expose it).
- ``path``: the request path without its query, dot segments resolved (Istio's
  default ``BASE`` normalisation); gRPC: ``/package.Service/Method``.
- ``method``: the HTTP method; gRPC calls are ``POST``, as Istio documents.
- ``host``: the ``Host`` header. grpc.aio servers do not expose ``:authority``:
  there a ``hosts``/``notHosts`` condition counts as matched in DENY policies
  and as unmatched in ALLOW policies (it errs towards denying).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meshlib.security.authz import AuthorizationEngine, AuthzDecision, InboundAttributes
from meshlib.security.peer import grpc_peer_identity, peer_identity
from meshlib.security.spiffe import SpiffeId

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("meshlib.authz")

class AuthzStats:
    """Envoy's RBAC filter counters (``rbac.allowed``, ``rbac.denied``, ``rbac.logged``) plus denials per policy."""

    __slots__ = ("counters", "denied_by")

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.denied_by: Counter[str] = Counter()  # keyed by configured policy names: bounded by the config

    def record(self, decision: AuthzDecision) -> None:
        if decision.allowed:
            self.counters["rbac.allowed"] += 1
        else:
            self.counters["rbac.denied"] += 1
            self.denied_by[decision.policy or "(no ALLOW policy matched)"] += 1
        if decision.audited:
            self.counters["rbac.logged"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {**{k: self.counters[k] for k in ("rbac.allowed", "rbac.denied", "rbac.logged")},
                "denied_by_policy": dict(self.denied_by)}


def principal_of(identity: SpiffeId | None) -> str:
    """A verified peer identity as Istio writes principals: the SPIFFE ID without ``spiffe://`` ("" for none)."""
    return f"{identity.trust_domain}{identity.path}" if identity is not None else ""


def normalise_path(raw: str) -> str:
    """Path without query or fragment, dot segments resolved (RFC 3986 §5.2.4), as Istio's BASE normalisation."""
    path = raw.split("?", 1)[0].split("#", 1)[0] or "/"
    if "/." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = segments[-1] in (".", "..")
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def aiohttp_attributes(request: web.Request) -> InboundAttributes:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    local = transport.get_extra_info("sockname") if transport is not None else None
    return InboundAttributes(
        method=request.method,
        path=normalise_path(request.raw_path),
        host=request.headers.get("Host", ""),
        port=local[1] if isinstance(local, tuple) and len(local) > 1 else 0,
        source_ip=peer[0] if isinstance(peer, tuple) and peer else "",
        destination_ip=local[0] if isinstance(local, tuple) and local else "",
        principal=principal_of(peer_identity(request)),  # verified, read once per connection
        headers=request.headers,  # case-insensitive look-ups, no copy
    )


def authorize_aiohttp(engine: AuthorizationEngine, stats: AuthzStats, request: web.Request) -> AuthzDecision:
    decision = engine.decide(aiohttp_attributes(request))
    _account(stats, decision, request.method, request.raw_path)
    return decision


def grpc_attributes(
    context: Any, *, method: str, headers: Mapping[str, str], port: int, peer_address: str | None
) -> InboundAttributes:
    return InboundAttributes(
        method="POST",
        path=method,
        host=headers.get(":authority"),  # grpc.aio does not pass it on: None, see authz._operation_checks
        port=port,
        source_ip=peer_address or "",
        principal=principal_of(grpc_peer_identity(context)),
        headers=headers,
    )


def authorize_grpc(
    engine: AuthorizationEngine,
    stats: AuthzStats,
    context: Any,
    *,
    method: str,
    headers: Mapping[str, str],
    port: int,
    peer_address: str | None,
) -> AuthzDecision:
    decision = engine.decide(
        grpc_attributes(context, method=method, headers=headers, port=port, peer_address=peer_address)
    )
    _account(stats, decision, "POST", method)
    return decision


def _account(stats: AuthzStats, decision: AuthzDecision, method: str, path: str) -> None:
    stats.record(decision)
    if not decision.allowed:
        log.info("RBAC: access denied: %s %s (policy %s, rule %s: %s)", method, path.split("?", 1)[0],
                 decision.policy or "-", decision.rule if decision.rule is not None else "-", decision.reason)
    elif decision.audited:
        log.info("RBAC: audited %s %s by %s", method, path.split("?", 1)[0], ", ".join(decision.audited))


def policies_summary(engine: AuthorizationEngine | None) -> Sequence[str]:
    """The refs of the policies in force for this workload (for ``status()``/admin)."""
    return [p.ref for p in engine.policies] if engine is not None else []
