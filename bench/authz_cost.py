"""Cost of one AuthorizationPolicy decision, and of the attribute extraction around it.

Run: ``python bench/authz_cost.py``. Prints µs per decision for a 20-rule policy
set (DENY, ALLOW and AUDIT policies mixing principals, namespaces, paths,
methods, hosts, ports, ipBlocks and header conditions) for a request allowed
by the last ALLOW rule (the worst case: every rule is tried), one allowed by
the first, one denied by a DENY rule and one denied by default — plus, as the
baseline measured in the same run, the cost of building the request's
attributes alone and of a bare ``dict`` lookup per rule.

Target (issue 12): ≤ 5 µs per decision for a 20-rule set.
"""

from __future__ import annotations

import os
import platform
import textwrap
import timeit

from meshlib.config.documents import parse_file
from meshlib.config.model import Labels, WorkloadIdentity
from meshlib.config.security_model import AuthorizationPolicySpec, SecurityPolicies
from meshlib.security.authz import AuthorizationEngine, InboundAttributes

WORKLOAD = WorkloadIdentity(namespace="shop", labels=Labels({"app": "orders", "version": "v1"}))


def policy_set() -> SecurityPolicies:
    docs = [
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: deny-admin, namespace: istio-system}
        spec:
          action: DENY
          rules:
          - to: [{operation: {paths: ["/admin*", "/debug/*"]}}]
          - from: [{source: {ipBlocks: ["203.0.113.0/24"]}}]
          - when: [{key: "request.headers[x-block]", values: ["*"]}]
        """,
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: audit-writes, namespace: shop}
        spec:
          action: AUDIT
          rules:
          - to: [{operation: {methods: [POST, PUT, DELETE]}}]
        """,
    ]
    rules = []
    for i in range(16):
        rules.append(
            f"""
          - from: [{{source: {{principals: ["cluster.local/ns/team{i}/sa/client{i}"]}}}},
                   {{source: {{namespaces: ["batch{i}"]}}}}]
            to: [{{operation: {{methods: [GET, POST], paths: ["/api/v{i}/*", "/orders/{i}"], ports: ["8080"]}}}}]
            when: [{{key: "request.headers[x-tenant]", values: ["tenant-{i}", "shared-*"]}}]"""
        )
    docs.append(
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: callers, namespace: shop}
        spec:
          selector: {matchLabels: {app: orders}}
          rules:"""
        + textwrap.indent("".join(rules), "        ")
    )
    docs.append(
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: health, namespace: shop}
        spec:
          rules:
          - to: [{operation: {paths: ["/healthz"], methods: [GET]}}]
        """
    )
    text = "\n---\n".join(textwrap.dedent(d).strip("\n") for d in docs) + "\n"
    resources, problems = parse_file("bench.yaml", text)
    assert not problems, problems
    policies = tuple(r for r in resources if isinstance(r, AuthorizationPolicySpec))
    return SecurityPolicies(policies)


def main() -> None:
    security = policy_set()
    engine = AuthorizationEngine.build(security, WORKLOAD)
    rule_count = sum(len(p.rules or ()) for p in security.authorization)
    headers = {"x-tenant": "tenant-15", "user-agent": "bench"}
    cases = {
        "allowed by the last ALLOW rule": InboundAttributes(
            method="GET", path="/api/v15/items", host="orders.shop:8080", port=8080, source_ip="10.0.0.7",
            principal="cluster.local/ns/team15/sa/client15", headers=headers,
        ),
        "allowed by the first ALLOW rule": InboundAttributes(
            method="GET", path="/api/v0/items", host="orders.shop:8080", port=8080, source_ip="10.0.0.7",
            principal="cluster.local/ns/team0/sa/client0", headers={"x-tenant": "tenant-0"},
        ),
        "denied by a DENY rule": InboundAttributes(
            method="GET", path="/admin/users", host="orders.shop:8080", port=8080, source_ip="10.0.0.7",
            principal="cluster.local/ns/team0/sa/client0", headers={},
        ),
        "denied by default (no ALLOW rule matches)": InboundAttributes(
            method="GET", path="/api/v99/x", host="orders.shop:8080", port=8080, source_ip="10.0.0.7",
            principal="cluster.local/ns/other/sa/x", headers={"x-tenant": "nobody"},
        ),
    }
    expected = [True, True, False, False]
    for (name, attributes), allowed in zip(cases.items(), expected, strict=True):
        assert engine.decide(attributes).allowed is allowed, name
    number = 20000
    print(f"AuthorizationPolicy decision cost — {rule_count} rules in {len(engine.policies)} policies")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    baseline_attrs = cases["allowed by the last ALLOW rule"]

    def build() -> InboundAttributes:
        return InboundAttributes(
            method="GET", path="/api/v15/items", host="orders.shop:8080", port=8080, source_ip="10.0.0.7",
            principal="cluster.local/ns/team15/sa/client15", headers=headers,
        )

    lookups = {f"rule{i}": i for i in range(rule_count)}
    keys = list(lookups)

    def dict_per_rule() -> None:
        for key in keys:
            lookups.get(key)

    base_build = min(timeit.repeat(build, number=number, repeat=5)) / number * 1e6
    base_dict = min(timeit.repeat(dict_per_rule, number=number, repeat=5)) / number * 1e6
    print(f"{'case':<46} {'µs/decision':>12} {'× dict look-up per rule':>24}")
    for name, attributes in cases.items():
        cost = min(timeit.repeat(lambda a=attributes: engine.decide(a), number=number, repeat=5)) / number * 1e6
        print(f"{name:<46} {cost:>12.2f} {cost / base_dict:>24.1f}")
    print(f"{'(baseline) build the attributes':<46} {base_build:>12.2f}")
    print(f"{'(baseline) one dict look-up per rule':<46} {base_dict:>12.2f}")
    del baseline_attrs


if __name__ == "__main__":
    main()
