"""``meshlib explain --inbound``: the AuthorizationPolicy decision for a request, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlib.cli import main

POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reads, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    to:
    - operation: {methods: [GET]}
"""


@pytest.mark.parametrize(
    ("extra", "status", "policy"),
    [
        (["--principal", "spiffe://cluster.local/ns/default/sa/sleep", "GET"], 200, "foo/reads"),
        (["--principal", "spiffe://cluster.local/ns/default/sa/sleep", "DELETE"], 403, None),
        (["GET"], 403, None),  # plaintext: no principal
    ],
)
def test_explain_inbound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], status: int, policy: str | None
) -> None:
    (tmp_path / "authz.yaml").write_text(POLICY)
    argv = ["explain", "--inbound", "--config", str(tmp_path), "--namespace", "foo", "--label", "app=httpbin"]
    assert main([*argv, *extra, "http://httpbin.foo:8000/status"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["policy"]) == (status, policy)
    assert result["policies"]["allow"] == ["foo/reads"]


def test_a_workload_the_selector_does_not_pick_is_not_governed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "authz.yaml").write_text(POLICY)
    argv = ["explain", "--inbound", "--config", str(tmp_path), "--namespace", "foo", "--label", "app=other"]
    assert main([*argv, "DELETE", "http://other.foo/"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["allowed"], result["reason"]) == (True, "no AuthorizationPolicy applies to this workload")
