"""Control-plane fan-out: time from an endpoint change until N ADS streams have ACKed it.

    python bench/controlplane_fanout.py [--streams 1000] [--channels 10] [--rounds 5] [--quick]

The control plane runs in this process; the N SotW ADS streams run in one
client subprocess (grpc.aio, multiplexed over a few channels), each subscribed
to CDS (wildcard) and EDS (the clusters' names) and ACKing every response, as
grpcio's client does. A round changes one endpoint, publishes, and waits
(server side, on the status board) until every stream has ACKed the new EDS
version. Also printed: server and client memory per stream (RSS delta) and
the time to build a 10,000-endpoint snapshot (packing every resource once).
Targets: ≤ 1 s for 1,000 streams (performance.md), ≤ 2 s for 10,000 (issue 14), on 2
cores. Streams open in waves of 500 (see WAVE). Not a test: it
asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from meshlib.controlplane import CLUSTER, ENDPOINT, ControlPlane, ResourceSnapshot

GROUP = "bench"
WAVE = 500  # client streams opened at a time


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cluster(name: str) -> Any:
    ads = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=2)
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads),
    )


def _assignment(name: str, hosts: int, salt: int = 0) -> Any:
    endpoints = []
    for i in range(hosts):
        ip = f"10.{i // 250}.{i % 250}.{1 + salt % 250}"
        address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=8080))
        endpoints.append(endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=address)))
    locality = endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region="r", zone="z"), lb_endpoints=endpoints
    )
    locality.load_balancing_weight.value = 1
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[locality])


def resources(clusters: int, hosts: int, salt: int = 0) -> dict[str, dict[str, Any]]:
    names = [f"outbound|8080||svc{i}.bench.svc.cluster.local" for i in range(clusters)]
    return {
        CLUSTER: {n: _cluster(n) for n in names},
        # Only the first cluster's endpoints move between rounds.
        ENDPOINT: {n: _assignment(n, hosts, salt if i == 0 else 0) for i, n in enumerate(names)},
    }


# -- client subprocess -------------------------------------------------------------------------


async def _client_stream(
    stub: Any, index: int, ready: asyncio.Event, counter: list[int], total: int, *,
    progress: asyncio.Event | None = None,
) -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    node = {"id": f"bench-{index}", "user_agent_name": "gRPC C-core bench", "cluster": "bench"}
    call = stub.StreamAggregatedResources()
    await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
    eds_names: list[str] = []
    while True:
        response = await call.read()
        if response is None or not hasattr(response, "type_url"):
            return
        if response.type_url == CLUSTER:
            cds_ack = discovery_pb2.DiscoveryRequest(
                type_url=CLUSTER, version_info=response.version_info, response_nonce=response.nonce
            )
            await call.write(cds_ack)
            if not eds_names:
                cluster = cluster_pb2.Cluster()
                for packed in response.resources:
                    packed.Unpack(cluster)
                    eds_names.append(cluster.eds_cluster_config.service_name or cluster.name)
                await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=eds_names))
        else:
            await call.write(discovery_pb2.DiscoveryRequest(
                type_url=response.type_url, resource_names=eds_names,
                version_info=response.version_info, response_nonce=response.nonce,
            ))
            if not ready.is_set():
                counter[0] += 1
                if progress is not None:
                    progress.set()
                if counter[0] == total:
                    ready.set()


async def run_clients(port: int, streams: int, channels: int) -> None:
    import grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc

    before = _rss_mb()
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in chans]
    ready = asyncio.Event()
    counter = [0]
    failed: list[BaseException] = []
    progress = asyncio.Event()  # a stream got its first EDS response, or failed

    def note_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())  # type: ignore[arg-type]
            progress.set()

    # Streams open in waves: thousands of streams started in one burst make grpc.aio fail some of
    # their first writes ("Internal error from Core"); a real fleet's clients connect from many processes.
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, streams, WAVE):
        for i in range(start, min(start + WAVE, streams)):
            stream = _client_stream(stubs[i % channels], i, ready, counter, streams, progress=progress)
            task = asyncio.create_task(stream)
            task.add_done_callback(note_failure)
            tasks.append(task)
        while counter[0] + len(failed) < len(tasks) and not ready.is_set():
            progress.clear()
            await progress.wait()
        if failed:
            raise SystemExit(f"{len(failed)} client stream(s) failed: {failed[0]!r}")
    await ready.wait()
    print(f"client-rss-per-stream-kb {(_rss_mb() - before) * 1024 / streams:.1f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for task in tasks:
        task.cancel()
    for chan in chans:
        await chan.close()


# -- control plane side ------------------------------------------------------------------------


def bench_build(endpoints: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    resources(endpoints // 100, 100)  # what a translator produces: protos in memory
    t1 = time.perf_counter()
    built = resources(endpoints // 100, 100)
    t2 = time.perf_counter()
    ResourceSnapshot.build(built)
    t3 = time.perf_counter()
    return (t1 - t0) * 1000, (t3 - t2) * 1000


async def main(args: argparse.Namespace) -> None:
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} {platform.machine()}")
    proto_ms, build_ms = bench_build(10_000)
    print(f"snapshot of 10,000 endpoints (100 clusters x 100): protos {proto_ms:.1f} ms, "
          f"ResourceSnapshot.build (pack + hash + encode once) {build_ms:.1f} ms (target <= 200 ms)")

    async with ControlPlane(port=0, node_group=lambda node: GROUP) as plane:
        salt = 0
        plane.set_resources(GROUP, resources(args.clusters, args.hosts, salt))
        version = plane.cache.snapshot(GROUP).version(ENDPOINT)  # type: ignore[union-attr]
        rss_before = _rss_mb()
        client = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", str(plane.port), str(args.streams), str(args.channels),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert client.stdin is not None and client.stdout is not None
        n = args.streams
        try:
            t0 = time.perf_counter()
            async with asyncio.timeout(120):
                await plane.wait_until(lambda b: b.count(ENDPOINT, version=version) >= n)
            connect_s = time.perf_counter() - t0
            server_kb = (_rss_mb() - rss_before) * 1024 / n
            async with asyncio.timeout(30):
                client_line = (await client.stdout.readline()).decode().split()
            print(f"{n} streams on {args.channels} channels connected and ACKed in {connect_s:.2f} s")
            print(f"memory per stream: server {server_kb:.1f} KiB, client {float(client_line[-1]):.1f} KiB (RSS delta)")
            figures = []
            for _ in range(args.rounds):
                salt += 1
                t0 = time.perf_counter()
                plane.set_resources(GROUP, resources(args.clusters, args.hosts, salt))
                new = plane.cache.snapshot(GROUP).version(ENDPOINT)  # type: ignore[union-attr]
                async with asyncio.timeout(60):
                    await plane.wait_until(lambda b, v=new: b.count(ENDPOINT, version=v) >= n)  # type: ignore[misc]
                figures.append(time.perf_counter() - t0)
            print(f"endpoint change -> all {n} streams ACKed: "
                  f"median {statistics.median(figures) * 1000:.0f} ms, max {max(figures) * 1000:.0f} ms "
                  f"over {len(figures)} rounds (target <= 1000 ms for 1,000 streams, <= 2000 ms for 10,000); "
                  + ", ".join(f"{f * 1000:.0f}" for f in figures))
        finally:
            client.stdin.write(b"stop\n")
            try:
                async with asyncio.timeout(10):
                    await client.wait()
            except TimeoutError:
                client.kill()
                await client.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(run_clients(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--hosts", type=int, default=3, help="endpoints per cluster")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100 streams, 2 rounds (CI smoke)")
    ns = parser.parse_args()
    if ns.quick:
        ns.streams, ns.rounds = 100, 2
    asyncio.run(main(ns))
