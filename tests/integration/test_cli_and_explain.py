"""``meshlib validate`` / ``meshlib explain`` and the explain JSON contract on the embedded mesh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import meshlib
from meshlib.cli import main

EXPLAIN_KEYS = {
    "status", "route", "destinations", "timeout_s", "retries", "fault", "mirror", "rewrite", "endpoints", "lb",
}


def test_explain_contract_header_route() -> None:
    mesh = meshlib.Mesh.from_files()
    result = mesh.explain("GET", "http://reviews:9080/reviews/1", {"end-user": "jason"})
    assert result.keys() >= EXPLAIN_KEYS
    assert result["status"] == 200
    assert result["route"] == {"virtual_service": "default/reviews", "rule": "jason-sees-v2", "index": 0}
    assert result["destinations"] == [
        {"cluster": "outbound|9080|v2|reviews.default.svc.cluster.local",
         "host": "reviews.default.svc.cluster.local", "port": 9080, "subset": "v2", "weight": 100.0}
    ]
    assert result["endpoints"] == {"outbound|9080|v2|reviews.default.svc.cluster.local": ["127.0.0.1:19182"]}
    assert result["lb"] == "LEAST_REQUEST"
    assert result["timeout_s"] is None
    # No `retries` on this rule: Istio's mesh default policy applies.
    assert result["retries"] == {
        "attempts": 2, "per_try_timeout_s": None,
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    }


def test_explain_weighted_rule_with_policies() -> None:
    result = meshlib.Mesh.from_files().explain("GET", "http://reviews.default.svc.cluster.local:9080/")
    assert result["route"]["rule"] == "canary-v3"
    assert [(d["subset"], d["weight"]) for d in result["destinations"]] == [("v1", 80.0), ("v3", 20.0)]
    assert result["timeout_s"] == 2.0
    assert result["retries"] == {
        "attempts": 2, "per_try_timeout_s": 0.5, "retry_on": "gateway-error,connect-failure,refused-stream"
    }


def test_explain_rewrite_and_unknown_host() -> None:
    mesh = meshlib.Mesh.from_files()
    rewrite = mesh.explain("GET", "http://ratings:9080/v0/ratings/1")
    assert rewrite["rewrite"]["uri"] == "/ratings"
    assert rewrite["route"]["rule"] == "legacy-api"
    outside = mesh.explain("GET", "http://example.org/")
    assert outside["route"] is None
    assert outside["action"] == "passthrough"


def test_cli_explain_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "-H", "end-user: jason", "GET", "http://reviews:9080/reviews/1"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["destinations"][0]["subset"] == "v2"


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = Path(meshlib.mesh.default_config_path())
    assert main(["validate", str(good)]) == 0
    bad = tmp_path / "reviews.yaml"
    bad.write_text(
        "apiVersion: networking.istio.io/v1\n"
        "kind: VirtualService\n"
        "metadata: {name: reviews, namespace: default}\n"
        "spec:\n"
        "  hosts: [reviews]\n"
        "  http:\n"
        "  - route:\n"
        "    - destination: {host: reviews}\n"
        "      weight: -20\n"
        "      wieght: 3\n"
    )
    capsys.readouterr()
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:9: VirtualService default/reviews: spec.http[0].route[0].weight: must be at least 0" in out
    assert f"{bad}:10: VirtualService default/reviews: spec.http[0].route[0].wieght: unknown field" in out
