"""No input, however mangled, may escape as anything but located problems."""

from __future__ import annotations

import contextlib
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.config import compile_snapshot
from meshlib.config.documents import parse_file
from meshlib.errors import ConfigInvalid
from meshlib.xds import ClientKind, encode_resources

FULL = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, annotations: {a: b}}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http, targetPort: 8080}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1, labels: {version: v1}, ports: {http: 1}, locality: a/b, weight: 2}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, annotations: {meshlib.io/load-balancer: PEAK_EWMA}}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: c, ttl: 1s}, ringHash: {minimumRingSize: 10}}
      localityLbSetting: {distribute: [{from: a, to: {b: 100}}]}
      warmup: {duration: 1s, minimumPercent: 5, aggression: 2}
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 1s, tcpKeepalive: {time: 1s}}
      http: {http1MaxPendingRequests: 1, maxRetries: 1, idleTimeout: 1s, h2UpgradePolicy: UPGRADE}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, minHealthPercent: 1}
    tls: {mode: SIMPLE, subjectAltNames: [x]}
    portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: RANDOM}}]
  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {http: {maxRetries: 2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: r
    match:
    - uri: {prefix: /a}
      headers: {x: {regex: "a.*"}, y: {}}
      queryParams: {q: {exact: "1"}}
      sourceLabels: {app: x}
      port: 9080
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      weight: 100
      headers: {request: {set: {a: b}}}
    rewrite: {uriRegexRewrite: {match: "/a(.*)", rewrite: "/b\\\\1"}}
    timeout: 1s
    retries: {attempts: 2, perTryTimeout: 1s, retryOn: "5xx,503", backoff: 10ms}
    fault: {delay: {fixedDelay: 1s, percentage: {value: 1}}, abort: {grpcStatus: UNAVAILABLE}}
    mirrors: [{destination: {host: reviews}, percentage: {value: 5}}]
    corsPolicy: {allowOrigins: [{exact: x}], maxAge: 1s}
    headers: {response: {remove: [x]}}
  - redirect: {uri: /x, redirectCode: 302}
  - directResponse: {status: 200, body: {string: ok}}
  - delegate: {name: d}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: d}
spec:
  http: [{route: [{destination: {host: reviews}}]}]
"""
DOCUMENTS: list[Any] = list(yaml.safe_load_all(FULL))

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


PATHS = _paths(DOCUMENTS)[1:]  # not the stream itself


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (_replace(v, rest, new) if k == head else v) for k, v in value.items()}
    return [(_replace(v, rest, new) if i == head else v) for i, v in enumerate(value)]


def _check(text: str) -> None:
    resources, problems = parse_file("fuzz.yaml", text)
    with contextlib.suppress(ConfigInvalid):
        snapshot = compile_snapshot(resources)  # even the valid part of an invalid file compiles
        if all(p.is_warning for p in problems):
            for kind in ClientKind:  # whatever validates must encode
                encode_resources(snapshot, kind)


def test_the_full_document_is_valid() -> None:
    resources, problems = parse_file("full.yaml", FULL)
    assert [p for p in problems if not p.is_warning] == []
    snap = compile_snapshot(resources)
    assert snap.clusters


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), junk)
def test_any_value_replaced_by_junk(path: tuple[Any, ...], value: Any) -> None:
    _check(yaml.safe_dump_all(_replace(DOCUMENTS, path, value)))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab:-[]{}&*!|>'\"#%@` \n\t0123456789.", max_size=60))
def test_arbitrary_text(text: str) -> None:
    _check(text)
