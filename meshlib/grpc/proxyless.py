"""Proxyless gRPC: grpcio's own xDS client, fed by the meshlib control plane (or istiod).

A ``xds:///reviews.default.svc.cluster.local:50051`` channel makes gRPC
C-core fetch Listener → RouteConfiguration → Cluster → ClusterLoadAssignment
over ADS and route, balance, retry and inject faults itself: no meshlib code
runs per call. This module only plumbs the **bootstrap** (which xDS server,
which node) that C-core needs:

- **process-wide** (production): :func:`install_bootstrap` sets
  ``GRPC_XDS_BOOTSTRAP_CONFIG`` for this process (or point
  ``GRPC_XDS_BOOTSTRAP`` at a file yourself). C-core reads it when the first
  xDS channel or server is created and keeps that client for the process, so
  install it before creating any; every ``xds:///`` channel then shares it.
- **per channel** (tests, tools): ``xds_channel(target, bootstrap=...)``
  passes the JSON through grpcio's channel argument
  ``grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config`` — as the name
  says, a testing hook of grpcio, not a supported API. It lets one process
  talk to several control planes (one per test).

Example (the control plane and the bootstrap from :mod:`meshlib.xds`)::

    from meshlib.grpc.proxyless import install_bootstrap, xds_channel
    from meshlib.xds import grpc_bootstrap

    install_bootstrap(grpc_bootstrap("istiod.istio-system:15010", "sidecar~10.0.0.1~app.default~default.svc"))
    async with xds_channel("xds:///reviews.default.svc.cluster.local:50051") as channel:
        reply = await channel.unary_unary("/pkg.Reviews/Get")(b"...", wait_for_ready=True)

The first call should use ``wait_for_ready=True`` (or a generous timeout):
until the xDS resources arrive the channel is not ready. Each distinct
target opens its own ADS stream with the same node id; the meshlib control
plane accepts that. An xDS-enabled *server* exists only for sync
``grpc.server(executor, xds=True)``. It serves only once its own Listener
(named by the bootstrap's ``server_listener_resource_name_template``,
``grpc/server?xds.resource.listening_address=<ip>:<port>``) arrives; the
translated Istio YAML has none (istiod builds them from the pod's inbound
ports), so :func:`with_server_listeners` adds a plain one per serving address
to what a snapshot source serves (see ``examples/grpc_proxyless``).

Requires the ``xds`` extra (the bootstrap helpers live in :mod:`meshlib.xds`);
CSDS in the example needs ``grpcio-csds``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from meshlib.xds.bootstrap import (
    BOOTSTRAP_CONFIG_ENV,
    BOOTSTRAP_FILE_ENV,
    SERVER_LISTENER_TEMPLATE,
    validate_bootstrap,
)

__all__ = [
    "BOOTSTRAP_CHANNEL_OPTION",
    "install_bootstrap",
    "with_server_listeners",
    "xds_channel",
    "xds_server_listener",
]

_Resources = Mapping[str, Mapping[str, Any]]

# grpcio's per-channel bootstrap override. Test-only by grpcio's own naming; used only when asked.
BOOTSTRAP_CHANNEL_OPTION = "grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config"


def install_bootstrap(bootstrap: Mapping[str, Any]) -> None:
    """Make ``bootstrap`` the **process-wide** gRPC xDS bootstrap (``GRPC_XDS_BOOTSTRAP_CONFIG``).

    Validated first (:class:`meshlib.xds.BootstrapError` names a bad field).
    Clears ``GRPC_XDS_BOOTSTRAP``, which gRPC would read in preference. Affects
    every xDS channel and server of the process created afterwards (C-core
    creates its xDS client once; channels that already exist keep theirs).

    Example (at start-up, before any ``xds:///`` channel exists)::

        from meshlib.xds import grpc_bootstrap
        install_bootstrap(grpc_bootstrap("127.0.0.1:15010", "node-1"))
    """
    validate_bootstrap(bootstrap)
    os.environ.pop(BOOTSTRAP_FILE_ENV, None)
    os.environ[BOOTSTRAP_CONFIG_ENV] = json.dumps(bootstrap)


def xds_channel(
    target: str,
    *,
    bootstrap: Mapping[str, Any] | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    interceptors: Sequence[Any] | None = None,
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to an ``xds:///name`` target, resolved and balanced by gRPC's xDS client.

    ``bootstrap`` given: it is used for this channel only (grpcio's test-only
    per-channel option, see the module notes). Otherwise the process bootstrap
    (:func:`install_bootstrap` or the environment) applies. ``credentials``
    default to plaintext (``grpc.insecure_channel``) — pass
    ``grpc.xds_channel_credentials(...)`` for xDS-managed mTLS.

    Example (inside a running event loop, as every ``grpc.aio`` channel)::

        from meshlib.xds import grpc_bootstrap
        bootstrap = grpc_bootstrap("127.0.0.1:15010", "test-node")
        async with xds_channel("xds:///reviews.default.svc.cluster.local:50051", bootstrap=bootstrap) as channel:
            reply = await channel.unary_unary("/pkg.Reviews/Get")(b"", wait_for_ready=True, timeout=30)

    Only ``xds:`` targets are accepted (a plain target would bypass the mesh silently):

    >>> xds_channel("reviews:50051")
    Traceback (most recent call last):
    ...
    ValueError: an xDS target starts with 'xds:' (e.g. 'xds:///svc.ns.svc.cluster.local:50051'): 'reviews:50051'
    """
    if not target.startswith("xds:"):
        raise ValueError(f"an xDS target starts with 'xds:' (e.g. 'xds:///svc.ns.svc.cluster.local:50051'): {target!r}")
    all_options = list(options or ())
    if bootstrap is not None:
        validate_bootstrap(bootstrap)
        all_options.append((BOOTSTRAP_CHANNEL_OPTION, json.dumps(bootstrap)))
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=all_options, interceptors=interceptors)


# ---------------------------------------------------------------------- xDS-enabled servers


def xds_server_listener(
    host: str, port: int, *, template: str = SERVER_LISTENER_TEMPLATE, http_filters: Sequence[Any] = (),
    mtls: str = "DISABLE",
) -> Any:
    """The Listener an xDS-enabled gRPC server on ``host:port`` waits for (gRFC A36), plaintext.

    ``http_filters`` go before the router: e.g. the RBAC filters of
    :func:`meshlib.security.rbac_xds.rbac_http_filters` (AuthorizationPolicy, gRFC A41).
    ``mtls="STRICT"`` (PeerAuthentication) gives the filter chain a ``DownstreamTlsContext``
    requiring client certificates from the bootstrap's certificate provider (gRFC A29); serve it
    with ``grpc.xds_server_credentials``. Other modes: plaintext (a proxyless server cannot offer
    both on one port, so PERMISSIVE serves plaintext).

    Named by ``template`` (the bootstrap's ``server_listener_resource_name_template``);
    its address must equal the serving address. One filter chain matching
    everything, whose HttpConnectionManager routes every path to
    ``non_forwarding_action`` (serve locally) with only the router filter.

    >>> xds_server_listener("127.0.0.1", 50051).name
    'grpc/server?xds.resource.listening_address=127.0.0.1:50051'
    """
    from envoy.config.listener.v3 import listener_pb2
    from envoy.config.route.v3 import route_components_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    from meshlib.xds.encode_common import pack

    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    listener = listener_pb2.Listener(name=template.replace("%s", authority))
    listener.address.socket_address.address = host
    listener.address.socket_address.port_value = port
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=f"inbound_{authority}")
    routes = manager.route_config
    routes.name = f"inbound|{port}"
    virtual_host = routes.virtual_hosts.add(name="inbound", domains=["*"])
    virtual_host.routes.add(
        match=route_components_pb2.RouteMatch(prefix="/"),
        non_forwarding_action=route_components_pb2.NonForwardingAction(),
    )
    manager.http_filters.extend(http_filters)
    manager.http_filters.add(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))
    chain = listener.filter_chains.add()
    chain.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=pack(manager))
    if mtls == "STRICT":
        from meshlib.xds.cluster_tls import downstream_tls_socket

        downstream_tls_socket(chain, require_client_certificate=True)
    return listener


def with_server_listeners(
    source: Callable[[str], _Resources | None],
    addresses: Sequence[tuple[str, int]],
    *,
    http_filters: Sequence[Any] = (),
    mtls: str = "DISABLE",
) -> Callable[[str], _Resources | None]:
    """Wrap a (synchronous) snapshot source so it also serves :func:`xds_server_listener` for ``addresses``.

    For ``ControlPlane(with_server_listeners(FileSnapshotSource([...]), [("127.0.0.1", 50051)]))``:
    every node group gets the extra Listeners next to the translated ones. ``http_filters`` (e.g.
    the servers' AuthorizationPolicies as RBAC filters) go into each Listener before the router;
    ``mtls`` is the servers' PeerAuthentication mode (see :func:`xds_server_listener`).
    """
    from meshlib.xds.type_urls import LISTENER

    extra = {
        listener.name: listener
        for listener in (xds_server_listener(h, p, http_filters=http_filters, mtls=mtls) for h, p in addresses)
    }

    def serve(group: str) -> _Resources | None:
        resources = source(group)
        if resources is None:
            return None
        merged = dict(resources)
        merged[LISTENER] = {**resources.get(LISTENER, {}), **extra}
        return merged

    return serve
