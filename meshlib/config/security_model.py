"""Istio security resources (``security.istio.io``) as validated, frozen values.

Kept apart from :mod:`meshlib.config.model` (the xDS-shaped outbound model) and
free of imports from it, so the snapshot can carry them without a cycle.
:class:`SecurityPolicies` is what a :class:`~meshlib.config.model.MeshSnapshot`
holds; :mod:`meshlib.security.authz` compiles and evaluates the
AuthorizationPolicies in it for the inbound side.

String matches follow Istio's AuthorizationPolicy rules: an exact value,
``abc*`` (prefix), ``*abc`` (suffix) or ``*`` (present, any non-empty value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from meshlib.config.peer_authentication import PeerAuthenticationSpec

AuthzAction = Literal["ALLOW", "DENY", "AUDIT"]


@dataclass(frozen=True, slots=True)
class PolicyOrigin:
    """Where a policy was written: for errors, ``explain`` and stats."""

    file: str
    line: int
    namespace: str
    name: str

    @property
    def ref(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class AuthzSource:
    """``rules[].from[].source``: who is calling. Fields are ANDed, values within one ORed."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzOperation:
    """``rules[].to[].operation``: what is being called."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzCondition:
    """``rules[].when[]``: ``key`` is one of Istio's condition attributes."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """One rule: any ``from`` AND any ``to`` AND every ``when`` (an absent list matches anything)."""

    sources: tuple[AuthzSource, ...] | None = None
    operations: tuple[AuthzOperation, ...] | None = None
    conditions: tuple[AuthzCondition, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class AuthorizationPolicySpec:
    """An AuthorizationPolicy. ``rules is None`` means the field was absent (``spec: {}``)."""

    origin: PolicyOrigin
    action: AuthzAction
    selector: tuple[tuple[str, str], ...] | None
    rules: tuple[AuthzRule, ...] | None


@dataclass(frozen=True, slots=True)
class SecurityPolicies:
    """The security resources of one snapshot, in file order."""

    authorization: tuple[AuthorizationPolicySpec, ...] = field(default=())
    peer_authentication: tuple[PeerAuthenticationSpec, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """True when no security resource is configured."""
        return not self.authorization and not self.peer_authentication


NO_SECURITY_POLICIES = SecurityPolicies()
