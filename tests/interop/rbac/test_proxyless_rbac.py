"""AuthorizationPolicy → RBAC filters on an xDS-enabled grpcio server (gRFC A41), fed by meshlib's control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshlib.config.documents import parse_file
from meshlib.config.model import Labels, WorkloadIdentity
from meshlib.config.security_model import AuthorizationPolicySpec, SecurityPolicies
from meshlib.security.rbac_xds import rbac_http_filters

MAIN = Path(__file__).with_name("proxyless_rbac_main.py")
ROOT = Path(__file__).resolve().parents[3]

POLICIES = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-methods, namespace: foo}
spec:
  selector: {matchLabels: {app: echo}}
  rules:
  - to:
    - operation: {paths: ["/test.Echo/Open", "/test.Echo/Secret"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-secret, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/test.Echo/Secret"]}
"""


def security(text: str) -> SecurityPolicies:
    resources, problems = parse_file("rbac.yaml", text)
    assert problems == []
    return SecurityPolicies(tuple(r for r in resources if isinstance(r, AuthorizationPolicySpec)))


def test_deny_filter_comes_before_allow_and_rules_are_named_as_istiod_does() -> None:
    from envoy.extensions.filters.http.rbac.v3 import rbac_pb2

    echo = WorkloadIdentity(namespace="foo", labels=Labels({"app": "echo"}))
    filters = rbac_http_filters(security(POLICIES), echo)
    assert [f.name for f in filters] == ["envoy.filters.http.rbac.deny", "envoy.filters.http.rbac.allow"]
    allow = rbac_pb2.RBAC()
    filters[1].typed_config.Unpack(allow)
    assert list(allow.rules.policies) == ["ns[foo]-policy[echo-methods]-rule[0]"]
    # The ALLOW policy's selector does not pick a workload without app=echo: only the DENY filter.
    others = rbac_http_filters(security(POLICIES), WorkloadIdentity(namespace="foo"))
    assert [f.name for f in others] == ["envoy.filters.http.rbac.deny"]


@pytest.mark.slow
def test_grpcio_xds_server_enforces_the_policies(tmp_path: Path) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(POLICIES)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRPC_VERBOSITY": "NONE"}
    done = subprocess.run(
        [sys.executable, str(MAIN), str(config)], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {"Open": "OK", "Secret": "PERMISSION_DENIED", "Other": "PERMISSION_DENIED"}
