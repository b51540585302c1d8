"""One YAML file → validated Istio resources.

Which documents count: ``apiVersion: networking.istio.io/{v1,v1beta1,v1alpha3}``
with kind ServiceEntry, DestinationRule, VirtualService, WorkloadEntry or Sidecar, and
``security.istio.io/{v1,v1beta1}`` AuthorizationPolicy and PeerAuthentication. Documents of other
API groups (a ConfigMap, a Deployment) are skipped silently so a mesh
directory can sit next to other manifests. Under ``networking.istio.io``,
``Gateway`` is skipped too (it only configures ingress proxies, which meshlib
is not). Kinds that configure the proxy rather than traffic — ``EnvoyFilter``,
``ProxyConfig``, ``WorkloadGroup`` (:data:`IGNORED_KINDS`) — are accepted with
a warning that meshlib ignores them, as is any other ``*.istio.io`` group
meshlib does not read (telemetry, extensions); an unknown kind in a group
meshlib reads is an error.

``apiVersion: meshlib.io/v1``, ``kind: EmptyMesh`` marks a configuration as
intentionally empty (see :class:`~meshlib.config.istio_types.EmptyMeshMarker`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from meshlib.config.fields import Fields, Sink
from meshlib.config.istio_types import EmptyMeshMarker, IstioResource, Meta
from meshlib.config.parse_authorization_policy import SPEC_FIELDS as AP_FIELDS
from meshlib.config.parse_authorization_policy import parse_authorization_policy
from meshlib.config.parse_destination_rule import SPEC_FIELDS as DR_FIELDS
from meshlib.config.parse_destination_rule import parse_destination_rule
from meshlib.config.parse_peer_authentication import SPEC_FIELDS as PA_FIELDS
from meshlib.config.parse_peer_authentication import parse_peer_authentication
from meshlib.config.parse_service_entry import SPEC_FIELDS as SE_FIELDS
from meshlib.config.parse_service_entry import parse_service_entry
from meshlib.config.parse_sidecar import SPEC_FIELDS as SIDECAR_FIELDS
from meshlib.config.parse_sidecar import parse_sidecar
from meshlib.config.parse_virtual_service import SPEC_FIELDS as VS_FIELDS
from meshlib.config.parse_virtual_service import parse_virtual_service
from meshlib.config.parse_workload_entry import SPEC_FIELDS as WE_FIELDS
from meshlib.config.parse_workload_entry import parse_workload_entry
from meshlib.config.yaml_nodes import Node, YamlDocument, parse_yaml
from meshlib.errors import ConfigProblem

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1", "v1alpha3")
ParseSpec = Callable[[Sink, Meta, Fields], IstioResource]
KINDS: dict[str, tuple[frozenset[str], ParseSpec]] = {
    "ServiceEntry": (SE_FIELDS, parse_service_entry),
    "DestinationRule": (DR_FIELDS, parse_destination_rule),
    "VirtualService": (VS_FIELDS, parse_virtual_service),
    "WorkloadEntry": (WE_FIELDS, parse_workload_entry),
    "Sidecar": (SIDECAR_FIELDS, parse_sidecar),
}
SKIPPED_KINDS = frozenset({"Gateway"})
UNSUPPORTED_KINDS: frozenset[str] = frozenset()
# Proxy-level configuration: accepted, with a warning that meshlib does not apply it.
IGNORED_KINDS = frozenset({"EnvoyFilter", "ProxyConfig", "WorkloadGroup"})
MESHLIB_GROUP = "meshlib.io"
EMPTY_MESH_KIND = "EmptyMesh"  # apiVersion: meshlib.io/v1 — see EmptyMeshMarker
IGNORED_GROUPS = frozenset({"telemetry.istio.io", "extensions.istio.io"})

SECURITY_GROUP = "security.istio.io"
SECURITY_VERSIONS = ("v1", "v1beta1")
SECURITY_KINDS: dict[str, tuple[frozenset[str], ParseSpec]] = {
    "AuthorizationPolicy": (AP_FIELDS, parse_authorization_policy),
    "PeerAuthentication": (PA_FIELDS, parse_peer_authentication),
}
# A security policy meshlib cannot enforce must not be dropped silently: it is an error.
SECURITY_UNSUPPORTED_KINDS = frozenset({"RequestAuthentication"})
TOP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
META_FIELDS = frozenset(
    {
        "name",
        "namespace",
        "labels",
        "annotations",
        "generateName",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "ownerReferences",
        "finalizers",
        "managedFields",
        "selfLink",
    }
)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # DNS-1123 subdomain
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # DNS-1123 label


def parse_file(file: str, text: str) -> tuple[list[IstioResource], list[ConfigProblem]]:
    """Validate every document of one file. ``file`` is the name used in problems."""
    documents, yaml_errors = parse_yaml(text)
    problems = [ConfigProblem(file, e.line, "", "", "", e.message) for e in yaml_errors]
    resources: list[IstioResource] = []
    for document in documents:
        resource = parse_document(file, document, problems)
        if resource is not None:
            resources.append(resource)
    # YAML errors and document errors interleave by line, as a reader expects.
    problems.sort(key=lambda p: p.line)
    return resources, problems


def parse_document(file: str, document: YamlDocument, problems: list[ConfigProblem]) -> IstioResource | None:
    """Validate one document; None when it is skipped or too broken to use."""
    root = document.root
    if root is None:
        return None
    if root.kind != "map":
        problems.append(
            ConfigProblem(file, root.line, "", "", "", f"expected a mapping, got {root.type_name}")
        )
        return None
    api_version = _text(root, "apiVersion")
    kind = _text(root, "kind")
    group, _, version = (api_version or "").rpartition("/")
    if api_version is None:
        if kind in KINDS or kind in SECURITY_KINDS:
            problems.append(ConfigProblem(file, root.line, kind, "", "apiVersion", "is required"))
        return None
    if group == MESHLIB_GROUP and kind == EMPTY_MESH_KIND:
        return EmptyMeshMarker(Meta(file, document.line, kind, "", ""))
    if group in IGNORED_GROUPS or (group == GROUP and kind in IGNORED_KINDS):
        sink = Sink(file, kind or "")
        sink.name = _subject(root.mapping.get("metadata"))
        sink.warn(
            root.mapping["kind"].line if "kind" in root.mapping else root.line,
            "kind",
            f"{api_version} {kind} is ignored by meshlib (it configures the proxy, not traffic)",
        )
        problems.extend(sink.problems)
        return None
    versions: tuple[str, ...]
    if group == GROUP:
        kinds, versions, skipped, unsupported = KINDS, VERSIONS, SKIPPED_KINDS, UNSUPPORTED_KINDS
    elif group == SECURITY_GROUP:
        kinds, versions = SECURITY_KINDS, SECURITY_VERSIONS
        skipped, unsupported = frozenset(), SECURITY_UNSUPPORTED_KINDS
    else:
        return None
    sink = Sink(file, kind if kind in kinds or kind in unsupported else "")
    sink.name = _subject(root.mapping.get("metadata"))  # so every problem names the resource
    if version not in versions:
        line = root.mapping["apiVersion"].line
        expected = ", ".join(f"{group}/{v}" for v in versions)
        sink.error(line, "apiVersion", f'unsupported apiVersion "{api_version}" (expected {expected})')
    if kind is None:
        sink.error(root.line, "kind", "is required")
    elif kind in skipped:
        return None
    elif kind in unsupported:
        sink.error(root.mapping["kind"].line, "kind", f'kind "{kind}" is not supported by meshlib')
    elif kind not in kinds:
        sink.error(root.mapping["kind"].line, "kind", f'unknown kind "{kind}"')
    if kind not in kinds or version not in versions:
        problems.extend(sink.problems)
        return None

    top = Fields(sink, root, "", TOP_FIELDS)
    meta = _metadata(top, file, document.line, kind)
    spec_fields, parse = kinds[kind]
    spec = top.mapping("spec", spec_fields) if top.has("spec") else None
    if spec is None:
        if not top.has("spec"):
            sink.error(root.line, "spec", "is required")
        problems.extend(sink.problems)
        return None
    # Without a usable name the spec is still validated (all problems in one pass),
    # but the resource is not kept.
    resource = parse(sink, meta or Meta(file, document.line, kind, "default", ""), spec)
    problems.extend(sink.problems)
    return resource if meta is not None else None


def _text(root: Node, key: str) -> str | None:
    node = root.mapping.get(key)
    if node is None or node.kind != "scalar" or not isinstance(node.scalar, str):
        return None
    return node.scalar


def _subject(node: Node | None) -> str:
    """``namespace/name`` from a metadata node, or "" when it has no usable name."""
    if node is None or node.kind != "map":
        return ""
    name = node.mapping.get("name")
    namespace = node.mapping.get("namespace")
    if name is None or not isinstance(name.scalar, str) or not name.scalar:
        return ""
    ns = namespace.scalar if namespace is not None and isinstance(namespace.scalar, str) else ""
    return f"{ns or 'default'}/{name.scalar}"


def _metadata(top: Fields, file: str, line: int, kind: str) -> Meta | None:
    node = top.get("metadata")
    if node is None:
        top.sink.error(top.node.line, "metadata.name", "is required")
        return None
    meta = Fields(top.sink, node, "metadata", META_FIELDS)
    name = meta.string("name", required=True)
    namespace = meta.string("namespace") or "default"
    if name is not None and not _NAME.match(name):
        meta.error("name", f'invalid name "{name}" (must be a lower-case DNS-1123 subdomain)')
    if not _NAMESPACE.match(namespace):
        meta.error("namespace", f'invalid namespace "{namespace}" (must be a lower-case DNS-1123 label)')
    labels = meta.labels("labels") or {}
    annotations = meta.string_map("annotations") or {}
    if not meta.ok or name is None:
        return None
    annotations_node = meta.get("annotations")
    lines = tuple((k, v.line) for k, v in annotations_node.mapping.items()) if annotations_node else ()
    return Meta(file, line, kind, namespace, name, tuple(annotations.items()), lines, tuple(labels.items()))
