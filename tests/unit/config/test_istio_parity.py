"""Istio's validation (istio/istio pkg/config/validation) as the reference, rule by rule.

Each row is one rule: a small document and what Istio says about it —
accepted, accepted with a warning, or rejected — with a fragment of the
message. Rows marked ``# was:`` are cases meshlib used to get wrong.
"""

from __future__ import annotations

# ruff: noqa: E501  (a table of YAML cases reads better unwrapped)
from pathlib import Path

import pytest

from meshlib.config import validate_paths

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
{spec}"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dr}}
spec:
{spec}"""
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs}}
spec:
{spec}"""
REVIEWS = SE.format(
    name="reviews",
    spec="  hosts: [reviews]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
    "  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.0.1, labels: {v: a}}]\n",
)


def _http(rule: str, extra: str = "") -> str:
    """A VirtualService for reviews with one http rule (``rule`` is its body, indented by 4)."""
    return VS.format(spec=f"  hosts: [reviews]\n{extra}  http:\n  - " + rule.strip().replace("\n", "\n    ") + "\n")


ROUTE = "route: [{destination: {host: reviews}}]"
OK = ("ok", "")

CASES: list[tuple[str, str, tuple[str, str]]] = [
    # ---- VirtualService
    ("weights are relative (sum > 100)",  # was: rejected
     _http("route:\n- {destination: {host: reviews}, weight: 300}\n- {destination: {host: reviews}, weight: 900}"), OK),
    ("weights summing past uint32 (Envoy and gRPC cannot take them)",
     _http("route:\n" + "".join("- {destination: {host: reviews}, weight: 2147483647}\n" for _ in range(3))),
     ("error", "total destination weight 6442450941 exceeds 4294967295")),
    ("negative weight", _http("route: [{destination: {host: reviews}, weight: -1}]"), ("error", "must be at least 0")),
    ("total weight 0 over several destinations",
     _http("route:\n- {destination: {host: reviews}, weight: 0}\n- {destination: {host: reviews}, weight: 0}"),
     ("error", "total destination weight is 0")),
    ("lone destination with weight 0 is fine", _http("route: [{destination: {host: reviews}, weight: 0}]"), OK),
    ("nothing to do", VS.format(spec="  hosts: [reviews]\n"),  # was: accepted
     ("error", "http, tcp or tls must be provided in virtual service")),
    ("rule with no action", _http("match: [{uri: {prefix: /a}}]"),
     ("error", "must set exactly one of route, redirect, directResponse, delegate")),
    ("wildcard-only host for the mesh", VS.format(spec=f"  hosts: ['*']\n  http: [{{{ROUTE}}}]\n"),  # was: accepted
     ("error", "wildcard host * is not allowed for virtual services bound to the mesh gateway")),
    ("wildcard-only host for a gateway",
     VS.format(spec=f"  hosts: ['*']\n  gateways: [istio-system/gw]\n  http: [{{{ROUTE}}}]\n"), OK),
    ("duplicate hosts", VS.format(spec=f"  hosts: ['*.example.com', a.example.com]\n  http: [{{{ROUTE}}}]\n"),
     ("error", "duplicate hosts in virtual service: *.example.com & a.example.com")),
    ("partial wildcard host", VS.format(spec=f"  hosts: ['*example.com']\n  http: [{{{ROUTE}}}]\n"), OK),  # was: rejected
    ("bad gateway namespace", _http(ROUTE, "  gateways: [Istio-System/gw]\n"),  # was: accepted
     ("error", 'invalid value for namespace: "Istio-System"')),
    ("bad gateway name", _http(ROUTE, "  gateways: [istio-system/gw_1]\n"),
     ("error", 'invalid value for gateway name: "gw_1"')),
    ("legacy gateway name", _http(ROUTE, "  gateways: [gw.istio-system, mesh]\n"),
     ("warning", 'using legacy gatewayName format "gw.istio-system"')),
    ("empty redirect", _http("redirect: {uri: ''}"),  # was: accepted
     ("error", "must set at least one of uri, authority, scheme, port, derivePort")),
    ("redirect scheme", _http("redirect: {scheme: ftp}"), ("error", 'invalid redirect scheme, must be "http" or "https"')),
    ("redirect with fault", _http("redirect: {uri: /x}\nfault: {abort: {httpStatus: 500, percentage: {value: 1}}}"),
     ("error", "fault cannot be used together with redirect")),
    ("direct response with rewrite", _http("directResponse: {status: 200}\nrewrite: {uri: /x}"),
     ("error", "rewrite cannot be used together with directResponse")),
    ("empty rewrite", _http(f"{ROUTE}\nrewrite: {{uri: ''}}"),  # was: accepted
     ("error", "rewrite must specify at least one of uri, uriRegexRewrite, or authority")),
    ("regex rewrite with an empty side", _http(f"{ROUTE}\nrewrite: {{uriRegexRewrite: {{match: '/a', rewrite: ''}}}}"),
     ("error", "UriRegexRewrite requires both Rewrite and Match fields to be specified")),
    ("empty header name in set", _http(f"{ROUTE}\nheaders: {{request: {{set: {{'': x}}}}}}"),  # was: accepted
     ("error", "header name cannot be empty")),
    ("pseudo header set", _http(f"{ROUTE}\nheaders: {{request: {{set: {{':path': /x}}}}}}"),
     ("error", 'invalid header ":path": header cannot have ":" prefix')),
    ("host removed from a response", _http(f"{ROUTE}\nheaders: {{response: {{remove: [Host]}}}}"),
     ("error", 'invalid header "Host": cannot set Host header')),
    ("authority set twice", _http(f"{ROUTE}\nrewrite: {{authority: a}}\nheaders: {{request: {{set: {{host: b}}}}}}"),
     ("error", 'authority header cannot be set multiple times: have "a", attempting to set "b"')),
    ("bad header value", _http(f"{ROUTE}\nheaders: {{request: {{set: {{x-a: 'abc%123'}}}}}}"),
     ("error", "unterminated variable expression")),
    ("invalid match header name", _http(f"match: [{{headers: {{'bad name': {{exact: x}}}}}}]\n{ROUTE}"),
     ("error", "header name bad name is not a valid header name")),
    ("empty method prefix", _http(f"match: [{{method: {{prefix: ''}}}}]\n{ROUTE}"),
     ("error", "prefix string match should not be empty")),
    ("empty uri prefix is allowed", _http(f"match: [{{uri: {{prefix: ''}}}}]\n{ROUTE}"), OK),
    ("empty regex", _http(f"match: [{{uri: {{regex: ''}}}}]\n{ROUTE}"), ("error", "regex string match should not be empty")),
    ("bad sourceNamespace", _http(f"match: [{{sourceNamespace: Prod}}]\n{ROUTE}"),
     ("error", "sourceNamespace match Prod is invalid")),
    ("timeout below 1ms", _http(f"{ROUTE}\ntimeout: 500us"), ("error", "duration must be at least 1ms")),  # was: accepted
    ("timeout finer than 1ms", _http(f"{ROUTE}\ntimeout: 1001us"), ("error", "only durations to ms precision")),
    ("CORS method that is not a method", _http(f"{ROUTE}\ncorsPolicy: {{allowOrigins: [{{exact: 'https://a'}}], "
                                               "allowMethods: [GET, FETCH]}"),  # was: accepted
     ("error", '"FETCH" is not a supported HTTP method')),
    ("CORS empty origin", _http(f"{ROUTE}\ncorsPolicy: {{allowOrigins: [{{exact: ''}}]}}"),  # was: accepted
     ("error", "'' is not a valid match type for CORS allow origins")),
    ("CORS bad header", _http(f"{ROUTE}\ncorsPolicy: {{allowHeaders: ['a b']}}"),
     ("error", "header name a b is not a valid header name")),
    ("CORS deprecated allowOrigin", _http(f"{ROUTE}\ncorsPolicy: {{allowOrigin: ['https://a']}}"),
     ("warning", 'using deprecated setting "allowOrigin"')),
    ("deprecated mirrorPercent", _http(f"{ROUTE}\nmirror: {{host: reviews}}\nmirrorPercent: 5"),  # was: silent
     ("warning", 'using deprecated setting "mirrorPercent"')),
    ("rule after a catch-all", VS.format(spec=f"  hosts: [reviews]\n  http:\n  - {ROUTE}\n  - {ROUTE}\n"),
     ("warning", "virtualService rule #1 not used (only the last rule can have no matches)")),
    ("direct response body over 1 MB", _http("directResponse: {status: 200, body: {string: '" + "x" * 1_048_577 + "'}}"),
     ("error", "must be less than 1MB")),
    ("exportTo duplicates", _http(ROUTE, "  exportTo: [default, .]\n"),
     ("error", "duplicate entries in exportTo: . and current namespace default")),
    ("exportTo * with others", _http(ROUTE, "  exportTo: ['*', prod]\n"),
     ("error", "cannot have both public (*) and non-public exportTo values")),
    ("delegate with tcp routes", VS.format(spec="  tcp: [{route: [{destination: {host: reviews}}]}]\n"),
     ("error", "delegate virtual service must have no tcp route specified")),
    ("retry settings with attempts 0", _http(f"{ROUTE}\nretries: {{attempts: 0, perTryTimeout: 1s}}"),
     ("error", "http retry policy configured when attempts are set to 0 (disabled)")),
    ("retryOn status code Go does not know", _http(f"{ROUTE}\nretries: {{attempts: 2, retryOn: '599'}}"),
     ("error", '"599" is not a valid retryOn policy')),
    ("fault percentage below 0.0001", _http(f"{ROUTE}\nfault: {{abort: {{httpStatus: 500, percentage: {{value: 0.00001}}}}}}"),
     ("error", "is neither 0.0, nor in range [0.0001, 100.0]")),
    ("deprecated fault percent", _http(f"{ROUTE}\nfault: {{delay: {{fixedDelay: 1s, percent: 5}}}}"),
     ("warning", 'using deprecated setting "percent"')),
    ("TLS route without destinations", VS.format(spec="  hosts: [a.example.com]\n  tls: [{match: [{sniHosts: [a.example.com]}]}]\n"),
     ("error", "TLS route is required")),
    ("SNI host outside the VirtualService hosts", VS.format(
        spec="  hosts: [a.example.com]\n  tls: [{match: [{sniHosts: [b.example.com]}], route: [{destination: {host: reviews}}]}]\n"),
     ("error", 'SNI host "b.example.com" is not a compatible subset of any of the virtual service hosts')),
    ("SNI host covered by a wildcard host", VS.format(
        spec="  hosts: ['*.example.com']\n  tls: [{match: [{sniHosts: [b.example.com]}], route: [{destination: {host: reviews}}]}]\n"),
     OK),
    ("bad destination subnet", VS.format(
        spec="  hosts: [a.example.com]\n  tcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: reviews}}]}]\n"),
     ("error", "10.0.0.0/33 is not a valid IP or CIDR block")),
    # ---- DestinationRule
    ("TLS insecure with a CA", DR.format(spec="  host: reviews\n  trafficPolicy: {tls: {mode: SIMPLE, "
                                         "insecureSkipVerify: true, caCertificates: /ca.pem}}\n"),  # was: accepted
     ("error", "cannot be set when insecureSkipVerify is true")),
    ("empty DR host", DR.format(spec="  host: ''\n"), ("error", "host must not be empty")),  # was: accepted
    ("empty traffic policy", DR.format(spec="  host: reviews\n  trafficPolicy: {}\n"),
     ("error", "traffic policy must have at least one field")),
    ("empty connection pool", DR.format(spec="  host: reviews\n  trafficPolicy: {connectionPool: {}}\n"),
     ("error", "connection pool must have at least one field")),
    ("upgrade and client protocol", DR.format(spec="  host: reviews\n  trafficPolicy: {connectionPool: {http: "
                                              "{h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}\n"),  # was: accepted
     ("error", "use client protocol must not be true when H2UpgradePolicy is UPGRADE")),
    ("tunnel and proxy protocol", DR.format(spec="  host: reviews\n  trafficPolicy: {tunnel: {targetHost: a.b, "
                                            "targetPort: 80}, proxyProtocol: {version: V1}}\n"),
     ("error", "tunnel and proxyProtocol must not be set together")),
    ("local-origin failures without split", DR.format(spec="  host: reviews\n  trafficPolicy: {outlierDetection: "
                                                      "{consecutiveLocalOriginFailures: 3}}\n"),
     ("error", "split external local origin errors is set to false")),
    ("deprecated consecutiveErrors", DR.format(spec="  host: reviews\n  trafficPolicy: {outlierDetection: "
                                               "{consecutiveErrors: 3}}\n"),  # was: rejected (unknown field)
     ("warning", "outlier detection consecutive errors is deprecated")),
    ("deprecated minimumRingSize", DR.format(spec="  host: reviews\n  trafficPolicy: {loadBalancer: {consistentHash: "
                                             "{httpHeaderName: x, minimumRingSize: 64}}}\n"),
     ("warning", "consistent hash MinimumRingSize is deprecated")),
    ("maglev without table size", DR.format(spec="  host: reviews\n  trafficPolicy: {loadBalancer: {consistentHash: "
                                            "{httpHeaderName: x, maglev: {}}}}\n"),
     ("error", "tableSize must be set for maglev")),
    ("cookie without name", DR.format(spec="  host: reviews\n  trafficPolicy: {loadBalancer: {consistentHash: "
                                      "{httpCookie: {name: '', ttl: 0s}}}}\n"),
     ("error", "name required for HttpCookie")),
    ("warmup aggression below 1", DR.format(spec="  host: reviews\n  trafficPolicy: {loadBalancer: {warmup: "
                                            "{duration: 10s, aggression: 0.5}}}\n"),
     ("error", "aggression should be greater than or equal to 1")),
    ("locality weight 0", DR.format(spec="  host: reviews\n  trafficPolicy: {loadBalancer: {localityLbSetting: "
                                    "{distribute: [{from: 'a/*', to: {'a/b/*': 100, 'c/*': 0}}]}}}\n"),
     ("error", "locality weight must be in range [1, 100]")),
    ("locality wildcard not last", DR.format(spec="  host: reviews\n  trafficPolicy: {loadBalancer: {localityLbSetting: "
                                             "{distribute: [{from: 'a/*/c', to: {'a/b': 100}}]}}}\n"),
     ("error", "wildcard '*' number can not exceed 1 and must be in the end")),
    ("failover across zones", DR.format(spec="  host: reviews\n  trafficPolicy: {outlierDetection: {interval: 1s}, "
                                        "loadBalancer: {localityLbSetting: {failover: [{from: a/b, to: c}]}}}\n"),
     ("error", "locality lb failover only specify region")),
    ("failover without outlier detection", DR.format(spec="  host: reviews\n  trafficPolicy: {loadBalancer: "
                                                     "{localityLbSetting: {failover: [{from: a, to: c}]}}}\n"),
     ("warning", "outlier detection policy must be provided for failover")),
    ("failover with a topology priority", DR.format(
        spec="  host: reviews\n  trafficPolicy: {outlierDetection: {interval: 1s}, loadBalancer: {localityLbSetting: "
        "{failover: [{from: a, to: c}], failoverPriority: [topology.kubernetes.io/zone]}}}\n"),
     ("error", "can not simultaneously set 'failover' and topology label 'topology.kubernetes.io/zone'")),
    ("selector without labels", DR.format(spec="  host: reviews\n  workloadSelector: {matchLabels: {}}\n"),
     ("warning", "workload selector specified without labels")),
    ("selector with exportTo beyond the namespace",
     DR.format(spec="  host: reviews\n  workloadSelector: {matchLabels: {app: a}}\n  exportTo: ['*']\n"),
     ("error", "cannot have exportTo beyond current namespace")),
    ("Sidecar partial wildcard egress host", "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n"
     "spec:\n  egress: [{hosts: ['*/*example.com']}]\n", ("error", 'partial wildcard "*example.com" not allowed')),
    # ---- ServiceEntry
    ("DYNAMIC_DNS resolution", SE.format(name="dyn", spec="  hosts: ['*.example.com']\n  resolution: DYNAMIC_DNS\n"
                                         "  ports: [{number: 443, name: tls, protocol: TLS}]\n"), OK),  # was: rejected
    ("partial wildcard SE host", SE.format(name="pw", spec="  hosts: ['*example.com']\n"
                                           "  ports: [{number: 80, name: http, protocol: HTTP}]\n"),  # was: rejected
     ("warning", 'partial wildcard "*example.com" not allowed')),
    ("DNS with CIDR addresses", SE.format(name="c", spec="  hosts: [a.example.com]\n  addresses: [10.0.0.0/24]\n"
                                          "  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"),
     ("error", "CIDR addresses are allowed only for NONE/STATIC resolution types")),  # was: accepted
    ("IPv6 address YAML would read as base 60", SE.format(
        name="v6", spec="  hosts: [v6.example.com]\n  addresses: [1:2:3:4:5:6:7:8]\n  resolution: STATIC\n"
        "  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 1:2:3:4:5:6:7:9}]\n"),
     OK),  # was: rejected ("expected string, got integer")
    ("unnamed port", SE.format(name="u", spec="  hosts: [u.example.com]\n  ports: [{number: 80, protocol: HTTP}]\n"),
     ("error", "ports[0].name: is required")),
    ("several hosts on a TCP port", SE.format(name="t", spec="  hosts: [a.example.com, b.example.com]\n"
                                              "  resolution: DNS\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n"),
     ("error", "multiple hosts provided with non-HTTP, non-TLS ports")),
    ("DNS_ROUND_ROBIN with two endpoints", SE.format(
        name="r", spec="  hosts: [r.example.com]\n  resolution: DNS_ROUND_ROBIN\n"
        "  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: a.example.com}, "
        "{address: b.example.com}]\n"),
     ("error", "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN")),
    ("selector with NONE resolution", SE.format(name="n", spec="  hosts: [n.example.com]\n  resolution: NONE\n"
                                                "  ports: [{number: 80, name: http, protocol: HTTP}]\n"
                                                "  workloadSelector: {labels: {app: n}}\n"),
     ("warning", "workloadSelector should not be set when resolution mode is NONE")),
    ("wildcard-only SE host", SE.format(name="w", spec="  hosts: ['*']\n  ports: [{number: 80, name: h, protocol: HTTP}]\n"),
     ("error", 'invalid host "*"')),
    ("all-numeric top-level label", SE.format(name="num", spec="  hosts: [a.123]\n"
                                              "  ports: [{number: 80, name: h, protocol: HTTP}]\n"),
     ("error", "the top-level label cannot be all-numeric")),
    # ---- kinds Istio has that meshlib does not apply
    ("EnvoyFilter is ignored", "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\n"
     "spec: {}\n", ("warning", "is ignored by meshlib")),  # was: rejected
]


@pytest.mark.parametrize(("document", "expected"), [(d, e) for _, d, e in CASES], ids=[name for name, _, _ in CASES])
def test_istio_validation_rule(tmp_path: Path, document: str, expected: tuple[str, str]) -> None:
    (tmp_path / "reviews.yaml").write_text(REVIEWS)
    (tmp_path / "case.yaml").write_text(document)
    problems = [p for p in validate_paths([tmp_path]) if p.file.endswith("case.yaml")]
    verdict, fragment = expected
    errors = [str(p) for p in problems if not p.is_warning]
    warnings = [str(p) for p in problems if p.is_warning]
    if verdict == "ok":
        assert errors == [] and warnings == []
    elif verdict == "warning":
        assert errors == []
        assert any(fragment in w for w in warnings), warnings
    else:
        assert any(fragment in e for e in errors), errors
