"""AuthorizationPolicy: Istio's validation rules and its evaluation semantics (a conformance table).

The policies are the shapes of Istio's documentation (security/authorization
tasks and the AuthorizationPolicy reference); each case states the request and
the decision Istio documents for it.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest

from meshlib.config.documents import parse_file
from meshlib.config.model import Labels, WorkloadIdentity
from meshlib.config.security_model import AuthorizationPolicySpec, SecurityPolicies
from meshlib.security.authz import AuthorizationEngine, InboundAttributes, engine_for
from meshlib.security.authz_inbound import normalise_path, principal_of
from meshlib.security.spiffe import SpiffeId

SLEEP = "cluster.local/ns/default/sa/sleep"
FOO_CLIENT = "cluster.local/ns/foo/sa/client"
HTTPBIN = WorkloadIdentity(namespace="foo", labels=Labels({"app": "httpbin", "version": "v1"}))


def policies(text: str) -> list[AuthorizationPolicySpec]:
    resources, problems = parse_file("authz.yaml", textwrap.dedent(text).lstrip("\n"))
    assert problems == []
    return [r for r in resources if isinstance(r, AuthorizationPolicySpec)]


def problems_of(text: str) -> list[str]:
    _, problems = parse_file("authz.yaml", textwrap.dedent(text).lstrip("\n"))
    return [str(p) for p in problems]


def engine(text: str, workload: WorkloadIdentity = HTTPBIN) -> AuthorizationEngine:
    return AuthorizationEngine.build(SecurityPolicies(tuple(policies(text))), workload)


def request(**fields: object) -> InboundAttributes:
    base = InboundAttributes(method="GET", path="/", host="httpbin.foo:8000", port=8000, source_ip="10.0.0.9")
    return replace(base, **fields)  # type: ignore[arg-type]


def policy(action: str, spec: str, *, name: str = "p", namespace: str = "foo") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        f"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        + (f"  action: {action}\n" if action else "")
        + f"{body}\n"
    )


# --------------------------------------------------------------------------- the default rules


def test_no_policy_means_no_engine_and_every_request_is_allowed() -> None:
    assert engine_for(SecurityPolicies(), HTTPBIN) is None


def test_allow_nothing_an_empty_spec_denies_everything() -> None:
    text = (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: allow-nothing, namespace: foo}\nspec: {}\n"
    )
    decision = engine(text).decide(request())
    assert (decision.allowed, decision.policy, decision.reason) == (False, None, "no ALLOW policy matched")


def test_deny_all_with_an_empty_rule() -> None:
    decision = engine(policy("DENY", "rules:\n- {}")).decide(request(principal=SLEEP))
    assert (decision.allowed, decision.policy, decision.rule) == (False, "foo/p", 0)


def test_allow_all_with_an_empty_rule() -> None:
    assert engine(policy("ALLOW", "rules:\n- {}")).decide(request()).allowed


def test_deny_wins_over_allow() -> None:
    text = policy("ALLOW", "rules:\n- {}", name="allow-all") + policy(
        "DENY", "rules:\n- to:\n  - operation: {methods: [DELETE]}", name="no-delete"
    )
    e = engine(text)
    assert e.decide(request(method="GET")).allowed
    denied = e.decide(request(method="DELETE"))
    assert (denied.allowed, denied.policy) == (False, "foo/no-delete")


def test_audit_never_changes_the_decision_but_is_reported() -> None:
    e = engine(policy("AUDIT", "rules:\n- to:\n  - operation: {paths: [/headers]}"))
    decision = e.decide(request(path="/headers"))
    assert decision.allowed
    assert decision.audited == ("foo/p[0]",)
    assert e.decide(request(path="/ip")).audited == ()


# --------------------------------------------------------------------------- scope


@pytest.mark.parametrize(
    ("namespace", "selector", "applies"),
    [
        ("foo", "", True),
        ("bar", "", False),  # another namespace's policy
        ("istio-system", "", True),  # root namespace: mesh-wide
        ("foo", "selector: {matchLabels: {app: httpbin}}\n", True),
        ("foo", "selector: {matchLabels: {app: httpbin, version: v2}}\n", False),
        ("istio-system", "selector: {matchLabels: {app: productpage}}\n", False),
    ],
)
def test_policy_scope_is_namespace_or_root_and_selector(namespace: str, selector: str, applies: bool) -> None:
    text = policy("DENY", selector + "rules:\n- {}", namespace=namespace)
    assert engine(text).decide(request()).allowed is not applies


# --------------------------------------------------------------------------- sources


HTTPBIN_DOC = """
rules:
- from:
  - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
  - source: {namespaces: ["test"]}
  to:
  - operation: {methods: ["GET"], paths: ["/info*"]}
  - operation: {methods: ["POST"], paths: ["/data"]}
"""


@pytest.mark.parametrize(
    ("attributes", "allowed"),
    [
        ({"principal": SLEEP, "method": "GET", "path": "/info/a"}, True),
        ({"principal": SLEEP, "method": "POST", "path": "/data"}, True),
        ({"principal": "cluster.local/ns/test/sa/any", "method": "GET", "path": "/info"}, True),
        ({"principal": SLEEP, "method": "POST", "path": "/info"}, False),  # operations are alternatives, not mixed
        ({"principal": "cluster.local/ns/other/sa/sleep", "method": "GET", "path": "/info"}, False),
        ({"principal": "", "method": "GET", "path": "/info"}, False),  # plaintext: no principal, no namespace
    ],
)
def test_reference_example_from_or_to_and(attributes: dict[str, str], allowed: bool) -> None:
    assert engine(policy("ALLOW", HTTPBIN_DOC)).decide(request(**attributes)).allowed is allowed


def test_a_jwt_condition_never_matches_without_request_authentication() -> None:
    spec = HTTPBIN_DOC + "  when:\n  - key: request.auth.claims[iss]\n    values: [\"https://accounts.google.com\"]\n"
    assert not engine(policy("ALLOW", spec)).decide(request(principal=SLEEP, path="/info")).allowed


def test_deny_requests_not_from_namespace_foo_denies_plaintext_too() -> None:
    e = engine(policy("DENY", "rules:\n- from:\n  - source: {notNamespaces: [foo]}"))
    assert e.decide(request(principal=FOO_CLIENT)).allowed
    assert not e.decide(request(principal=SLEEP)).allowed
    assert not e.decide(request(principal="")).allowed


@pytest.mark.parametrize(
    ("pattern", "principal", "matches"),
    [
        ("*", SLEEP, True),
        ("*", "", False),  # "*" means "present": requires mTLS
        ("cluster.local/ns/default/*", SLEEP, True),
        ("*/sa/sleep", SLEEP, True),
        ("*/sa/sleep", FOO_CLIENT, False),
        ("cluster.local/ns/default/sa/sleep", "cluster.local/ns/default/sa/sleepy", False),
    ],
)
def test_principal_wildcards(pattern: str, principal: str, matches: bool) -> None:
    e = engine(policy("ALLOW", f'rules:\n- from:\n  - source: {{principals: ["{pattern}"]}}'))
    assert e.decide(request(principal=principal)).allowed is matches


def test_not_principals_star_allows_only_plaintext() -> None:
    e = engine(policy("ALLOW", 'rules:\n- from:\n  - source: {notPrincipals: ["*"]}'))
    assert e.decide(request(principal="")).allowed
    assert not e.decide(request(principal=SLEEP)).allowed


def test_service_accounts_are_namespace_slash_name() -> None:
    e = engine(policy("ALLOW", 'rules:\n- from:\n  - source: {serviceAccounts: ["default/sleep"]}'))
    assert e.decide(request(principal=SLEEP)).allowed
    assert not e.decide(request(principal="cluster.local/ns/other/sa/sleep")).allowed


@pytest.mark.parametrize(
    ("source_ip", "allowed"), [("10.1.2.3", True), ("10.2.0.1", False), ("192.168.7.7", True), ("::1", False)]
)
def test_ip_blocks_addresses_and_cidrs(source_ip: str, allowed: bool) -> None:
    e = engine(policy("ALLOW", 'rules:\n- from:\n  - source: {ipBlocks: ["10.1.0.0/16", "192.168.7.7"]}'))
    assert e.decide(request(source_ip=source_ip)).allowed is allowed


def test_remote_ip_blocks_use_the_direct_peer_when_no_proxy_is_trusted() -> None:
    e = engine(policy("DENY", 'rules:\n- from:\n  - source: {remoteIpBlocks: ["203.0.113.0/24"]}'))
    assert not e.decide(request(source_ip="203.0.113.5", headers={"x-forwarded-for": "10.0.0.1"})).allowed
    assert e.decide(request(source_ip="10.0.0.1", headers={"x-forwarded-for": "203.0.113.5"})).allowed


# --------------------------------------------------------------------------- operations


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("httpbin.foo", True), ("HTTPBIN.FOO:8000", True), ("www.example.com", True), ("other.foo", False)],
)
def test_hosts_are_case_insensitive_and_match_with_or_without_port(host: str, allowed: bool) -> None:
    e = engine(policy("ALLOW", 'rules:\n- to:\n  - operation: {hosts: ["httpbin.foo", "*.example.com"]}'))
    assert e.decide(request(host=host)).allowed is allowed


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/ip", True),
        ("/headers", True),
        ("/status/200", True),
        ("/static/a.html", True),
        ("/admin", False),
        ("/status", False),
    ],
)
def test_paths_exact_prefix_suffix(path: str, allowed: bool) -> None:
    spec = 'rules:\n- to:\n  - operation: {paths: ["/ip", "/headers", "/status/*", "*.html"]}'
    assert engine(policy("ALLOW", spec)).decide(request(path=path)).allowed is allowed


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/foo/x/bar", True), ("/foo/x/y/bar", False), ("/api/a/b/c.txt", True), ("/api/c.pdf", False)],
)
def test_path_templates(path: str, allowed: bool) -> None:
    spec = 'rules:\n- to:\n  - operation: {paths: ["/foo/{*}/bar", "/api/{**}.txt"]}'
    assert engine(policy("ALLOW", spec)).decide(request(path=path)).allowed is allowed


def test_not_paths_and_ports() -> None:
    e = engine(policy("DENY", 'rules:\n- to:\n  - operation: {notPaths: ["/healthz"], ports: ["8000"]}'))
    assert e.decide(request(path="/healthz")).allowed
    assert not e.decide(request(path="/data")).allowed
    assert e.decide(request(path="/data", port=9000)).allowed


def test_grpc_methods_are_paths_and_post() -> None:
    spec = 'rules:\n- to:\n  - operation: {methods: ["POST"], paths: ["/helloworld.Greeter/*"]}'
    e = engine(policy("ALLOW", spec))
    assert e.decide(request(method="POST", path="/helloworld.Greeter/SayHello")).allowed
    assert not e.decide(request(method="POST", path="/grpc.health.v1.Health/Check")).allowed


# --------------------------------------------------------------------------- conditions


def test_header_condition_values_and_not_values() -> None:
    spec = """
    rules:
    - when:
      - key: request.headers[version]
        values: ["v1", "v2*"]
        notValues: ["v2-beta"]
    """
    e = engine(policy("ALLOW", spec))
    assert e.decide(request(headers={"version": "v1"})).allowed
    assert e.decide(request(headers={"version": "v2.1"})).allowed
    assert not e.decide(request(headers={"version": "v2-beta"})).allowed
    assert not e.decide(request(headers={})).allowed  # absent header: no value matches


def test_absent_attribute_passes_not_values() -> None:
    spec = "rules:\n- when:\n  - key: request.auth.principal\n    notValues: [\"https://x/y\"]"
    assert engine(policy("ALLOW", spec)).decide(request()).allowed


@pytest.mark.parametrize(
    ("key", "value", "attributes", "allowed"),
    [
        ("source.ip", "10.0.0.0/8", {"source_ip": "10.9.9.9"}, True),
        ("source.ip", "10.0.0.0/8", {"source_ip": "11.0.0.1"}, False),
        ("source.namespace", "default", {"principal": SLEEP}, True),
        ("source.principal", SLEEP, {"principal": SLEEP}, True),
        ("source.principal", SLEEP, {"principal": ""}, False),
        ("destination.port", "8000", {}, True),
        ("destination.port", "9000", {}, False),
        ("destination.ip", "127.0.0.0/8", {"destination_ip": "127.0.0.1"}, True),
    ],
)
def test_other_condition_keys(key: str, value: str, attributes: dict[str, str], allowed: bool) -> None:
    spec = f'rules:\n- when:\n  - key: {key}\n    values: ["{value}"]'
    assert engine(policy("ALLOW", spec)).decide(request(**attributes)).allowed is allowed


# --------------------------------------------------------------------------- validation (istiod's rules)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "action: CUSTOM\nprovider: {name: ext}\nrules:\n- {}",
            "spec.action: CUSTOM (an external authorizer) is not supported",
        ),
        ("provider: {name: ext}\nrules:\n- {}", "spec.provider: `provider` must not be set with a non CUSTOM action"),
        (
            "targetRef: {kind: Service, name: x}\nrules:\n- {}",
            "spec.targetRef: targetRef attaches a policy to waypoints",
        ),
        ("action: DENY", "DENY action without `rules` is meaningless"),
        ("rules:\n- from: []", "spec.rules[0].from: `from` must not be empty"),
        ("rules:\n- from:\n  - source: {}", "spec.rules[0].from[0].source: `from.source` must not be empty"),
        ("rules:\n- to:\n  - {}", "spec.rules[0].to[0]: `to.operation` must not be nil"),
        ("rules:\n- to:\n  - operation: {ports: [\"x\"]}", "operation.ports: bad port (x)"),
        ("rules:\n- to:\n  - operation: {methods: [\"\"]}", "empty value not allowed, found in Methods"),
        ("rules:\n- to:\n  - operation: {paths: [\"/{x}/{*}\"]}", "invalid or unsupported path template"),
        ("rules:\n- from:\n  - source: {ipBlocks: [\"300.1.1.1\"]}", "bad IP address (300.1.1.1)"),
        (
            "rules:\n- from:\n  - source: {namespaces: [a], serviceAccounts: [a/b]}",
            "cannot set serviceAccounts with namespaces or principals",
        ),
        (
            "rules:\n- when:\n  - key: source.ip",
            "at least one of `values` or `notValues` must be set for key source.ip",
        ),
        (
            "rules:\n- when:\n  - {key: request.headers, values: [a]}",
            "bad key (request.headers): should have format a[b]",
        ),
        ("rules:\n- when:\n  - {key: \"destination.labels[a]\", values: [a]}", "is replaced by the workload selector"),
        ("rules:\n- when:\n  - {key: foo.bar, values: [a]}", "unknown attribute: foo.bar"),
        (
            "selector: {matchLabels: {app: \"*\"}}\nrules:\n- {}",
            'spec.selector.matchLabels["app"]: invalid label value "*"',
        ),
        ("rules:\n- bogus: 1", 'spec.rules[0].bogus: unknown field "bogus"'),
    ],
)
def test_validation_follows_istiod(spec: str, message: str) -> None:
    found = problems_of(policy("", spec))
    assert any(message in p for p in found), found
    assert all(p.startswith("authz.yaml:") and "AuthorizationPolicy foo/p" in p for p in found)


def test_request_authentication_is_refused_not_ignored() -> None:
    text = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\nspec: {}\n"
    assert problems_of(text) == [
        "authz.yaml:2: RequestAuthentication default/jwt: kind: "
        'kind "RequestAuthentication" is not supported by meshlib'
    ]


def test_v1beta1_is_accepted_and_v1alpha1_is_not() -> None:
    ok = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {}\n"
    assert problems_of(ok) == []
    old = ok.replace("v1beta1", "v1alpha1")
    assert any("unsupported apiVersion" in p for p in problems_of(old))


# --------------------------------------------------------------------------- request attributes


@pytest.mark.parametrize(
    ("raw", "path"),
    [("/a/b?x=1", "/a/b"), ("/a/./b/../c", "/a/c"), ("/../a", "/a"), ("/a/b/..", "/a/"), ("", "/"), ("/x#f", "/x")],
)
def test_path_normalisation(raw: str, path: str) -> None:
    assert normalise_path(raw) == path


def test_principal_is_the_spiffe_id_without_scheme() -> None:
    assert principal_of(SpiffeId.parse("spiffe://cluster.local/ns/a/sa/b")) == "cluster.local/ns/a/sa/b"
    assert principal_of(None) == ""


def test_an_unknown_host_errs_towards_denying() -> None:
    # grpc.aio servers do not see :authority (host None): host conditions match in DENY, not in ALLOW.
    deny = engine(policy("DENY", 'rules:\n- to:\n  - operation: {hosts: ["admin.foo"]}'))
    assert not deny.decide(request(host=None)).allowed
    assert deny.decide(request(host="httpbin.foo")).allowed
    allow = engine(policy("ALLOW", 'rules:\n- to:\n  - operation: {notHosts: ["admin.foo"]}'))
    assert not allow.decide(request(host=None)).allowed
    assert allow.decide(request(host="httpbin.foo")).allowed


def test_policy_values_are_data_never_code() -> None:
    hostile = '/x"); __import__("os").system("false"); ("'
    e = engine(policy("ALLOW", f"rules:\n- to:\n  - operation: {{paths: ['{hostile}']}}"))
    assert e.decide(request(path=hostile)).allowed
    assert not e.decide(request(path="/x")).allowed


def _naive_match(pattern: str, value: str) -> bool:
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


@pytest.mark.parametrize("seed", range(6))
def test_generated_rules_agree_with_a_naive_reading(seed: int) -> None:
    import random

    rng = random.Random(seed)
    words = ["/a", "/a/b", "/b", "GET", "POST", "x", ""]
    patterns = ["/a", "/a*", "*b", "*", "GET", "P*", "x"]
    rules = []
    for _ in range(8):
        paths, methods = rng.sample(patterns, 2), rng.sample(patterns, 2)
        neg = rng.sample(patterns, 1)
        rules.append((paths, methods, neg))
    spec = "rules:\n" + "".join(
        f"- to:\n  - operation: {{paths: {paths!r}, methods: {methods!r}, notPaths: {neg!r}}}\n"
        for paths, methods, neg in rules
    )
    e = engine(policy("ALLOW", spec))
    for _ in range(200):
        path, method = rng.choice(words) or "/", rng.choice(words)
        expected = any(
            any(_naive_match(p, path) for p in paths)
            and any(_naive_match(m, method) for m in methods)
            and not any(_naive_match(n, path) for n in neg)
            for paths, methods, neg in rules
        )
        assert e.decide(request(path=path, method=method)).allowed is expected, (spec, path, method)
