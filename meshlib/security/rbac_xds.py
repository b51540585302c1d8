"""AuthorizationPolicies → Envoy RBAC HTTP filters, for xDS-enabled gRPC servers (gRFC A41) and Envoy.

The translation follows istiod's (``pilot/pkg/security/authz``): one RBAC filter
for the DENY policies, then one for the ALLOW policies (omitted when no ALLOW
policy applies, so everything is allowed; present with no matching rule, so
everything else is denied); AUDIT policies are left out, since gRPC ignores
``LOG`` policies. Each rule is one RBAC policy named
``ns[NS]-policy[NAME]-rule[i]`` whose permission is "any ``to`` AND every
``when`` on the request" and whose principal is "any ``from`` AND every
``when`` on the peer".

- principals → ``authenticated.principal_name`` with ``spiffe://`` added
  (``*`` = any authenticated peer); namespaces and service accounts → a RE2
  regex on the principal; ipBlocks → ``direct_remote_ip``; remoteIpBlocks →
  ``remote_ip``; requestPrincipals → ``metadata`` (never matches in gRPC, as in
  meshlib: no JWT validation).
- hosts → ``:authority`` (case-insensitive), methods → ``:method``, paths →
  ``url_path`` (templates as RE2), ports → ``destination_port``.

>>> from meshlib.config.model import WorkloadIdentity
>>> from meshlib.config.security_model import SecurityPolicies
>>> rbac_http_filters(SecurityPolicies(), WorkloadIdentity())
[]
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

import re2
from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2

from meshlib.config.model import WorkloadIdentity
from meshlib.config.security_model import (
    AuthorizationPolicySpec,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    SecurityPolicies,
)
from meshlib.security.authz import DEFAULT_ROOT_NAMESPACE, applies_to
from meshlib.security.authz_match import template_regex
from meshlib.xds.encode_common import pack

SPIFFE = "spiffe://"


def string_match(pattern: str, *, prefix: str = "", ignore_case: bool = False) -> Any:
    """One Istio pattern as an Envoy ``StringMatcher`` (``prefix`` is prepended to exact and prefix forms)."""
    if pattern == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"), ignore_case=False)
    if pattern.startswith("*"):
        return string_pb2.StringMatcher(suffix=pattern[1:], ignore_case=ignore_case)
    if pattern.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + pattern[:-1], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + pattern, ignore_case=ignore_case)


def _regex(regex: str) -> Any:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))


def _segment_regex(pattern: str) -> str:
    """An Istio pattern for one path segment (a namespace) as RE2."""
    if pattern == "*":
        return "[^/]+"
    if pattern.startswith("*"):
        return "[^/]*" + str(re2.escape(pattern[1:]))
    if pattern.endswith("*"):
        return str(re2.escape(pattern[:-1])) + "[^/]*"
    return str(re2.escape(pattern))


def _cidr(block: str) -> Any:
    network = ipaddress.ip_network(block, strict=False)
    return address_pb2.CidrRange(address_prefix=str(network.network_address), prefix_len=network.prefixlen)


def _principal_name(matcher: Any) -> Any:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))


def _or_ids(ids: list[Any]) -> Any:
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=ids))


def _or_rules(rules: list[Any]) -> Any:
    return rules[0] if len(rules) == 1 else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=rules))


def _header(name: str, matcher: Any) -> Any:
    return route_components_pb2.HeaderMatcher(name=name, string_match=matcher)


def _never_principal() -> Any:
    # requestPrincipals / request.auth.*: Istio reads JWT metadata; gRPC treats `metadata` as never matching.
    path = metadata_pb2.MetadataMatcher.PathSegment(key="request.auth.principal")
    return rbac_pb2.Principal(
        metadata=metadata_pb2.MetadataMatcher(filter="istio_authn", path=[path], value={"present_match": True})
    )


def _field(
    values: Sequence[str], negated: Sequence[str], build: Callable[[str], Any], *, principal: bool
) -> list[Any]:
    """``values`` ORed, and NOT any of ``negated``, as principal ids or permission rules."""
    out = []
    if values:
        items = [build(v) for v in values]
        out.append(_or_ids(items) if principal else _or_rules(items))
    if negated:
        items = [build(v) for v in negated]
        inner = _or_ids(items) if principal else _or_rules(items)
        out.append(rbac_pb2.Principal(not_id=inner) if principal else rbac_pb2.Permission(not_rule=inner))
    return out


def _source(source: AuthzSource) -> Any:
    ids: list[Any] = []
    ids += _field(source.principals, source.not_principals,
                  lambda v: _principal_name(string_match(v, prefix=SPIFFE)), principal=True)
    ids += _field(source.request_principals, source.not_request_principals, lambda v: _never_principal(),
                  principal=True)
    ids += _field(source.namespaces, source.not_namespaces,
                  lambda v: _principal_name(_regex(f".*/ns/{_segment_regex(v)}/.*")), principal=True)
    ids += _field(source.service_accounts, source.not_service_accounts,
                  lambda v: _principal_name(_regex(_service_account_regex(v))), principal=True)
    ids += _field(source.ip_blocks, source.not_ip_blocks,
                  lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v)), principal=True)
    ids += _field(source.remote_ip_blocks, source.not_remote_ip_blocks,
                  lambda v: rbac_pb2.Principal(remote_ip=_cidr(v)), principal=True)
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


def _service_account_regex(account: str) -> str:
    namespace, name = account.split("/", 1)
    return f"spiffe://[^/]+/ns/{re2.escape(namespace)}/sa/{re2.escape(name)}"


def _path(pattern: str) -> Any:
    templated = "{*}" in pattern or "{**}" in pattern
    matcher = _regex(template_regex(pattern)) if templated else string_match(pattern)
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))


def _operation(operation: AuthzOperation) -> Any:
    rules: list[Any] = []
    rules += _field(operation.hosts, operation.not_hosts,
                    lambda v: rbac_pb2.Permission(header=_header(":authority", string_match(v, ignore_case=True))),
                    principal=False)
    rules += _field([str(p) for p in operation.ports], [str(p) for p in operation.not_ports],
                    lambda v: rbac_pb2.Permission(destination_port=int(v)), principal=False)
    rules += _field(operation.methods, operation.not_methods,
                    lambda v: rbac_pb2.Permission(header=_header(":method", string_match(v))), principal=False)
    rules += _field(operation.paths, operation.not_paths, _path, principal=False)
    return rules[0] if len(rules) == 1 else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=rules))


def _condition(condition: AuthzCondition) -> tuple[list[Any], list[Any]]:
    """A ``when`` condition → (principal ids, permission rules) to AND into the rule."""
    key = condition.key
    principal_side: Callable[[str], Any] | None = None
    permission_side: Callable[[str], Any] | None = None
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1]
        principal_side = lambda v: rbac_pb2.Principal(header=_header(name, string_match(v)))  # noqa: E731
    elif key == "source.ip":
        principal_side = lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v))  # noqa: E731
    elif key == "remote.ip":
        principal_side = lambda v: rbac_pb2.Principal(remote_ip=_cidr(v))  # noqa: E731
    elif key == "source.namespace":
        principal_side = lambda v: _principal_name(_regex(f".*/ns/{_segment_regex(v)}/.*"))  # noqa: E731
    elif key == "source.principal":
        principal_side = lambda v: _principal_name(string_match(v, prefix=SPIFFE))  # noqa: E731
    elif key == "source.serviceAccount":
        principal_side = lambda v: _principal_name(_regex(_service_account_regex(v)))  # noqa: E731
    elif key.startswith("request.auth."):
        principal_side = lambda v: _never_principal()  # noqa: E731
    elif key == "destination.ip":
        permission_side = lambda v: rbac_pb2.Permission(destination_ip=_cidr(v))  # noqa: E731
    elif key == "destination.port":
        permission_side = lambda v: rbac_pb2.Permission(destination_port=int(v))  # noqa: E731
    elif key == "connection.sni":
        permission_side = lambda v: rbac_pb2.Permission(requested_server_name=string_match(v))  # noqa: E731
    else:
        raise ValueError(f"unsupported condition key {key!r}")
    if principal_side is not None:
        return _field(condition.values, condition.not_values, principal_side, principal=True), []
    assert permission_side is not None
    return [], _field(condition.values, condition.not_values, permission_side, principal=False)


def _policy(rule: AuthzRule) -> Any:
    ids: list[Any] = []
    rules: list[Any] = []
    if rule.sources is not None:
        ids.append(_or_ids([_source(s) for s in rule.sources]) if rule.sources else
                   rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True)))
    if rule.operations is not None:
        rules.append(_or_rules([_operation(o) for o in rule.operations]) if rule.operations else
                     rbac_pb2.Permission(not_rule=rbac_pb2.Permission(any=True)))
    for condition in rule.conditions:
        more_ids, more_rules = _condition(condition)
        ids += more_ids
        rules += more_rules
    principal = (rbac_pb2.Principal(any=True) if not ids else ids[0] if len(ids) == 1
                 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids)))
    permission = (rbac_pb2.Permission(any=True) if not rules else rules[0] if len(rules) == 1
                  else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=rules)))
    return rbac_pb2.Policy(permissions=[permission], principals=[principal])


def rbac_config(policies: Sequence[AuthorizationPolicySpec], action: str) -> Any:
    """The ``envoy.config.rbac.v3.RBAC`` of the ``action`` policies (ALLOW or DENY)."""
    rbac = rbac_pb2.RBAC(action=rbac_pb2.RBAC.Action.Value(action))
    for spec in policies:
        for index, rule in enumerate(spec.rules or ()):
            name = f"ns[{spec.origin.namespace}]-policy[{spec.origin.name}]-rule[{index}]"
            rbac.policies[name].CopyFrom(_policy(rule))
    return rbac


def rbac_http_filters(
    security: SecurityPolicies, workload: WorkloadIdentity, root_namespace: str = DEFAULT_ROOT_NAMESPACE
) -> list[Any]:
    """The RBAC ``HttpFilter`` list (DENY first, then ALLOW) for a server of ``workload``; [] when none applies."""
    applicable = [p for p in security.authorization if applies_to(p, workload, root_namespace)]
    filters = []
    for action in ("DENY", "ALLOW"):
        chosen = [p for p in applicable if p.action == action]
        if chosen:
            config = rbac_filter_pb2.RBAC(rules=rbac_config(chosen, action))
            name = f"envoy.filters.http.rbac.{action.lower()}"
            filters.append(hcm_pb2.HttpFilter(name=name, typed_config=pack(config)))
    return filters
