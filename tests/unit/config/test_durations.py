"""Durations are bounded as Istio bounds them, and whatever validates also compiles and encodes to xDS."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshlib.config import compile_snapshot, read_resources
from meshlib.config.durations import MAX_DURATION_NS, parse_duration, parse_duration_ns
from meshlib.config.files import validate_paths
from meshlib.xds import ClientKind, encode_resources

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""


def _vs(timeout: str, per_try: str, delay: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route: [{{destination: {{host: reviews}}}}]
    timeout: "{timeout}"
    retries: {{attempts: 2, perTryTimeout: "{per_try}", backoff: "{per_try}"}}
    fault: {{delay: {{fixedDelay: "{delay}", percentage: {{value: 1}}}}}}
"""


def _dr(connect: str, interval: str, idle: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {{connectTimeout: "{connect}", idleTimeout: "{idle}"}}
      http: {{idleTimeout: "{idle}"}}
    outlierDetection: {{interval: "{interval}", baseEjectionTime: "{interval}"}}
    loadBalancer: {{warmup: {{duration: "{connect}"}}}}
"""


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0.001s", 1_000_000),
        ("1.5h", 5400 * 10**9),
        ("2562047h47m16.854775807s", MAX_DURATION_NS),  # Go's largest Duration
        ("2562047h47m16.854775808s", None),
        ("99999999999999999999h", None),
        ("1e3s", None),
        ("0.0000000001s", 0),  # below a nanosecond truncates, as Go does
        ("9" * 100 + "s", None),
    ],
)
def test_exact_and_bounded_parsing(text: str, ns: int | None) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout", "99999999999999999999h", 'invalid duration "99999999999999999999h" (longer than the maximum'),
        ("timeout", "0s", "duration must be at least 1ms"),
        ("timeout", "500us", "duration must be at least 1ms"),
        ("timeout", "1.5ms", "only durations to ms precision are supported"),
        ("perTryTimeout", "0.0005s", "duration must be at least 1ms"),
        ("fixedDelay", "1s1ns", "only durations to ms precision are supported"),
    ],
)
def test_istio_duration_rules(tmp_path: Path, field: str, value: str, message: str) -> None:
    good = {"timeout": "1s", "per_try": "100ms", "delay": "5ms"}
    good[{"timeout": "timeout", "perTryTimeout": "per_try", "fixedDelay": "delay"}[field]] = value
    (tmp_path / "m.yaml").write_text(SE + "---\n" + _vs(**good))
    problems = validate_paths([tmp_path])
    assert [p.field.rsplit(".", 1)[-1] for p in problems if p.field.endswith(field)], problems
    assert any(message in p.message for p in problems), [str(p) for p in problems]


def test_cors_max_age_needs_whole_seconds_and_tcp_idle_timeout_may_be_zero(tmp_path: Path) -> None:
    cors = _vs("1s", "100ms", "5ms").replace(
        "    timeout:", "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], maxAge: 1500ms}\n    timeout:"
    )
    (tmp_path / "m.yaml").write_text(SE + "---\n" + cors + "---\n" + _dr("1s", "10s", "0s").replace(
        '      http: {idleTimeout: "0s"}\n', ""
    ))
    problems = validate_paths([tmp_path])
    assert [str(p).split(": ", 2)[-1] for p in problems if not p.is_warning] == [
        "spec.http[0].corsPolicy.maxAge: only durations to seconds precision are supported"
    ]
    # A setting meshlib's own clients do not execute is said so, not silently accepted.
    [cors_warning] = [p for p in problems if p.is_warning]
    assert cors_warning.field == "spec.http[0].corsPolicy" and "not executed" in cors_warning.message


_DURATION_TEXT = st.one_of(
    st.integers(1, 2**63 // 10**6 - 1).map(lambda ms: f"{ms}ms"),  # valid: whole ms up to Go's maximum
    st.integers(1, 2562047).map(lambda h: f"{h}h"),
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.one_of(st.integers(0, 10**25), st.decimals(0, 10**12, places=4, allow_nan=False).map(str)),
        st.sampled_from(["h", "m", "s", "ms", "us", "ns"]),
    ),
    st.sampled_from(["0", "0s", "1ms", "2562047h", "2562048h", "-1s", "1", "inf", "nan", "1e309s"]),
)


@example(timeout="2562047h", per_try="2562047h", delay="2562047h", connect="2562047h", interval="2562047h",
         idle="2562047h")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timeout=_DURATION_TEXT, per_try=_DURATION_TEXT, delay=_DURATION_TEXT, connect=_DURATION_TEXT,
       interval=_DURATION_TEXT, idle=_DURATION_TEXT)
def test_whatever_validates_compiles_and_encodes(
    tmp_path: Path, *, timeout: str, per_try: str, delay: str, connect: str, interval: str, idle: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(SE + "---\n" + _vs(timeout, per_try, delay) + "---\n" + _dr(connect, interval, idle))
    resources, problems = read_resources([path])
    if any(not p.is_warning for p in problems):
        return
    snapshot = compile_snapshot(resources)
    for route_config in snapshot.route_configs.values():
        for vhost in route_config.virtual_hosts:
            for route in vhost.routes:
                assert route.timeout_s is None or math.isfinite(route.timeout_s)
    for kind in ClientKind:
        encode_resources(snapshot, kind)  # must not raise


def test_parse_duration_never_returns_infinity() -> None:
    assert parse_duration("9" * 60 + "h") is None
