"""AuthorizationPolicy evaluation for inbound requests, in Istio's order.

::

    1. a DENY policy matches       → deny   (403 "RBAC: access denied" / PERMISSION_DENIED)
    2. no ALLOW policy applies     → allow
    3. an ALLOW policy matches     → allow
    4. otherwise                   → deny
    AUDIT policies never change the decision; matching ones are reported.

A policy applies to this workload when it lives in the workload's namespace
or in the root namespace (mesh-wide; ``istio-system`` unless configured) and
its ``selector.matchLabels`` are a subset of the workload's labels. A rule
matches when any ``from`` AND any ``to`` AND every ``when`` match; an absent
list matches anything; ``rules`` absent (``spec: {}``) matches nothing, so an
ALLOW policy without rules denies everything, as in Istio.

Everything a policy says is compiled once per snapshot into one generated
function per policy (:mod:`meshlib.security.authz_match`), so a decision is a
few set look-ups and ``startswith`` calls per rule.

>>> from meshlib.config.security_model import (AuthorizationPolicySpec, AuthzOperation, AuthzRule,
...     PolicyOrigin, SecurityPolicies)
>>> from meshlib.config.model import WorkloadIdentity
>>> only_get = AuthorizationPolicySpec(PolicyOrigin("p.yaml", 1, "default", "get-only"), "ALLOW", None,
...     (AuthzRule(operations=(AuthzOperation(methods=("GET",)),)),))
>>> engine = AuthorizationEngine.build(SecurityPolicies((only_get,)), WorkloadIdentity())
>>> engine.decide(InboundAttributes(method="POST", path="/x")).allowed
False
>>> engine.decide(InboundAttributes(method="GET", path="/x")).policy
'default/get-only'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshlib.config.model import WorkloadIdentity
from meshlib.config.security_model import AuthorizationPolicySpec, SecurityPolicies
from meshlib.security.authz_match import FirstMatch, InboundAttributes, compile_rules

__all__ = ["AuthorizationEngine", "AuthzDecision", "InboundAttributes", "engine_for"]

DEFAULT_ROOT_NAMESPACE = "istio-system"
DENIED_BODY = "RBAC: access denied"

@dataclass(frozen=True, slots=True)
class AuthzDecision:
    """The outcome: allowed or not, and which policy and rule decided (None: the default rule)."""

    allowed: bool
    policy: str | None
    rule: int | None
    reason: str
    audited: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``meshlib explain --inbound`` prints it."""
        return {
            "allowed": self.allowed,
            "status": 200 if self.allowed else 403,
            "policy": self.policy,
            "rule": self.rule,
            "reason": self.reason,
            "audited": list(self.audited),
        }


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """One policy: its ``namespace/name``, action and generated ``first_match(attributes)``."""

    ref: str
    action: str
    first_match: FirstMatch


def applies_to(policy: AuthorizationPolicySpec, workload: WorkloadIdentity, root_namespace: str) -> bool:
    """Istio's scope rule: the workload's namespace or the root namespace, and the selector's labels."""
    if policy.origin.namespace not in (workload.namespace, root_namespace):
        return False
    if policy.selector is None:
        return True
    return all(workload.labels.get(key) == value for key, value in policy.selector)


class AuthorizationEngine:
    """The AuthorizationPolicies that apply to one workload, compiled; :meth:`decide` per request."""

    __slots__ = ("allow", "audit", "deny", "policies")

    def __init__(self, policies: list[CompiledPolicy]) -> None:
        self.policies = tuple(policies)
        self.deny = tuple(p for p in policies if p.action == "DENY")
        self.allow = tuple(p for p in policies if p.action == "ALLOW")
        self.audit = tuple(p for p in policies if p.action == "AUDIT")

    @classmethod
    def build(
        cls, security: SecurityPolicies, workload: WorkloadIdentity, root_namespace: str = DEFAULT_ROOT_NAMESPACE
    ) -> AuthorizationEngine:
        compiled = [
            CompiledPolicy(p.origin.ref, p.action, compile_rules(p.rules or (), p.action))
            for p in security.authorization
            if applies_to(p, workload, root_namespace)
        ]
        return cls(compiled)

    @property
    def empty(self) -> bool:
        """True when no policy applies (every request is allowed without evaluation)."""
        return not self.policies

    def decide(self, attributes: InboundAttributes) -> AuthzDecision:
        """Istio's order: DENY, then (no ALLOW policy → allow), then ALLOW, else deny."""
        audited = tuple(
            f"{p.ref}[{index}]" for p in self.audit if (index := p.first_match(attributes)) is not None
        ) if self.audit else ()
        for policy in self.deny:
            index = policy.first_match(attributes)
            if index is not None:
                return AuthzDecision(False, policy.ref, index, "matched a DENY policy", audited)
        if not self.allow:
            return AuthzDecision(True, None, None, "no ALLOW policy applies to this workload", audited)
        for policy in self.allow:
            index = policy.first_match(attributes)
            if index is not None:
                return AuthzDecision(True, policy.ref, index, "matched an ALLOW policy", audited)
        return AuthzDecision(False, None, None, "no ALLOW policy matched", audited)


def engine_for(
    security: SecurityPolicies, workload: WorkloadIdentity, root_namespace: str = DEFAULT_ROOT_NAMESPACE
) -> AuthorizationEngine | None:
    """The engine for ``workload``, or None when no policy applies (the request path then skips authz)."""
    if security.empty:
        return None
    engine = AuthorizationEngine.build(security, workload, root_namespace)
    return None if engine.empty else engine
