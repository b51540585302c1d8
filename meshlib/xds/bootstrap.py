"""gRPC xDS bootstrap: build one (for grpcio / grpc-js / meshlib) and load one.

The format is gRFC A27's (extended by A29 certificate providers, A36 server
listener template, A47 federation). What grpcio reads:

- ``xds_servers``: ``[{server_uri, channel_creds: [{type: insecure|tls|google_default}],
  server_features: ["xds_v3", "ignore_resource_deletion", ...]}]`` — the first entry is used;
- ``node``: ``{id, cluster, locality: {region, zone, sub_zone}, metadata}``;
- ``server_listener_resource_name_template`` for xDS-enabled servers
  (``grpc/server?xds.resource.listening_address=%s``, as Istio uses);
- optional ``client_default_listener_resource_name_template`` (federation),
  ``certificate_providers``.

The process-wide source is ``GRPC_XDS_BOOTSTRAP`` (a file path) or else
``GRPC_XDS_BOOTSTRAP_CONFIG`` (the JSON itself) — :func:`load_bootstrap`
reads them the same way, with errors that say which variable is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from meshlib.config.model import Locality
from meshlib.errors import MeshError

BOOTSTRAP_FILE_ENV = "GRPC_XDS_BOOTSTRAP"
BOOTSTRAP_CONFIG_ENV = "GRPC_XDS_BOOTSTRAP_CONFIG"
SERVER_LISTENER_TEMPLATE = "grpc/server?xds.resource.listening_address=%s"
CHANNEL_CREDS = frozenset({"insecure", "tls", "google_default"})


class BootstrapError(MeshError):
    """A gRPC xDS bootstrap is missing or invalid; the message names the source and field."""


def _has_port(address: str) -> bool:
    """``host:port`` or ``[v6]:port`` with a port in 1..65535."""
    _, sep, port = address.rpartition(":")
    return bool(sep) and port.isdigit() and 0 < int(port) < 65536 and not address.startswith(":")


def grpc_bootstrap(
    xds_address: str,
    node_id: str,
    *,
    cluster: str = "",
    locality: Locality | None = None,
    metadata: Mapping[str, Any] | None = None,
    server_features: Iterable[str] = ("xds_v3",),
    channel_creds: str = "insecure",
    server_listener_resource_name_template: str | None = SERVER_LISTENER_TEMPLATE,
    client_default_listener_resource_name_template: str | None = None,
    channel_creds_config: Mapping[str, Any] | None = None,
    certificate_providers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A bootstrap dict (``json.dumps`` it into a file or ``GRPC_XDS_BOOTSTRAP_CONFIG``).

    ``xds_address`` is ``host:port`` (or a gRPC target URI such as ``dns:///cp:15010``).
    ``channel_creds_config`` is the ``config`` of the channel_creds entry (gRFC A65 ``tls``:
    ``ca_certificate_file``, ``certificate_file``, ``private_key_file``);
    ``certificate_providers`` the A29 instances (see ``meshlib.security.bootstrap_tls``).
    """
    if not xds_address:
        raise BootstrapError("xds_address must not be empty")
    if "://" not in xds_address and not _has_port(xds_address):
        raise BootstrapError(f"xds_address must be host:port (or a gRPC target URI), got {xds_address!r}")
    if not node_id:
        raise BootstrapError("node_id must not be empty")
    if channel_creds not in CHANNEL_CREDS:
        raise BootstrapError(f"channel_creds must be one of {', '.join(sorted(CHANNEL_CREDS))}, got {channel_creds!r}")
    node: dict[str, Any] = {"id": node_id}
    if cluster:
        node["cluster"] = cluster
    # Always present, even empty: @grpc/grpc-js-xds rejects a node without a locality
    # ("locality field missing in node element"); grpcio accepts either.
    locality = locality or Locality()
    node["locality"] = {
        key: value
        for key, value in (("region", locality.region), ("zone", locality.zone), ("sub_zone", locality.subzone))
        if value
    }
    if metadata:
        node["metadata"] = dict(metadata)
    out: dict[str, Any] = {
        "xds_servers": [
            {
                "server_uri": xds_address,
                "channel_creds": [
                    {"type": channel_creds, **({"config": dict(channel_creds_config)} if channel_creds_config else {})}
                ],
                "server_features": list(server_features),
            }
        ],
        "node": node,
    }
    if server_listener_resource_name_template:
        out["server_listener_resource_name_template"] = server_listener_resource_name_template
    if client_default_listener_resource_name_template:
        out["client_default_listener_resource_name_template"] = client_default_listener_resource_name_template
    if certificate_providers:
        out["certificate_providers"] = dict(certificate_providers)
    validate_bootstrap(out)
    return out


def load_bootstrap(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The bootstrap gRPC would use: ``GRPC_XDS_BOOTSTRAP`` file, else ``GRPC_XDS_BOOTSTRAP_CONFIG``."""
    env = os.environ if env is None else env
    path = env.get(BOOTSTRAP_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise BootstrapError(f"{BOOTSTRAP_FILE_ENV}={path}: cannot read: {exc.strerror or exc}") from None
        source = f"{BOOTSTRAP_FILE_ENV}={path}"
    else:
        inline = env.get(BOOTSTRAP_CONFIG_ENV)
        if not inline:
            raise BootstrapError(
                f"no xDS bootstrap: set {BOOTSTRAP_FILE_ENV} (a file) or {BOOTSTRAP_CONFIG_ENV} (JSON)"
            )
        text = inline
        source = BOOTSTRAP_CONFIG_ENV
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BootstrapError(f"{source}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    try:
        validate_bootstrap(data)
    except BootstrapError as exc:
        raise BootstrapError(f"{source}: {exc}") from None
    assert isinstance(data, dict)
    return data


def validate_bootstrap(data: Any) -> None:
    """Check the fields gRPC requires; BootstrapError names the first bad one."""
    if not isinstance(data, dict):
        raise BootstrapError("the bootstrap must be a JSON object")
    servers = data.get("xds_servers")
    if not isinstance(servers, list) or not servers:
        raise BootstrapError("xds_servers: must be a non-empty list")
    for i, server in enumerate(servers):
        if not isinstance(server, dict):
            raise BootstrapError(f"xds_servers[{i}]: must be an object")
        if not isinstance(server.get("server_uri"), str) or not server["server_uri"]:
            raise BootstrapError(f"xds_servers[{i}].server_uri: required string")
        creds = server.get("channel_creds")
        if not isinstance(creds, list) or not creds:
            raise BootstrapError(f"xds_servers[{i}].channel_creds: must be a non-empty list")
        if not any(isinstance(c, dict) and c.get("type") in CHANNEL_CREDS for c in creds):
            raise BootstrapError(
                f"xds_servers[{i}].channel_creds: no supported type ({', '.join(sorted(CHANNEL_CREDS))})"
            )
        features = server.get("server_features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise BootstrapError(f"xds_servers[{i}].server_features: must be a list of strings")
    node = data.get("node", {})
    if not isinstance(node, dict):
        raise BootstrapError("node: must be an object")
    for key in ("id", "cluster"):
        if key in node and not isinstance(node[key], str):
            raise BootstrapError(f"node.{key}: must be a string")
    if "locality" in node and not isinstance(node["locality"], dict):
        raise BootstrapError("node.locality: must be an object")
    if "metadata" in node and not isinstance(node["metadata"], dict):
        raise BootstrapError("node.metadata: must be an object")
    for key in ("server_listener_resource_name_template", "client_default_listener_resource_name_template"):
        if key in data and not isinstance(data[key], str):
            raise BootstrapError(f"{key}: must be a string")
    providers = data.get("certificate_providers", {})
    if not isinstance(providers, dict) or not all(isinstance(p, dict) for p in providers.values()):
        raise BootstrapError("certificate_providers: must be an object of {plugin_name, config} objects")
