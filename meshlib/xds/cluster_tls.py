"""DestinationRule ``tls`` ↔ CDS ``transport_socket`` (``UpstreamTlsContext``), both directions.

Encoding, per client kind (shapes follow istiod's ``cluster_tls.go`` and gRFC A29):

- **SIMPLE / MUTUAL** (file certificates) for ENVOY and MESHLIB clients:
  ``common_tls_context.validation_context`` with ``trusted_ca`` / ``crl``
  files, ``match_typed_subject_alt_names`` (``spiffe://…`` names as URI SANs,
  others as DNS SANs), ``trust_chain_verification: ACCEPT_UNTRUSTED`` for
  ``insecureSkipVerify``; MUTUAL adds ``tls_certificates`` (chain + key files);
  ``sni`` as written.
- **ISTIO_MUTUAL** for ENVOY: istiod's SDS shape — secrets ``default`` (the
  workload certificate) and ``ROOTCA`` from the ``sds-grpc`` cluster that an
  Istio agent bootstrap defines; ALPN ``istio-peer-exchange, istio``.
- **ISTIO_MUTUAL** for GRPC_PROXYLESS (gRFC A29): certificate-provider
  instances only — ``tls_certificate_provider_instance`` and
  ``validation_context.ca_certificate_provider_instance``, both instance
  :data:`PROVIDER_INSTANCE` (the ``certificate_providers`` entry ``meshlib
  bootstrap`` writes) — plus ``match_subject_alt_names``.
- SIMPLE / MUTUAL with file paths cannot be told to a proxyless gRPC client
  (A29 honours provider instances only): :func:`grpc_can_use` says so and the
  cluster is not sent — its calls fail, they never go out in plaintext.
- MESHLIB clients also get the exact :class:`ClientTls` in cluster metadata
  (``tls``), so a round trip is lossless.

Decoding reads the metadata when present, else the ``UpstreamTlsContext``
(a named file that does not exist on this host is an error, as in Envoy):
file-based contexts become SIMPLE/MUTUAL, SDS ``default``/``ROOTCA`` or
provider instances become ISTIO_MUTUAL. A context meshlib cannot execute
(SDS secrets other than Istio's, a custom handshaker, an unknown transport
socket) is an :class:`XdsDecodeError` (NACK), never a plaintext cluster.
"""

from __future__ import annotations

import os
from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from meshlib.config.model import NO_TLS, ClientTls, TlsMode
from meshlib.xds.clients import ClientKind
from meshlib.xds.decode_common import Where, XdsDecodeError
from meshlib.xds.encode_common import pack

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
UPSTREAM_TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
PROVIDER_INSTANCE = "default"  # the bootstrap's certificate_providers key (istiod uses the same name)
WORKLOAD_CERT_NAME = "default"  # istio-agent SDS secret / provider certificate name of the workload cert
ROOT_CERT_NAME = "ROOTCA"
SDS_CLUSTER = "sds-grpc"  # the istio-agent SDS cluster in an Istio sidecar bootstrap
ISTIO_ALPN = ("istio-peer-exchange", "istio")
_SAN = common_pb2.SubjectAltNameMatcher.SanType
_MAX_SANS = 256


def grpc_can_use(tls: ClientTls) -> bool:
    """Whether a proxyless gRPC client can be told this TLS setting (gRFC A29: provider instances only)."""
    return tls.mode in ("DISABLE", "ISTIO_MUTUAL")


def encode_cluster_tls(out: Any, tls: ClientTls, client: ClientKind) -> None:
    """Set ``out.transport_socket`` (an Envoy Cluster) for ``tls``; nothing for DISABLE."""
    if not tls.enabled:
        return
    context = tls_pb2.UpstreamTlsContext(sni=tls.sni)
    common = context.common_tls_context
    if tls.mode == "ISTIO_MUTUAL":
        if client is ClientKind.GRPC_PROXYLESS:
            common.tls_certificate_provider_instance.instance_name = PROVIDER_INSTANCE
            common.tls_certificate_provider_instance.certificate_name = WORKLOAD_CERT_NAME
            validation = common.validation_context
            validation.ca_certificate_provider_instance.instance_name = PROVIDER_INSTANCE
            validation.ca_certificate_provider_instance.certificate_name = ROOT_CERT_NAME
            for name in tls.subject_alt_names:
                validation.match_subject_alt_names.append(_matcher(name))
        else:
            common.alpn_protocols.extend(ISTIO_ALPN)
            secret = common.tls_certificate_sds_secret_configs.add(name=WORKLOAD_CERT_NAME)
            _sds_source(secret.sds_config)
            combined = common.combined_validation_context
            combined.validation_context_sds_secret_config.name = ROOT_CERT_NAME
            _sds_source(combined.validation_context_sds_secret_config.sds_config)
            _typed_sans(combined.default_validation_context, tls.subject_alt_names)
    else:
        validation = common.validation_context
        if tls.ca_certificates:
            validation.trusted_ca.filename = tls.ca_certificates
        if tls.ca_crl:
            validation.crl.filename = tls.ca_crl
        if tls.insecure_skip_verify:
            validation.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
        _typed_sans(validation, tls.subject_alt_names)
        if tls.mode == "MUTUAL":
            certificate = common.tls_certificates.add()
            certificate.certificate_chain.filename = tls.client_certificate
            certificate.private_key.filename = tls.private_key
    out.transport_socket.name = TLS_TRANSPORT_SOCKET
    out.transport_socket.typed_config.CopyFrom(pack(context))


def tls_metadata(tls: ClientTls) -> dict[str, Any]:
    """The exact settings for meshlib clients' cluster metadata."""
    return {
        "mode": tls.mode,
        "ca_certificates": tls.ca_certificates,
        "client_certificate": tls.client_certificate,
        "private_key": tls.private_key,
        "sni": tls.sni,
        "subject_alt_names": list(tls.subject_alt_names),
        "insecure_skip_verify": tls.insecure_skip_verify,
        "ca_crl": tls.ca_crl,
    }


def decode_cluster_tls(message: Any, where: Where, extras: dict[str, Any]) -> ClientTls:
    """A cluster's TLS settings: meshlib metadata when present, else its transport socket."""
    socket_set = message.HasField("transport_socket")
    meta = extras.get("tls")
    if isinstance(meta, dict):
        tls = _from_metadata(meta, where)
        if tls.enabled and not socket_set:
            raise where.error("transport_socket", f"metadata says tls mode {tls.mode} but no transport socket is set")
        return _files_exist(tls, _Prefixed(where, "metadata.meshlib.tls."))
    legacy = extras.get("tls_mode")  # older meshlib control planes: the mode only
    if not socket_set:
        if legacy not in (None, "DISABLE"):
            raise where.error("transport_socket", f"metadata says tls mode {legacy} but no transport socket is set")
        return NO_TLS
    socket = message.transport_socket
    if socket.name not in (TLS_TRANSPORT_SOCKET, "tls", "envoy.transport_sockets.raw_buffer"):
        raise where.error("transport_socket.name", f"unsupported transport socket {socket.name!r}")
    typed = socket.typed_config
    if socket.name == "envoy.transport_sockets.raw_buffer" and not typed.type_url.endswith("UpstreamTlsContext"):
        return NO_TLS
    if typed.type_url != UPSTREAM_TLS_CONTEXT:
        raise where.error("transport_socket.typed_config", f"expected UpstreamTlsContext, got {typed.type_url!r}")
    context = tls_pb2.UpstreamTlsContext()
    if not typed.Unpack(context):
        raise where.error("transport_socket.typed_config", "cannot decode UpstreamTlsContext")
    prefixed = _Prefixed(where, "transport_socket.typed_config.")
    return _files_exist(_from_context(context, prefixed), prefixed)


def _files_exist(tls: ClientTls, where: _Prefixed) -> ClientTls:
    """A file the settings name must exist here (as Envoy NACKs a cluster whose files are missing)."""
    for field, path in (
        ("ca_certificates", tls.ca_certificates), ("client_certificate", tls.client_certificate),
        ("private_key", tls.private_key), ("ca_crl", tls.ca_crl),
    ):
        if path and not os.path.isfile(path):
            raise where.error(field, f"file {path!r} does not exist on this host")
    return tls


class _Prefixed:
    """A :class:`Where` whose field paths start inside a nested message."""

    def __init__(self, where: Where, prefix: str) -> None:
        self.where = where
        self.prefix = prefix

    def error(self, path: str, message: str) -> XdsDecodeError:
        return self.where.error(self.prefix + path, message)


def _from_context(context: Any, where: _Prefixed) -> ClientTls:
    common = context.common_tls_context
    if common.HasField("custom_handshaker"):
        raise where.error("common_tls_context.custom_handshaker", "custom handshakers are not supported")
    sni = context.sni
    which = common.WhichOneof("validation_context_type")
    validation = None
    istio = False
    if which == "validation_context":
        validation = common.validation_context
        istio = validation.HasField("ca_certificate_provider_instance")
    elif which == "combined_validation_context":
        combined = common.combined_validation_context
        validation = combined.default_validation_context
        istio = _istio_sds(combined.validation_context_sds_secret_config, ROOT_CERT_NAME, where)
    elif which == "validation_context_certificate_provider_instance":
        istio = True
    elif which is not None:
        raise where.error(f"common_tls_context.{which}", "unsupported validation context source")
    sans = _sans(validation, where) if validation is not None else ()
    if istio or common.HasField("tls_certificate_provider_instance") or common.tls_certificate_sds_secret_configs:
        for secret in common.tls_certificate_sds_secret_configs:
            _istio_sds(secret, WORKLOAD_CERT_NAME, where)
        return ClientTls(mode="ISTIO_MUTUAL", sni=sni, subject_alt_names=sans)
    mode: TlsMode = "SIMPLE"
    cert = key = ""
    if common.tls_certificates:
        if len(common.tls_certificates) > 1:
            raise where.error("common_tls_context.tls_certificates", "at most one client certificate is supported")
        certificate = common.tls_certificates[0]
        cert = _filename(certificate.certificate_chain, where, "tls_certificates[0].certificate_chain")
        key = _filename(certificate.private_key, where, "tls_certificates[0].private_key")
        mode = "MUTUAL"
    ca = crl = ""
    skip = False
    if validation is not None:
        if validation.HasField("trusted_ca"):
            ca = _filename(validation.trusted_ca, where, "validation_context.trusted_ca")
        if validation.HasField("crl"):
            crl = _filename(validation.crl, where, "validation_context.crl")
        skip = validation.trust_chain_verification == common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    return ClientTls(
        mode=mode, ca_certificates=ca, client_certificate=cert, private_key=key, sni=sni,
        subject_alt_names=sans, insecure_skip_verify=skip, ca_crl=crl,
    )


def _istio_sds(secret: Any, expected: str, where: _Prefixed) -> bool:
    if secret.name != expected:
        raise where.error(
            "common_tls_context", f"SDS secret {secret.name!r} is not supported (only Istio's {expected!r})"
        )
    return True


def _filename(source: Any, where: _Prefixed, field: str) -> str:
    if source.WhichOneof("specifier") != "filename":
        raise where.error(field, "only file names are supported (inline certificates are not)")
    name: str = source.filename
    return name


def _sans(validation: Any, where: _Prefixed) -> tuple[str, ...]:
    names: list[str] = []
    for matcher in validation.match_typed_subject_alt_names:
        names.append(_exact(matcher.matcher, where))
    for string_matcher in validation.match_subject_alt_names:
        names.append(_exact(string_matcher, where))
    if len(names) > _MAX_SANS:
        raise where.error("validation_context.match_subject_alt_names", f"more than {_MAX_SANS} names")
    return tuple(names)


def _exact(matcher: Any, where: _Prefixed) -> str:
    if matcher.WhichOneof("match_pattern") != "exact" or matcher.ignore_case:
        raise where.error(
            "validation_context.match_subject_alt_names", "only exact, case-sensitive matches are supported"
        )
    value: str = matcher.exact
    return value


def _from_metadata(meta: dict[str, Any], where: Where) -> ClientTls:
    mode = meta.get("mode", "DISABLE")
    if mode not in ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"):
        raise where.error("metadata.meshlib.tls.mode", f"unknown mode {mode!r}")
    texts = {k: meta.get(k, "") for k in ("ca_certificates", "client_certificate", "private_key", "sni", "ca_crl")}
    if not all(isinstance(v, str) for v in texts.values()):
        raise where.error("metadata.meshlib.tls", "file names and sni must be strings")
    sans = meta.get("subject_alt_names") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans) or len(sans) > _MAX_SANS:
        raise where.error("metadata.meshlib.tls.subject_alt_names", "expected a list of strings")
    return ClientTls(
        mode=mode, subject_alt_names=tuple(sans), insecure_skip_verify=bool(meta.get("insecure_skip_verify")),
        **texts,
    )


def _matcher(name: str) -> Any:
    return string_pb2.StringMatcher(exact=name)


def _typed_sans(validation: Any, names: tuple[str, ...]) -> None:
    for name in names:
        san_type = _SAN.URI if "://" in name else _SAN.DNS
        validation.match_typed_subject_alt_names.add(san_type=san_type, matcher=_matcher(name))


def _sds_source(config: Any) -> None:
    """istiod's SDS source: the istio-agent over the ``sds-grpc`` cluster."""
    config.resource_api_version = config_source_pb2.ApiVersion.V3
    source = config.api_config_source
    source.api_type = config_source_pb2.ApiConfigSource.GRPC
    source.set_node_on_first_message_only = True
    source.transport_api_version = config_source_pb2.ApiVersion.V3
    source.grpc_services.add().envoy_grpc.cluster_name = SDS_CLUSTER


def downstream_tls_socket(out: Any, *, require_client_certificate: bool) -> None:
    """Set a listener filter chain's ``transport_socket`` to a ``DownstreamTlsContext`` for proxyless gRPC servers.

    gRFC A29: the server certificate and the CA that verifies clients come from
    the bootstrap's certificate-provider instance :data:`PROVIDER_INSTANCE`
    (istiod's shape for proxyless servers under PeerAuthentication STRICT).
    """
    context = tls_pb2.DownstreamTlsContext()
    context.require_client_certificate.value = require_client_certificate
    common = context.common_tls_context
    common.tls_certificate_provider_instance.instance_name = PROVIDER_INSTANCE
    common.tls_certificate_provider_instance.certificate_name = WORKLOAD_CERT_NAME
    validation = common.validation_context
    validation.ca_certificate_provider_instance.instance_name = PROVIDER_INSTANCE
    validation.ca_certificate_provider_instance.certificate_name = ROOT_CERT_NAME
    out.transport_socket.name = TLS_TRANSPORT_SOCKET
    out.transport_socket.typed_config.CopyFrom(pack(context))
