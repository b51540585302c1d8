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

Everything a policy says is compiled once per snapshot into small matchers
(sets for exact values, tuples for prefixes/suffixes, parsed networks), so a
decision is a few set look-ups and ``startswith`` calls per rule.

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

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from meshlib.config.model import WorkloadIdentity
from meshlib.config.security_model import (
    AuthorizationPolicySpec,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    SecurityPolicies,
)

DEFAULT_ROOT_NAMESPACE = "istio-system"
DENIED_BODY = "RBAC: access denied"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class InboundAttributes:
    """What a policy can look at, for one inbound request.

    ``principal`` is the peer's SPIFFE ID without the ``spiffe://`` scheme
    (``cluster.local/ns/default/sa/sleep``), "" without mTLS. ``path`` has no
    query string. ``headers`` maps lower-case names to values.
    ``request_principal`` stays "" (meshlib does not validate JWTs), so
    ``requestPrincipals`` never match and ``notRequestPrincipals`` always do.
    """

    method: str = "GET"
    path: str = "/"
    host: str | None = ""  # None: not known (grpc.aio servers do not see the :authority)
    port: int = 0
    source_ip: str = ""
    remote_ip: str = ""
    destination_ip: str = ""
    principal: str = ""
    sni: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    request_principal: str = ""


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


# ----------------------------------------------------------------------------- string and value matchers

Matcher = Callable[[str], bool]


def string_matcher(patterns: Iterable[str], *, ignore_case: bool = False) -> Matcher:
    """Istio's string match over a list (ORed): exact, ``abc*`` prefix, ``*abc`` suffix, ``*`` present."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    present = False
    for raw in patterns:
        pattern = raw.lower() if ignore_case else raw
        if pattern == "*":
            present = True
        elif pattern.startswith("*"):
            suffixes.append(pattern[1:])
        elif pattern.endswith("*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    prefix_tuple, suffix_tuple = tuple(prefixes), tuple(suffixes)

    def match(value: str) -> bool:
        if ignore_case:
            value = value.lower()
        if value in exact:
            return True
        if present and value:
            return True
        if prefix_tuple and value.startswith(prefix_tuple):
            return True
        return bool(suffix_tuple) and value.endswith(suffix_tuple)

    return match


def network_matcher(blocks: Iterable[str]) -> Matcher:
    """An address in any of ``blocks`` (single addresses or CIDR ranges)."""
    networks = tuple(ipaddress.ip_network(block, strict=False) for block in blocks)

    def match(value: str) -> bool:
        try:
            address = ipaddress.ip_address(value.split("%", 1)[0])
        except ValueError:
            return False
        return any(address.version == net.version and address in net for net in networks)

    return match


def path_matcher(patterns: Iterable[str]) -> Matcher:
    """Istio's path match: string match plus ``{*}`` (one segment) and ``{**}`` (any) templates."""
    plain: list[str] = []
    templates: list[Any] = []
    for pattern in patterns:
        if "{*}" in pattern or "{**}" in pattern:
            templates.append(re2.compile(_template_regex(pattern)))
        else:
            plain.append(pattern)
    strings = string_matcher(plain)
    if not templates:
        return strings
    compiled = tuple(templates)
    return lambda value: strings(value) or any(t.fullmatch(value) for t in compiled)


def _template_regex(template: str) -> str:
    out: list[str] = []
    rest = template
    while rest:
        if rest.startswith("{**}"):
            out.append(".*")
            rest = rest[4:]
        elif rest.startswith("{*}"):
            out.append("[^/]+")
            rest = rest[3:]
        else:
            out.append(re2.escape(rest[0]))
            rest = rest[1:]
    return "".join(out)


def _principal_parts(principal: str) -> tuple[str, str]:
    """``td/ns/NS/sa/SA`` → (NS, SA); ("", "") when the principal has another shape."""
    parts = principal.split("/")
    if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa":
        return parts[2], parts[4]
    return "", ""


# ----------------------------------------------------------------------------- compiled rules

Check = Callable[[InboundAttributes], bool]


def _field_check(positive: Iterable[str], negative: Iterable[str], matcher: Callable[..., Matcher],
                 read: Callable[[InboundAttributes], str]) -> list[Check]:
    """A value must match one of ``positive`` (when given) and none of ``negative``."""
    checks: list[Check] = []
    positive, negative = tuple(positive), tuple(negative)
    if positive:
        yes = matcher(positive)
        checks.append(lambda a: yes(read(a)))
    if negative:
        no = matcher(negative)
        checks.append(lambda a: not no(read(a)))
    return checks


def _read_principal(a: InboundAttributes) -> str:
    return a.principal


def _read_namespace(a: InboundAttributes) -> str:
    return _principal_parts(a.principal)[0]


def _read_service_account(a: InboundAttributes) -> str:
    namespace, account = _principal_parts(a.principal)
    return f"{namespace}/{account}" if namespace else ""


def _host_matcher(patterns: Iterable[str]) -> Matcher:
    # Istio matches hosts case-insensitively, with or without the port the client wrote.
    by_name = string_matcher(patterns, ignore_case=True)

    def match(value: str) -> bool:
        if by_name(value):
            return True
        host, sep, port = value.rpartition(":")
        return bool(sep) and port.isdigit() and "]" not in port and by_name(host)

    return match


def _source_checks(source: AuthzSource) -> list[Check]:
    checks: list[Check] = []
    checks += _field_check(source.principals, source.not_principals, string_matcher, _read_principal)
    checks += _field_check(
        source.request_principals, source.not_request_principals, string_matcher, lambda a: a.request_principal
    )
    checks += _field_check(source.namespaces, source.not_namespaces, string_matcher, _read_namespace)
    checks += _field_check(source.service_accounts, source.not_service_accounts, string_matcher, _read_service_account)
    checks += _field_check(source.ip_blocks, source.not_ip_blocks, network_matcher, lambda a: a.source_ip)
    checks += _field_check(
        source.remote_ip_blocks, source.not_remote_ip_blocks, network_matcher, lambda a: a.remote_ip or a.source_ip
    )
    return checks


def _operation_checks(operation: AuthzOperation, *, unknown_host_matches: bool) -> list[Check]:
    checks: list[Check] = []
    # grpc.aio servers do not see the :authority: with the host unknown, a host condition counts as
    # matched in DENY policies and as not matched in ALLOW ones, so the answer errs towards denying.
    if operation.hosts:
        hosts = _host_matcher(operation.hosts)
        checks.append(lambda a: hosts(a.host) if a.host is not None else unknown_host_matches)
    if operation.not_hosts:
        not_hosts = _host_matcher(operation.not_hosts)
        checks.append(lambda a: not not_hosts(a.host) if a.host is not None else unknown_host_matches)
    if operation.ports:
        ports = frozenset(operation.ports)
        checks.append(lambda a: a.port in ports)
    if operation.not_ports:
        not_ports = frozenset(operation.not_ports)
        checks.append(lambda a: a.port not in not_ports)
    checks += _field_check(operation.methods, operation.not_methods, string_matcher, lambda a: a.method)
    checks += _field_check(operation.paths, operation.not_paths, path_matcher, lambda a: a.path)
    return checks


def _condition_check(condition: AuthzCondition) -> Check:
    key = condition.key
    read: Callable[[InboundAttributes], str | None]
    matcher: Callable[..., Matcher] = string_matcher
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1].lower()
        read = lambda a: a.headers.get(name)  # noqa: E731
    elif key.startswith("request.auth."):
        read = lambda a: None  # noqa: E731  (no validated JWT: the attribute is absent)
    elif key in ("source.ip", "remote.ip", "destination.ip"):
        matcher = network_matcher
        read = {
            "source.ip": lambda a: a.source_ip or None,
            "remote.ip": lambda a: (a.remote_ip or a.source_ip) or None,
            "destination.ip": lambda a: a.destination_ip or None,
        }[key]
    elif key == "source.namespace":
        read = lambda a: _read_namespace(a) or None  # noqa: E731
    elif key == "source.principal":
        read = lambda a: a.principal or None  # noqa: E731
    elif key == "source.serviceAccount":
        read = lambda a: _read_service_account(a) or None  # noqa: E731
    elif key == "destination.port":
        read = lambda a: str(a.port) if a.port else None  # noqa: E731
    elif key == "connection.sni":
        read = lambda a: a.sni or None  # noqa: E731
    else:  # validation rejects every other key
        raise ValueError(f"unsupported condition key {key!r}")
    yes = matcher(condition.values) if condition.values else None
    no = matcher(condition.not_values) if condition.not_values else None

    def check(a: InboundAttributes) -> bool:
        value = read(a)
        # An absent attribute matches no value, so it passes `notValues` and fails `values` (Envoy's RBAC).
        if yes is not None and (value is None or not yes(value)):
            return False
        return not (no is not None and value is not None and no(value))

    return check


def _any(alternatives: list[list[Check]]) -> Check:
    if len(alternatives) == 1:
        return _all(alternatives[0])
    compiled = tuple(_all(checks) for checks in alternatives)
    return lambda a: any(c(a) for c in compiled)


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda a: True
    if len(checks) == 1:
        return checks[0]
    compiled = tuple(checks)
    return lambda a: all(c(a) for c in compiled)


def compile_rule(rule: AuthzRule, action: str = "ALLOW") -> Check:
    """One rule of a policy with ``action``, as a predicate over :class:`InboundAttributes`."""
    parts: list[Check] = []
    if rule.sources is not None:
        parts.append(_any([_source_checks(s) for s in rule.sources]) if rule.sources else (lambda a: False))
    if rule.operations is not None:
        deny = action == "DENY"
        operations = [_operation_checks(o, unknown_host_matches=deny) for o in rule.operations]
        parts.append(_any(operations) if operations else (lambda a: False))
    parts += [_condition_check(c) for c in rule.conditions]
    return _all(parts)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    ref: str
    action: str
    rules: tuple[Check, ...]

    def first_match(self, attributes: InboundAttributes) -> int | None:
        for index, rule in enumerate(self.rules):
            if rule(attributes):
                return index
        return None


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
            CompiledPolicy(p.origin.ref, p.action, tuple(compile_rule(r, p.action) for r in p.rules or ()))
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
