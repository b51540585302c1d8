"""Client-kind recognition and the gRPC xDS bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2

from meshlib.config.model import Locality
from meshlib.xds import BootstrapError, ClientKind, client_kind_from_node, grpc_bootstrap, load_bootstrap


@pytest.mark.parametrize(
    ("agent", "metadata", "kind"),
    [
        ("gRPC C-core linux", {}, ClientKind.GRPC_PROXYLESS),  # grpcio: "gRPC C-core " + GPR_PLATFORM_STRING
        ("gRPC Node Pure JS", {}, ClientKind.GRPC_PROXYLESS),  # grpc-js-xds
        ("gRPC Go", {}, ClientKind.GRPC_PROXYLESS),
        ("", {"GENERATOR": "grpc"}, ClientKind.GRPC_PROXYLESS),  # Istio's proxyless bootstrap
        ("envoy", {}, ClientKind.ENVOY),
        ("", {}, ClientKind.ENVOY),
        ("meshlib", {}, ClientKind.MESHLIB),
        ("gRPC C-core linux", {"MESHLIB_CLIENT": "1"}, ClientKind.MESHLIB),
    ],
)
def test_client_kind_from_node(agent: str, metadata: dict[str, str], kind: ClientKind) -> None:
    node = base_pb2.Node(id="n", user_agent_name=agent)
    node.metadata.update(metadata)
    assert client_kind_from_node(node) is kind


def test_grpc_bootstrap_shape() -> None:
    data = grpc_bootstrap(
        "127.0.0.1:15010",
        "productpage-1",
        cluster="productpage",
        locality=Locality("us-east", "a"),
        metadata={"MESHLIB_CLIENT": "1"},
    )
    assert data == {
        "xds_servers": [
            {"server_uri": "127.0.0.1:15010", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}
        ],
        "node": {
            "id": "productpage-1",
            "cluster": "productpage",
            "locality": {"region": "us-east", "zone": "a"},
            "metadata": {"MESHLIB_CLIENT": "1"},
        },
        "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
    }
    json.dumps(data)


def test_grpc_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(BootstrapError, match="node_id"):
        grpc_bootstrap("127.0.0.1:15010", "")
    with pytest.raises(BootstrapError, match="channel_creds"):
        grpc_bootstrap("127.0.0.1:15010", "n", channel_creds="magic")
    for address in ("controlplane", "cp:", "cp:http", "cp:70000", ":15010"):
        with pytest.raises(BootstrapError, match="host:port"):
            grpc_bootstrap(address, "n")
    # Accepted forms: host:port, [v6]:port, and gRPC target URIs.
    for address in ("cp.istio-system:15010", "[::1]:15010", "dns:///cp:15010"):
        assert grpc_bootstrap(address, "n")["xds_servers"][0]["server_uri"] == address


def test_load_bootstrap_from_file_and_inline(tmp_path: Path) -> None:
    data = grpc_bootstrap("cp:15010", "n1", client_default_listener_resource_name_template="%s")
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(data))
    assert load_bootstrap({"GRPC_XDS_BOOTSTRAP": str(path), "GRPC_XDS_BOOTSTRAP_CONFIG": "{"}) == data
    assert load_bootstrap({"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(data)}) == data


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no xDS bootstrap: set GRPC_XDS_BOOTSTRAP"),
        ({"GRPC_XDS_BOOTSTRAP": "/nonexistent/b.json"}, "GRPC_XDS_BOOTSTRAP=/nonexistent/b.json: cannot read"),
        ({"GRPC_XDS_BOOTSTRAP_CONFIG": "{nope"}, "GRPC_XDS_BOOTSTRAP_CONFIG: invalid JSON"),
        ({"GRPC_XDS_BOOTSTRAP_CONFIG": '{"node": {}}'}, "GRPC_XDS_BOOTSTRAP_CONFIG: xds_servers: must be a non-empty"),
        (
            {"GRPC_XDS_BOOTSTRAP_CONFIG": '{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "x"}]}]}'},
            r"xds_servers\[0\].channel_creds: no supported type",
        ),
    ],
)
def test_load_bootstrap_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(BootstrapError, match=message):
        load_bootstrap(env)
