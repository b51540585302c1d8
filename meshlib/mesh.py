"""``Mesh``: owns the configuration sources, the current state and runtime host stats.

::

    import meshlib

    mesh = meshlib.Mesh.from_files("mesh/")          # or no argument: the embedded demo mesh
    async with mesh:                                 # starts the file watcher (hot reload)
        async with mesh.session() as http:           # aiohttp.ClientSession routed by the mesh
            async with http.get("http://reviews:9080/reviews/1") as resp:
                print(resp.status, await resp.text())

The mesh holds one :class:`~meshlib.mesh_state.MeshState` reference; sources
publish by replacing it, requests read it once at their start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from meshlib.config.model import Labels, Locality, MeshSnapshot, WorkloadIdentity
from meshlib.discovery.files import FileConfigSource
from meshlib.host_stats import HostStatsTable
from meshlib.lifecycle import StartStopContext
from meshlib.mesh_state import MeshState
from meshlib.resilience.breaker import AsyncBreaker, BreakerRegistry
from meshlib.resilience.cluster_runtime import RuntimeTable
from meshlib.security.authz_inbound import AuthzStats

if TYPE_CHECKING:
    import ssl

    from aiohttp import web

    from meshlib.aiohttp.mirror import MirrorSender
    from meshlib.config.peer_authentication import InboundMtls
    from meshlib.discovery.consul.register import Registration
    from meshlib.discovery.consul.source import ConsulConfigSource
    from meshlib.discovery.xds import XdsConfigSource
    from meshlib.grpc.channel import MeshChannel
    from meshlib.grpc.server import MeshServerInterceptor
    from meshlib.resilience.injection import FaultInjector
    from meshlib.security.bundle import CertificateSource
    from meshlib.security.tls_client import UpstreamTlsContexts
    from meshlib.security.tls_server import InboundTls
    from meshlib.tracing.metrics import IstioMetrics
    from meshlib.tracing.record import TelemetrySink
    from meshlib.tracing.telemetry import Telemetry

OutboundTrafficPolicy = Literal["ALLOW_ANY", "REGISTRY_ONLY"]

# Every Mesh alive in the process, and callbacks told of each new one: how a test's fault
# controller (meshlib.testing) reaches meshes however they were built. Weak: costs no lifetime.
LIVE_MESHES: weakref.WeakSet[Mesh] = weakref.WeakSet()
ON_NEW_MESH: list[Callable[[Mesh], None]] = []


def _strict_peer_authentication(snapshot: MeshSnapshot) -> InboundMtls | None:
    """The workload's PeerAuthentication when it is STRICT on some port (what the server middleware enforces)."""
    if not snapshot.security.peer_authentication:
        return None
    from meshlib.security.tls_server import inbound_mtls_of

    mtls = inbound_mtls_of(snapshot)
    return mtls if mtls is not None and mtls.any_strict else None


def _bootstrap_certificates(providers: Mapping[str, Any]) -> CertificateSource | None:
    """The bootstrap's ``default`` ``file_watcher`` certificate provider as a certificate source, if any."""
    default = providers.get("default")
    if not isinstance(default, Mapping) or default.get("plugin_name") != "file_watcher":
        return None
    config = default.get("config") or {}
    files = [config.get(k) for k in ("certificate_file", "private_key_file", "ca_certificate_file")]
    cert, key, ca = (str(f) if isinstance(f, str) else "" for f in files)
    if not (cert and key and ca):
        return None
    from meshlib.security.file_source import DEFAULT_REFRESH_INTERVAL_S, FileCertificateSource

    interval = str(config.get("refresh_interval", ""))
    try:
        refresh_s = float(interval[:-1]) if interval.endswith("s") else DEFAULT_REFRESH_INTERVAL_S
    except ValueError:
        refresh_s = DEFAULT_REFRESH_INTERVAL_S
    return FileCertificateSource(cert, key, ca, refresh_interval_s=max(refresh_s, 1.0))


def _warn_istio_mutual_without_certificates(snapshot: MeshSnapshot) -> None:
    """Say at start, not only per request, that ISTIO_MUTUAL clusters cannot be reached without an SVID."""
    names = [n for n, c in snapshot.clusters.items() if c.policy.tls.mode == "ISTIO_MUTUAL"]
    if names:
        logging.getLogger("meshlib.tls").warning(
            "%d cluster(s) use DestinationRule tls ISTIO_MUTUAL (e.g. %s) but this mesh has no workload "
            "certificate: their requests get 503 UF until mesh.use_certificates(source) is called",
            len(names), names[0],
        )


def default_config_path() -> Path:
    """The Istio YAML shipped with meshlib (the bookinfo-style demo mesh)."""
    return Path(str(resources.files("meshlib") / "data" / "default"))


class Mesh(StartStopContext):
    """An in-process service mesh: routing, balancing and policy for outbound calls.

    Build one with :meth:`from_files`; use it with ``async with mesh:`` so its
    sources run (hot reload). ``rng`` and ``clock`` are injectable so every
    decision can be replayed deterministically in tests.
    """

    def __init__(
        self,
        snapshot: MeshSnapshot,
        *,
        outbound_traffic_policy: OutboundTrafficPolicy = "ALLOW_ANY",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if outbound_traffic_policy not in ("ALLOW_ANY", "REGISTRY_ONLY"):
            raise ValueError(
                f"outbound_traffic_policy must be ALLOW_ANY or REGISTRY_ONLY, not {outbound_traffic_policy!r}"
            )
        self.outbound_traffic_policy: OutboundTrafficPolicy = outbound_traffic_policy
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock
        self.host_stats = HostStatsTable()
        self._runtimes = RuntimeTable(self.host_stats, self.rng)
        self._breakers = BreakerRegistry(clock=clock)
        self._authz_stats = AuthzStats()  # inbound AuthorizationPolicy decisions (server middleware / interceptor)
        self._file_source: FileConfigSource | None = None
        self._xds_source: XdsConfigSource | None = None  # set by from_xds
        self._consul_source: ConsulConfigSource | None = None  # set by from_consul
        self._tasks: list[asyncio.Task[None]] = []
        self._mirrors: MirrorSender | None = None  # set by the client middleware
        self._telemetry: Telemetry | None = None  # None = telemetry off (the request path checks only this)
        self._metrics: IstioMetrics | None = None
        self._certificates: CertificateSource | None = None  # the workload SVID (ISTIO_MUTUAL, server mTLS)
        self._upstream_tls: UpstreamTlsContexts | None = None  # per-cluster client TLS contexts, made on first use
        self._peer_auth: InboundMtls | None = None  # PeerAuthentication when STRICT somewhere (server middleware)
        self._owns_certificates = False  # started and stopped with the mesh (a bootstrap's certificate provider)
        self._faults: FaultInjector | None = None  # a test's fault controller (meshlib.testing); one check per request
        self._publish(snapshot)
        LIVE_MESHES.add(self)
        for on_new_mesh in tuple(ON_NEW_MESH):
            on_new_mesh(self)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_files(
        cls,
        *paths: str | Path,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        locality: str = "",
        workload_name: str = "",
        outbound_traffic_policy: OutboundTrafficPolicy = "ALLOW_ANY",
        poll_interval_s: float = 0.25,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        allow_empty_reload: bool = False,
    ) -> Mesh:
        """A mesh configured by Istio YAML files or directories (none given: the embedded default).

        The calling workload's ``namespace``, ``labels`` and ``locality``
        (``region/zone/subzone``) decide short-name resolution, ``sourceLabels``
        matches and locality-aware balancing, as a sidecar's identity would.
        A hot reload that would remove every service and route is refused
        unless the files carry ``apiVersion: meshlib.io/v1, kind: EmptyMesh``
        or ``allow_empty_reload`` is true.

        Raises :class:`meshlib.ConfigInvalid` listing every problem (file, line,
        field) if the configuration does not validate.
        """
        workload = WorkloadIdentity(
            namespace=namespace, labels=Labels(labels), locality=Locality.parse(locality), name=workload_name
        )
        source_paths: list[str | Path] = list(paths) if paths else [default_config_path()]
        holder: list[Mesh] = []

        def publish(snapshot: MeshSnapshot) -> None:
            holder[0]._publish(snapshot)

        source = FileConfigSource(
            source_paths, workload, publish, poll_interval_s=poll_interval_s, allow_empty_reload=allow_empty_reload
        )
        mesh = cls(source.load(), outbound_traffic_policy=outbound_traffic_policy, rng=rng, clock=clock)
        holder.append(mesh)
        mesh._file_source = source
        return mesh

    # -- xDS source (Mesh.from_xds) ---------------------------------------------------

    @classmethod
    def from_xds(
        cls,
        address: str | None = None,
        *,
        node_id: str | None = None,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        locality: str = "",
        protocol: Literal["sotw", "delta"] = "sotw",
        initial_fetch_timeout_s: float = 15.0,
        channel_creds: Sequence[Mapping[str, Any]] | None = None,
        outbound_traffic_policy: OutboundTrafficPolicy = "ALLOW_ANY",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Mesh:
        """A mesh configured by an xDS management server (meshlib's control plane, istiod, ...).

        ``address`` is ``host:port`` of an ADS server; None reads the gRPC
        bootstrap (``GRPC_XDS_BOOTSTRAP`` / ``GRPC_XDS_BOOTSTRAP_CONFIG``) for the
        server, its ``channel_creds`` and the node. With an explicit address,
        ``channel_creds`` is a bootstrap-style list, e.g. ``[{"type": "tls", "config":
        {"ca_certificate_file": …, "certificate_file": …, "private_key_file": …}}]``
        (default: plaintext). ``protocol`` picks state-of-the-world or delta ADS.
        ``async with mesh`` connects and waits for the first configuration (at
        most ``initial_fetch_timeout_s``); afterwards updates apply as they come,
        invalid ones are NACKed and the last good configuration keeps serving,
        also while the server is away. Requires the ``xds`` extra. A bootstrap
        whose ``certificate_providers`` has a ``default`` ``file_watcher`` (gRFC
        A29, as ``meshlib bootstrap --certs`` writes) gives the mesh its workload
        certificate (ISTIO_MUTUAL, :meth:`server_ssl_context`), started and
        stopped with the mesh.
        """
        from meshlib.extras import require_extra

        with require_extra("xds", "Mesh.from_xds"):
            from meshlib.discovery.xds import XdsConfigSource

        workload = WorkloadIdentity(namespace=namespace, labels=Labels(labels), locality=Locality.parse(locality))
        holder: list[Mesh] = []

        def publish(snapshot: MeshSnapshot) -> None:
            holder[0]._publish(snapshot)

        source = XdsConfigSource(
            address,
            workload,
            publish,
            node_id=node_id,
            protocol=protocol,
            initial_fetch_timeout_s=initial_fetch_timeout_s,
            channel_creds=channel_creds,
        )
        empty = MeshSnapshot(version="", workload=source.workload)  # until the first xDS snapshot arrives
        mesh = cls(empty, outbound_traffic_policy=outbound_traffic_policy, rng=rng, clock=clock)
        holder.append(mesh)
        mesh._xds_source = source
        provided = _bootstrap_certificates(source.certificate_providers)
        if provided is not None:  # the SVID proxyless gRPC would use, for ISTIO_MUTUAL and server contexts
            mesh.use_certificates(provided)
            mesh._owns_certificates = True
        return mesh

    # -- Consul source (Mesh.from_consul) -----------------------------------------------

    @classmethod
    def from_consul(
        cls,
        address: str | None = None,
        *,
        services: Sequence[str] | None = None,
        dc: str | None = None,
        token: str | None = None,
        stale: bool = True,
        overlay: str | Path | Sequence[str | Path] | None = None,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        locality: str = "",
        workload_name: str = "",
        outbound_traffic_policy: OutboundTrafficPolicy = "ALLOW_ANY",
        initial_sync_timeout_s: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Mesh:
        """A mesh configured by Consul: services and health as endpoints, L7 config entries as routing.

        ``address`` (``host:port`` or ``http[s]://host:port``) and ``token``
        default to ``CONSUL_HTTP_ADDR`` / ``CONSUL_HTTP_TOKEN`` (also
        ``CONSUL_HTTP_SSL``, ``CONSUL_CACERT``, ``CONSUL_HTTP_SSL_VERIFY``), as
        Consul's CLI reads them. ``services`` limits the watched services (default:
        every name in the catalog); ``dc`` the datacenter; ``stale=False`` makes
        reads go to the leader. ``overlay`` is Istio YAML (files or directories,
        hot-reloaded) applied on top. ``async with mesh`` waits for the first
        sync (at most ``initial_sync_timeout_s``); afterwards Consul outages leave
        the last good configuration in force, and ``mesh.status()`` shows each watch.
        ``workload_name`` is this service's own Consul name: its ``service-defaults``
        ``UpstreamConfig`` (Defaults, Overrides) then shapes the clusters it calls,
        as Consul applies a downstream's upstream config to its sidecar::

            mesh = Mesh.from_consul("127.0.0.1:8500")
            async with mesh, mesh.session() as http:
                await http.get("http://web.service.consul/")
        """
        from meshlib.extras import require_extra

        with require_extra("consul", "Mesh.from_consul"):
            from meshlib.discovery.consul.client import ConsulClient, ConsulSettings
            from meshlib.discovery.consul.source import ConsulConfigSource

        workload = WorkloadIdentity(
            namespace=namespace, labels=Labels(labels), locality=Locality.parse(locality), name=workload_name
        )
        settings = ConsulSettings.resolve(address, token=token, dc=dc)
        overlay_paths = [overlay] if isinstance(overlay, (str, Path)) else list(overlay or [])
        holder: list[Mesh] = []

        def publish(snapshot: MeshSnapshot) -> None:
            holder[0]._publish(snapshot)

        source = ConsulConfigSource(
            ConsulClient(settings),
            workload,
            publish,
            services=services,
            datacenter=dc,
            stale=stale,
            overlay=overlay_paths or None,
            rng=random.Random(rng.random()) if rng is not None else None,  # watch jitter, reproducible
            initial_sync_timeout_s=initial_sync_timeout_s,  # watch pacing runs on real time, not ``clock``
        )
        empty = MeshSnapshot(version="", workload=workload)  # until the first sync
        mesh = cls(empty, outbound_traffic_policy=outbound_traffic_policy, rng=rng, clock=clock)
        holder.append(mesh)
        mesh._consul_source = source
        return mesh

    async def register(self, name: str, port: int, **options: Any) -> Registration:
        """Register this process as an instance of ``name`` with the Consul agent; see
        :func:`meshlib.discovery.consul.register.register_service` for the options
        (``id``, ``address``, ``tags``, ``meta``, ``check``…). Returns a handle
        with ``await handle.deregister()``; a TTL check is kept alive until then::

            handle = await mesh.register("web", 8080, check=TtlCheck("10s"))
        """
        from meshlib.discovery.consul.register import register_service

        return await register_service(self, name, port, **options)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the configuration sources' background tasks (idempotent)."""
        if self._tasks:
            return
        if self._owns_certificates and self._certificates is not None:
            await self._certificates.start()
        if self._file_source is not None:
            self._tasks.append(asyncio.create_task(self._file_source.watch(), name="meshlib-file-watch"))
        if self._xds_source is not None:
            self._tasks.append(asyncio.create_task(self._xds_source.run(), name="meshlib-xds-client"))
            await self._xds_source.wait_first()
        if self._consul_source is not None:
            self._tasks.append(asyncio.create_task(self._consul_source.run(), name="meshlib-consul"))
            await self._consul_source.wait_first()
        self._tasks.append(asyncio.create_task(self._tick_outlier_detectors(), name="meshlib-outlier-ticks"))
        if self._certificates is None:
            _warn_istio_mutual_without_certificates(self.snapshot)

    async def _tick_outlier_detectors(self) -> None:
        # Hosts return to service only at an interval tick (as in Envoy), so tick
        # at least as often as the shortest configured interval.
        while True:
            intervals = [r.outlier.interval_s for r in self._runtimes.runtimes.values() if r.outlier is not None]
            await asyncio.sleep(min([1.0, *intervals]) / 2)
            self._runtimes.tick(self.clock())

    async def stop(self) -> None:
        if self._mirrors is not None:
            await self._mirrors.drain()
        self.flush_telemetry()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_certificates and self._certificates is not None:
            await self._certificates.stop()
        if self._consul_source is not None:
            await self._consul_source.close()

    # ------------------------------------------------------------------ configuration

    @property
    def snapshot(self) -> MeshSnapshot:
        """The configuration in force now."""
        return self._state.snapshot

    @property
    def state(self) -> MeshState:
        """The compiled configuration in force now (route table, balancers)."""
        return self._state

    def _publish(self, snapshot: MeshSnapshot) -> None:
        # Compile first, bring the per-cluster runtime in step, then swap one
        # reference: requests see old or new, never a mix.
        state = MeshState(snapshot, registry_only=self.outbound_traffic_policy == "REGISTRY_ONLY")
        self._runtimes.sync(snapshot.clusters, self.clock())
        self._peer_auth = _strict_peer_authentication(snapshot)
        self._state = state

    def status(self) -> dict[str, Any]:
        """Where the configuration comes from, its version, the last rejected edit and, for files, the
        warnings of the configuration in force (as ``meshlib validate`` prints them)."""
        if self._xds_source is not None:
            xds = self._xds_source.status()
            return {**xds, "version": self.snapshot.version, "clusters": len(self.snapshot.clusters)}
        if self._consul_source is not None:
            consul = self._consul_source.status()
            return {**consul, "version": self.snapshot.version, "clusters": len(self.snapshot.clusters)}
        source = self._file_source
        return {
            "source": "files" if source is not None else "static",
            "paths": [str(p) for p in source.paths] if source is not None else [],
            "version": self.snapshot.version,
            "reload_attempts": source.reload_attempts if source is not None else 0,
            "last_error": [str(p) for p in source.last_problems] if source is not None else [],
            "warnings": [str(p) for p in source.warnings] if source is not None else [],
            "clusters": len(self.snapshot.clusters),
        }

    async def wait_for_reload(self, after: int, timeout_s: float = 5.0) -> None:
        """Wait for the file source's reload attempt number ``after + 1`` (valid or not)."""
        if self._file_source is None:
            raise RuntimeError("this mesh has no file source")
        await self._file_source.wait_for_reload(after, timeout_s)

    @property
    def reload_attempts(self) -> int:
        return self._file_source.reload_attempts if self._file_source is not None else 0

    # ------------------------------------------------------------------ resilience state

    def stats(self) -> dict[str, Any]:
        """Per cluster and per host: counters named like Envoy's, limits, ejections, breakers.

        ``clusters[name]`` holds ``upstream_rq_total``, ``upstream_rq_retry``,
        ``upstream_rq_timeout``, ``upstream_rq_pending_overflow``,
        ``outlier_detection.ejections_enforced_total``, ``ejected_hosts``
        (``ip:port`` → monotonic time it is due back), ``retry_budget_balance``…;
        ``hosts[ip:port]`` holds ``active_requests`` and ejection state;
        ``breakers`` the :meth:`breaker` states.
        """
        now = self.clock()
        hosts = {
            key: {
                "active_requests": h.active_requests,
                "ejected": h.ejected,
                "ejection_count": h.ejection_count,
                "ewma_cost_s": h.ewma_cost_s,
            }
            for key, h in self.host_stats.items()
        }
        return {
            "clusters": {name: rt.stats(now) for name, rt in self._runtimes.runtimes.items()},
            "hosts": hosts,
            "breakers": dict(self._breakers.stats()),
            "inbound": self._authz_stats.snapshot(),
        }

    def breaker(self, name: str, **settings: Any) -> AsyncBreaker:
        """A circuit breaker for any call (a database, a cache), by name.

        Usable as a decorator on ``async def`` and as ``async with``; the same
        name returns the same breaker. Settings: ``fail_max`` (5),
        ``reset_timeout_s`` (30), ``exclude``, ``listeners``.
        """
        return self._breakers.get(name, **settings)

    # ------------------------------------------------------------------ telemetry

    def enable_tracing(self, tracer_provider: Any = None, propagator: Any = None) -> None:
        """Record OpenTelemetry spans: SERVER per inbound, CLIENT per outbound request (and per retry).

        ``tracer_provider`` defaults to the global one; ``propagator`` to W3C
        trace context + baggage (+ B3 with the ``otel`` extra). Trace headers are
        propagated from inbound to outbound requests whether or not tracing is on.
        """
        from meshlib.tracing.spans import Tracing
        from meshlib.tracing.telemetry import Telemetry

        current = self._telemetry or Telemetry()
        self._telemetry = Telemetry(Tracing(tracer_provider, propagator), current.sinks, current.deferred)

    def add_telemetry_sink(self, sink: TelemetrySink) -> None:
        """Deliver a record of every finished request to ``sink`` (metrics, access log, …)."""
        from meshlib.tracing.telemetry import Telemetry

        current = self._telemetry or Telemetry()
        self._telemetry = Telemetry(current.tracing, (*current.sinks, sink), current.deferred)
        from meshlib.tracing.metrics import IstioMetrics

        if isinstance(sink, IstioMetrics):  # an OpenTelemetry reader sees every request that already returned
            sink.before_read = self._telemetry.deferred.flush_if_owner

    def flush_telemetry(self) -> None:
        """Finish now the spans and records of requests that already returned.

        The adapters hand the response back first and finish its telemetry in
        batches, within 50 ms (:mod:`meshlib.tracing.deferred`); call this before
        reading an exporter or a sink directly, e.g. an ``InMemorySpanExporter`` in a test.
        """
        if self._telemetry is not None:
            self._telemetry.deferred.flush()

    def enable_metrics(self, *, meter_provider: Any = None, workload_name: str | None = None) -> IstioMetrics:
        """Istio's standard metrics (``istio_requests_total``, ``istio_request_duration_milliseconds``, …).

        Counted for every request through this mesh, exported through
        OpenTelemetry (``meter_provider``, default the global one) and rendered by
        :meth:`prometheus_text` together with the resilience stats. Idempotent.
        """
        if self._metrics is None:
            from meshlib.tracing.metrics import IstioMetrics

            workload = self.snapshot.workload
            self._metrics = IstioMetrics(
                workload_name or workload.name or workload.labels.get("app", "unknown"),
                workload.namespace,
                dict(workload.labels),
                meter_provider=meter_provider,
            )
            self.add_telemetry_sink(self._metrics)
        return self._metrics

    @property
    def metrics(self) -> IstioMetrics | None:
        """The Istio metrics sink once :meth:`enable_metrics` was called, else ``None``."""
        return self._metrics

    def enable_access_log(self, target: Any = None, *, format: Literal["json", "text"] = "json") -> None:
        """One line per outbound request with Envoy's fields and response flags (logger ``meshlib.access``)."""
        from meshlib.tracing.access_log import AccessLog

        self.add_telemetry_sink(AccessLog(target, format=format))

    def prometheus_text(self) -> str:
        """Prometheus exposition: Istio metrics (when enabled) and every cluster's Envoy-named stats."""
        from meshlib.tracing.prometheus import render_prometheus

        self.flush_telemetry()
        return render_prometheus(self._metrics, self.stats())

    def admin_app(self, *, stats_text: Callable[[], str] | None = None) -> web.Application:
        """The debug view as an aiohttp app, answering like Envoy's admin: ``/`` (HTML page, readable
        without JavaScript), ``/config_dump``, ``/clusters``, ``/routes``, ``/stats`` (``name: value``;
        ``?format=json|prometheus``, ``?filter=`` RE2), ``/stats/prometheus`` (``stats_text``, default
        :meth:`prometheus_text`), ``/status``, ``/ready``, ``/server_info``, ``/help``.

        Serve it on loopback only: it has no authentication.
        """
        from meshlib.admin import admin_app

        return admin_app(self, stats_text=stats_text or self.prometheus_text)

    # ------------------------------------------------------------------ security (TLS)

    def use_certificates(self, source: CertificateSource) -> None:
        """Use ``source``'s SVID for ISTIO_MUTUAL clusters and :meth:`server_ssl_context` (start it yourself).

        Rotations reach new connections on both sides without a restart::

            mesh.use_certificates(FileCertificateSource("/etc/certs/"))
        """
        self._certificates = source
        self._owns_certificates = False  # yours: the mesh neither starts nor stops it
        if self._upstream_tls is not None:
            self._upstream_tls.rotated()

    @property
    def certificates(self) -> CertificateSource | None:
        """The workload's certificate source (None until :meth:`use_certificates`)."""
        return self._certificates

    def upstream_tls(self) -> UpstreamTlsContexts:
        """The per-cluster client TLS contexts (DestinationRule ``tls``) of this mesh.

        The adapters use it; it is public for inspection::

            mesh.upstream_tls().for_cluster(mesh.snapshot.clusters[name]).expectation   # who the peer must be
        """
        if self._upstream_tls is None:
            from meshlib.security.tls_client import UpstreamTlsContexts

            self._upstream_tls = UpstreamTlsContexts(lambda: self._certificates)
        return self._upstream_tls

    def inbound_tls(self) -> InboundTls:
        """Server-side TLS of this workload: SSL contexts, PeerAuthentication, peer identities.

        See :mod:`meshlib.security.tls_server`; :meth:`server_ssl_context` is its shortcut::

            mesh.inbound_tls().mtls().mode_for(9080)          # 'STRICT' | 'PERMISSIVE' | 'DISABLE'
            server.add_secure_port("127.0.0.1:50051", mesh.inbound_tls().grpc_server_credentials(50051))
            mesh.inbound_tls().counters                       # refusals and rotations
        """
        from meshlib.security.tls_server import InboundTls

        return InboundTls.of(self)

    def server_ssl_context(self, port: int | None = None) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` presenting the workload SVID; client certificates required under
        PeerAuthentication STRICT (for ``port``), optional otherwise. Follows rotation::

            web.run_app(app, port=9080, ssl_context=mesh.server_ssl_context(9080))
        """
        return self.inbound_tls().ssl_context(port)

    # ------------------------------------------------------------------ adapters

    def server_middleware(self) -> Any:
        """aiohttp server middleware: the inbound deadline becomes the context of outbound calls.

        Reads ``grpc-timeout`` or ``x-envoy-expected-rq-timeout-ms`` into the
        deadline context variable, so every call the handler makes through the
        mesh uses ``min(route timeout, time left)`` and fails locally once the
        deadline has passed.
        """
        from meshlib.aiohttp.server import server_middleware

        return server_middleware(self)

    def grpc_server_interceptor(self, **policy: Any) -> MeshServerInterceptor:
        """A ``grpc.aio`` server interceptor: inbound deadline, trace context, policy and telemetry.

        Keywords are :class:`meshlib.grpc.server.InboundPolicy` fields
        (``rate_limit=``, ``rate_limited_status=``, ``fault=``)::

            server = grpc.aio.server(interceptors=[mesh.grpc_server_interceptor()])
        """
        from meshlib.extras import require_extra

        with require_extra("grpc", "mesh.grpc_server_interceptor"):
            from meshlib.grpc.server import InboundPolicy, MeshServerInterceptor

        return MeshServerInterceptor(self, InboundPolicy(**policy))

    def middleware(self, *, suppress_envoy_headers: bool = False) -> aiohttp.ClientMiddlewareType:
        """An aiohttp client middleware that routes every request through the mesh.

        ``suppress_envoy_headers=True`` sends no ``x-envoy-attempt-count`` and
        ``x-envoy-expected-rq-timeout-ms`` upstream, as Envoy's router option of
        that name (Istio leaves them on)::

            session = aiohttp.ClientSession(middlewares=(mesh.middleware(suppress_envoy_headers=True),))
        """
        from meshlib.aiohttp.client import client_middleware

        return client_middleware(self, suppress_envoy_headers=suppress_envoy_headers)

    def connector(self, **kwargs: Any) -> aiohttp.TCPConnector:
        """A ``TCPConnector`` that applies each cluster's connect timeout (``tcp.connectTimeout``).

        Keyword arguments go to ``aiohttp.TCPConnector``. ``session()`` uses one
        unless you pass ``connector=``.
        """
        from meshlib.aiohttp.connector import MeshConnector

        return MeshConnector(**kwargs)

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """An ``aiohttp.ClientSession`` with the mesh middleware (outermost) installed.

        Keyword arguments go to ``ClientSession``; ``middlewares=`` are added after the mesh's;
        ``suppress_envoy_headers=True`` as for :meth:`middleware`.
        Without ``connector=`` the session gets :meth:`connector` (per-cluster connect timeouts).
        Without ``timeout=`` aiohttp's default 300 s total timeout is kept by the mesh's own
        timer queue rather than one aiohttp timer per request (``meshlib.aiohttp.total_timeout``)::

            async with mesh.session(suppress_envoy_headers=True) as http:
                ...
        """
        from meshlib.aiohttp.total_timeout import SESSION_TIMEOUT

        extra = tuple(kwargs.pop("middlewares", ()))
        suppress = bool(kwargs.pop("suppress_envoy_headers", False))
        if "connector" not in kwargs:
            kwargs["connector"] = self.connector()
        kwargs.setdefault("timeout", SESSION_TIMEOUT)
        return aiohttp.ClientSession(middlewares=(self.middleware(suppress_envoy_headers=suppress), *extra), **kwargs)

    def grpc_channel(
        self, target: str, *, options: Sequence[tuple[str, Any]] | None = None, credentials: Any = None
    ) -> MeshChannel:
        """A ``grpc.aio`` channel look-alike whose calls run the mesh pipeline (pass it to stubs).

        Routing on the method path and metadata, subsets and weights, Python-side
        balancing over one channel per endpoint, retries (``grpc-previous-rpc-attempts``),
        deadlines as ``grpc-timeout``, circuit breaking, outlier detection and faults::

            async with mesh.grpc_channel("reviews.default.svc.cluster.local:50051") as channel:
                reply = await ReviewsStub(channel).Get(request, metadata=(("end-user", "jason"),))

        ``options`` and ``credentials`` apply to every per-endpoint channel.
        """
        from meshlib.extras import require_extra

        with require_extra("grpc", "mesh.grpc_channel"):
            from meshlib.grpc.channel import MeshChannel

        return MeshChannel(self, target, options=options, credentials=credentials)

    def explain(self, method: str, url: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The routing decision for a request, as a JSON-ready dict; nothing is sent.

        >>> mesh = Mesh.from_files()
        >>> mesh.explain("GET", "http://reviews:9080/reviews/1", {"end-user": "jason"})["destinations"][0]["subset"]
        'v2'
        """
        from meshlib.explain import explain

        return explain(self._state, method, url, headers or {}, self.rng)

    def explain_inbound(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        principal: str = "",
        source_ip: str = "",
    ) -> dict[str, Any]:
        """Which AuthorizationPolicy (and rule) would allow or deny this inbound request to this workload.

        ``principal`` is the caller's SPIFFE ID (``spiffe://`` optional; "" = no mTLS).

        >>> Mesh.from_files().explain_inbound("GET", "http://reviews:9080/")["allowed"]
        True
        """
        from meshlib.security.authz_explain import explain_inbound

        return explain_inbound(self._state, method, url, headers or {}, principal=principal, source_ip=source_ip)
