"""Node-id binding rules, bootstrap channel_creds selection, the Workload API refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.errors import MeshError
from meshlib.security import SpiffeId
from meshlib.security.errors import SecurityError
from meshlib.security.node_identity import NodeIdRule
from meshlib.security.workload_api import WorkloadApiCertificateSource, WorkloadApiNotSupported
from meshlib.xds.channel_creds import ChannelCredentialsError, XdsChannelCredentials

REVIEWS = SpiffeId.for_workload("default", "reviews")


@pytest.mark.parametrize(
    ("node_id", "allowed"),
    [
        ("reviews.default", True),
        ("reviews.default~pod-7f9c", True),
        ("sidecar~10.0.0.1~reviews-v1-abc.default~default.svc.cluster.local", True),
        ("reviews.default2", False),
        ("reviews.defaultx~1", False),
        ("ratings.default", False),
        ("reviews.other~1", False),
        ("sidecar~10.0.0.1~ratings-v1-abc.default~default.svc.cluster.local", False),
        ("sidecar~10.0.0.1~reviews-v1-abc.other~other.svc.cluster.local", False),
        ("", False),
    ],
)
def test_istio_identity_claims_node_ids_that_embed_it(node_id: str, allowed: bool) -> None:
    assert (NodeIdRule("cluster.local").check(REVIEWS, node_id) is None) is allowed


def test_refusals_say_why() -> None:
    rule = NodeIdRule("cluster.local")
    assert "presented no SPIFFE certificate" in (rule.check(None, "reviews.default") or "")
    other_td = SpiffeId.parse("spiffe://other.org/ns/default/sa/reviews")
    assert "not in trust domain 'cluster.local'" in (rule.check(other_td, "reviews.default") or "")
    plain = SpiffeId.parse("spiffe://cluster.local/gateway")
    assert "needs a node id map entry" in (rule.check(plain, "gateway") or "")
    assert "needs reviews.default[~...]" in (rule.check(REVIEWS, "x") or "")


def test_map_overrides_the_default_rule(tmp_path: Path) -> None:
    path = tmp_path / "map"
    path.write_text(f"# comment\n{REVIEWS} productpage-1 canary-*\nspiffe://cluster.local/gateway gw~*\n")
    rule = NodeIdRule.from_file("cluster.local", path)
    assert rule.check(REVIEWS, "productpage-1") is None
    assert rule.check(REVIEWS, "canary-7") is None
    assert rule.check(REVIEWS, "reviews.default") is not None  # listed identities get only their patterns
    assert rule.check(SpiffeId.parse("spiffe://cluster.local/gateway"), "gw~a") is None
    path.write_text(f"{REVIEWS} a*b\n")
    with pytest.raises(SecurityError, match=r"map:1: 'a\*b': '\*' is only allowed at the end"):
        NodeIdRule.from_file("cluster.local", path)
    path.write_text("spiffe://cluster.local/x\n")
    with pytest.raises(SecurityError, match="map:1: expected"):
        NodeIdRule.from_file("cluster.local", path)


def test_channel_creds_first_known_type_wins() -> None:
    creds = XdsChannelCredentials.from_bootstrap([{"type": "xds-future"}, {"type": "insecure"}, {"type": "tls"}])
    assert creds.kind == "insecure"
    tls = XdsChannelCredentials.from_bootstrap(
        [{"type": "tls", "config": {"ca_certificate_file": "ca.pem", "certificate_file": "c", "private_key_file": "k"}}]
    )
    assert tls.describe() == "mtls" and tls.ca_certificate_file == Path("ca.pem")
    assert XdsChannelCredentials.from_bootstrap([{"type": "tls"}]).describe() == "tls"


@pytest.mark.parametrize(
    ("creds", "message"),
    [
        (
            [{"type": "google_default"}, {"type": "insecure"}],
            "google_default (Google Cloud credentials) is not supported",
        ),
        ([{"type": "tls", "config": {"certificate_file": "c"}}], "must be given together"),
        ([{"type": "tls", "config": {"ca_certificate_file": 5}}], "ca_certificate_file: must be a non-empty string"),
        ([{"type": "alts"}], "no supported type"),
        ([], "must be a non-empty list"),
    ],
)
def test_channel_creds_errors(creds: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ChannelCredentialsError) as info:
        XdsChannelCredentials.from_bootstrap(creds)
    assert message in str(info.value)


def test_unreadable_tls_file_is_an_error_not_plaintext(tmp_path: Path) -> None:
    creds = XdsChannelCredentials("tls", ca_certificate_file=tmp_path / "missing.pem")
    with pytest.raises(ChannelCredentialsError, match="cannot read"):
        creds.grpc_credentials()


def test_workload_api_without_a_socket_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    with pytest.raises(WorkloadApiNotSupported, match="set SPIFFE_ENDPOINT_SOCKET") as info:
        WorkloadApiCertificateSource()
    assert isinstance(info.value, MeshError)
