"""Message classes of Istio's CA API, built from a hand-written descriptor (no generated code, no protoc).

``istio/api:security/v1alpha1/ca.proto`` (package ``istio.v1.auth``)::

    message IstioCertificateRequest {
      string csr = 1;                        // PEM CSR
      string subject_id = 2;                 // optional
      int64 validity_duration = 3;           // requested lifetime, seconds
      google.protobuf.Struct metadata = 4;   // e.g. ImpersonatedIdentity (newer istio/api)
    }
    message IstioCertificateResponse { repeated string cert_chain = 1; }   // leaf first, root last
    service IstioCertificateService {
      rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse);
    }

The classes live in a private descriptor pool, so they cannot clash with another copy of the
same proto loaded by some other library. Wire-compatible with Istio's agents and istiod.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

PACKAGE = "istio.v1.auth"
SERVICE_NAME = f"{PACKAGE}.IstioCertificateService"
METHOD_NAME = "CreateCertificate"
METHOD_PATH = f"/{SERVICE_NAME}/{METHOD_NAME}"

_F = descriptor_pb2.FieldDescriptorProto


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    struct_file = descriptor_pb2.FileDescriptorProto()
    struct_pb2.DESCRIPTOR.CopyToProto(struct_file)
    pool.Add(struct_file)

    ca_file = descriptor_pb2.FileDescriptorProto(
        name="istio/security/v1alpha1/ca.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=[struct_file.name],
    )
    request = ca_file.message_type.add(name="IstioCertificateRequest")
    request.field.add(name="csr", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="csr")
    request.field.add(name="subject_id", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="subjectId")
    request.field.add(
        name="validity_duration", number=3, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL, json_name="validityDuration"
    )
    request.field.add(
        name="metadata",
        number=4,
        type=_F.TYPE_MESSAGE,
        type_name=".google.protobuf.Struct",
        label=_F.LABEL_OPTIONAL,
        json_name="metadata",
    )
    response = ca_file.message_type.add(name="IstioCertificateResponse")
    response.field.add(name="cert_chain", number=1, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED, json_name="certChain")
    service = ca_file.service.add(name="IstioCertificateService")
    service.method.add(
        name=METHOD_NAME,
        input_type=f".{PACKAGE}.IstioCertificateRequest",
        output_type=f".{PACKAGE}.IstioCertificateResponse",
    )
    pool.Add(ca_file)
    return pool


_POOL = _build_pool()

# ``Any``: classes made at runtime have no static type; their fields are listed above.
IstioCertificateRequest: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateRequest")
)
IstioCertificateResponse: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateResponse")
)
