"""DestinationRule tls and PeerAuthentication: validation (file:line:field), the model, Istio's composition."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlib.config.istio_types import Meta
from meshlib.config.model import ClientTls, Labels, WorkloadIdentity
from meshlib.config.peer_authentication import PeerAuthenticationSpec, resolve_inbound_mtls
from meshlib.security.ca import MeshCA
from meshlib.security.spiffe import SpiffeId
from tests.unit.config.helpers import problems, snapshot

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


def dr(tls: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy:
    tls: {tls}
"""


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("pem")
    ca = MeshCA.create_root("cluster.local")
    bundle = ca.issue_bundle(SpiffeId.for_workload("default", "client"))
    other = ca.issue_bundle(SpiffeId.for_workload("default", "other"))
    files = {
        "cert": bundle.cert_chain_pem, "key": bundle.private_key_pem, "ca": bundle.trust_bundle_pem,
        "other_key": other.private_key_pem, "junk": b"not a pem\n",
    }
    out: dict[str, str] = {}
    for name, data in files.items():
        (directory / f"{name}.pem").write_bytes(data)
        out[name] = str(directory / f"{name}.pem")
    return out


def test_tls_settings_carried_fully(tmp_path: Path, pem_files: dict[str, str]) -> None:
    tls = (
        f"{{mode: MUTUAL, clientCertificate: {pem_files['cert']}, privateKey: {pem_files['key']}, "
        f"caCertificates: {pem_files['ca']}, sni: reviews.example, subjectAltNames: [spiffe://cluster.local/ns/a/sa/b]}}"
    )
    got = snapshot(tmp_path, dr(tls)).clusters[REVIEWS].policy.tls
    assert got == ClientTls(
        mode="MUTUAL", ca_certificates=pem_files["ca"], client_certificate=pem_files["cert"],
        private_key=pem_files["key"], sni="reviews.example", subject_alt_names=("spiffe://cluster.local/ns/a/sa/b",),
    )


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ("{mode: MUTUAL}", [
            "mesh/bad.yaml:7: DestinationRule default/reviews: spec.trafficPolicy.tls.clientCertificate: "
            "client certificate required for mutual tls",
            "mesh/bad.yaml:7: DestinationRule default/reviews: spec.trafficPolicy.tls.privateKey: "
            "private key required for mutual tls",
        ]),
        ("{mode: MUTUAL, clientCertificate: /nonexistent/c.pem, privateKey: /nonexistent/k.pem}", [
            "spec.trafficPolicy.tls.clientCertificate: /nonexistent/c.pem: cannot read (No such file or directory)",
            "spec.trafficPolicy.tls.privateKey: /nonexistent/k.pem: cannot read (No such file or directory)",
        ]),
        ("{mode: MUTUAL, clientCertificate: JUNK, privateKey: KEY}", ["spec.trafficPolicy.tls.clientCertificate: "]),
        ("{mode: MUTUAL, clientCertificate: CERT, privateKey: OTHER_KEY}",
         ["spec.trafficPolicy.tls.privateKey: ", "does not match the key of"]),
        ("{mode: ISTIO_MUTUAL, caCertificates: CA}",
         ["spec.trafficPolicy.tls.caCertificates: must be empty with ISTIO_MUTUAL"]),
        ("{mode: ISTIO_MUTUAL, insecureSkipVerify: true}",
         ["spec.trafficPolicy.tls.insecureSkipVerify: cannot be set with ISTIO_MUTUAL"]),
        ("{mode: SIMPLE, insecureSkipVerify: true, caCertificates: CA}",
         ["spec.trafficPolicy.tls.caCertificates: cannot be set when insecureSkipVerify is true"]),
        ("{mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}",
         ["spec.trafficPolicy.tls.subjectAltNames: cannot be set when insecureSkipVerify is true"]),
        ("{mode: SIMPLE, credentialName: my-secret}",
         ["spec.trafficPolicy.tls.credentialName: credentialName (a Kubernetes secret served over SDS)"]),
        ("{mode: SIMPLE, caCrl: JUNK}", ["spec.trafficPolicy.tls.caCrl: ", "not a PEM certificate revocation list"]),
        ("{mode: SIMPLE, subjectAltNames: ['']}", ["spec.trafficPolicy.tls.subjectAltNames[0]: must not be empty"]),
        ("{mode: SOMETIMES}", ["spec.trafficPolicy.tls.mode: "]),
        ("{mode: SIMPLE, caCertificates: /dev/zero}",  # a device would never end: refused, never read
         ["spec.trafficPolicy.tls.caCertificates: /dev/zero: not a regular file"]),
    ],
)
def test_tls_validation(tmp_path: Path, pem_files: dict[str, str], tls: str, expected: list[str]) -> None:
    for key, name in (("JUNK", "junk"), ("OTHER_KEY", "other_key"), ("KEY", "key"), ("CERT", "cert"), ("CA", "ca")):
        tls = tls.replace(key, pem_files[name])
    found = "\n".join(problems(tmp_path, dr(tls)))
    for fragment in expected:
        assert fragment in found, found


def test_istio_mutual_verifies_the_service_entry_identities(tmp_path: Path) -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pay}
spec:
  hosts: [pay.default.svc.cluster.local]
  location: MESH_INTERNAL
  subjectAltNames: [spiffe://cluster.local/ns/default/sa/pay]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pay}
spec:
  host: pay
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets: [{name: v1, labels: {v: "1"}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [x]}}}]
"""
    clusters = snapshot(tmp_path, text, services=False).clusters
    assert clusters["outbound|80||pay.default.svc.cluster.local"].policy.tls.subject_alt_names == (
        "spiffe://cluster.local/ns/default/sa/pay",
    )
    # subjectAltNames written on the DestinationRule win, as in istiod.
    assert clusters["outbound|80|v1|pay.default.svc.cluster.local"].policy.tls.subject_alt_names == ("x",)


PA = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: %s, namespace: %s}
spec:
%s
"""


def test_peer_authentication_parsed_into_the_snapshot(tmp_path: Path) -> None:
    text = PA % ("workload", "default", "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n"
                 "  portLevelMtls: {8080: {mode: DISABLE}, 9090: {mode: UNSET}}")
    snap = snapshot(tmp_path, text)
    (spec,) = snap.security.peer_authentication
    assert (spec.ref, spec.selector, spec.mode) == ("default/workload", (("app", "reviews"),), "STRICT")
    assert spec.port_modes == ((8080, "DISABLE"), (9090, "UNSET"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("  mtls: {mode: SOMETIMES}", "spec.mtls.mode: "),
        ("  portLevelMtls: {8080: {mode: STRICT}}", "spec.portLevelMtls: portLevelMtls requires a workload selector"),
        ("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {0: {mode: STRICT}}", 'port "0" must be a number'),
        ("  targetRef: {kind: Gateway, name: g}", "spec.targetRef: targetRef attaches a policy to waypoints"),
        ("  selector: {matchLabels: {app: '*'}}", 'spec.selector.matchLabels["app"]: invalid label value "*"'),
    ],
)
def test_peer_authentication_validation(tmp_path: Path, spec: str, expected: str) -> None:
    found = "\n".join(problems(tmp_path, PA % ("p", "default", spec)))
    assert expected in found and "bad.yaml:" in found, found


def _pa(name: str, namespace: str, mode: str, selector: dict[str, str] | None = None,
        ports: tuple[tuple[int, str], ...] = ()) -> PeerAuthenticationSpec:
    return PeerAuthenticationSpec(
        Meta("f", 1, "PeerAuthentication", namespace, name),
        tuple(sorted(selector.items())) if selector is not None else None,
        mode, ports,  # type: ignore[arg-type]
    )


def test_resolution_selector_over_namespace_over_mesh() -> None:
    mesh_wide = _pa("mesh", "istio-system", "STRICT")
    namespace = _pa("ns", "default", "PERMISSIVE")
    workload = _pa("wl", "default", "UNSET", {"app": "reviews"}, ((8080, "DISABLE"), (9090, "UNSET")))
    other = _pa("other", "default", "DISABLE", {"app": "ratings"})
    labels = {"app": "reviews"}
    assert resolve_inbound_mtls([mesh_wide], "default", labels).mode == "STRICT"
    assert resolve_inbound_mtls([mesh_wide, namespace], "default", labels).mode == "PERMISSIVE"
    resolved = resolve_inbound_mtls([mesh_wide, namespace, workload, other], "default", labels)
    # UNSET at the workload inherits the namespace's PERMISSIVE; ports override, UNSET ports inherit.
    assert (resolved.mode, resolved.mode_for(8080), resolved.mode_for(9090)) == ("PERMISSIVE", "DISABLE", "PERMISSIVE")
    assert resolved.policies == ("istio-system/mesh", "default/ns", "default/wl")
    # No policy at all, or UNSET mesh-wide: PERMISSIVE. A policy in another namespace does not apply.
    assert resolve_inbound_mtls([], "default", labels).mode == "PERMISSIVE"
    assert resolve_inbound_mtls([_pa("mesh", "istio-system", "UNSET")], "default", labels).mode == "PERMISSIVE"
    assert resolve_inbound_mtls([_pa("x", "prod", "STRICT")], "default", labels).mode == "PERMISSIVE"


def test_strict_peer_authentication_reaches_the_mesh(tmp_path: Path) -> None:
    import meshlib

    (tmp_path / "pa.yaml").write_text(PA % ("default", "default", "  mtls: {mode: STRICT}"))
    mesh = meshlib.Mesh.from_files(tmp_path / "pa.yaml")
    assert mesh.inbound_tls().mtls().mode == "STRICT"
    assert mesh._peer_auth is not None
    _ = WorkloadIdentity(labels=Labels({}))


def test_relative_tls_files_are_relative_to_the_yaml_file(tmp_path: Path, pem_files: dict[str, str]) -> None:
    certs = tmp_path / "mesh" / "certs"
    certs.mkdir(parents=True)
    (certs / "ca.pem").write_bytes(Path(pem_files["ca"]).read_bytes())
    got = snapshot(tmp_path, dr("{mode: SIMPLE, caCertificates: certs/ca.pem}")).clusters[REVIEWS].policy.tls
    assert got.ca_certificates == str(tmp_path / "mesh" / "certs" / "ca.pem")
