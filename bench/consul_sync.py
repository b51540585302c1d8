"""Consul at scale: initial sync, memory, health flip → new picks, idle CPU of the watch loops.

    python bench/consul_sync.py [--services 1000] [--instances 10] [--flips 6] [--idle 5]

The Consul emulator (``meshlib.testing.consul``) runs in a child process with
SERVICES × INSTANCES instances, so this process holds only the mesh. Printed:

- initial sync: ``async with Mesh.from_consul(...)`` until the first snapshot
  (one catalog watch, one health watch per service, five config-entry watches);
- RSS of this process before and after (VmRSS) and the watch count;
- health flip → new picks: an instance is set critical (then passing again)
  through the emulator's control API; the time until ``mesh.explain`` stops
  (or starts again) listing it — per flip, then median and max. Flips are
  1.2 s apart so the per-watch token bucket (burst 2, then 1/s) never delays them;
- idle CPU: process CPU time over IDLE seconds with every watch parked in a
  blocking query (long-poll: it should be ≈ 0).

No assertions: figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from meshlib.discovery.consul.source import consul_source_of
from meshlib.mesh import Mesh

EMULATOR = """
import asyncio, sys
from meshlib.testing.consul import ConsulEmulator

async def main(services: int, instances: int) -> None:
    emulator = ConsulEmulator()
    for s in range(services):
        for i in range(instances):
            emulator.add_service(f"svc-{s:04d}", 20000 + i, service_id=f"svc-{s:04d}-{i}",
                                 address=f"10.{s // 250}.{s % 250}.{i + 1}", node=f"node-{s:04d}-{i}")
    await emulator.start()
    print(emulator.address, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await emulator.stop()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def picks(mesh: Mesh, service: str) -> set[str]:
    decision = mesh.explain("GET", f"http://{service}.service.consul/")
    return {endpoint for found in decision["endpoints"].values() for endpoint in found}


async def wait_picks(mesh: Mesh, service: str, want_present: str, present: bool) -> float:
    source = consul_source_of(mesh)
    start = time.perf_counter()
    async with asyncio.timeout(30):
        while (want_present in picks(mesh, service)) != present:
            await source.wait_for_rebuild(source.rebuilds, 30)
    return time.perf_counter() - start


async def run(address: str, services: int, flips: int, idle_s: float) -> None:
    before = rss_mib()
    mesh = Mesh.from_consul(address, initial_sync_timeout_s=120.0)
    start = time.perf_counter()
    async with mesh:
        synced = time.perf_counter() - start
        source = consul_source_of(mesh)
        endpoints = sum(len(c.endpoints) for c in mesh.snapshot.clusters.values())
        print(f"initial sync: {synced:.2f}s  ({len(source.watches)} watches, {len(mesh.snapshot.clusters)} "
              f"clusters, {endpoints} endpoints; synced={source.synced})")
        print(f"RSS: {before:.0f} MiB before, {rss_mib():.0f} MiB after (+{rss_mib() - before:.0f} MiB)")

        service = f"svc-{services // 2:04d}"
        instance, address_port = f"{service}-0", f"10.{(services // 2) // 250}.{(services // 2) % 250}.1:20000"
        times: list[float] = []
        async with aiohttp.ClientSession() as http:
            for flip in range(flips):
                await asyncio.sleep(1.2)
                status = "critical" if flip % 2 == 0 else "passing"
                async with http.put(f"http://{address}/_emulator/check/{instance}?status={status}") as resp:
                    resp.raise_for_status()
                elapsed = await wait_picks(mesh, service, address_port, present=status == "passing")
                times.append(elapsed)
                build = source.last_build
                print(f"  flip {flip + 1} ({status}): new picks after {elapsed * 1000:.0f} ms "
                      f"(compile {build.get('compile_s', 0) * 1000:.0f} ms, "
                      f"publish {build.get('publish_s', 0) * 1000:.0f} ms)")
        print(f"health flip -> new picks: median {statistics.median(times) * 1000:.0f} ms, "
              f"max {max(times) * 1000:.0f} ms (target <= 1000 ms)")

        await asyncio.sleep(1.0)  # let the last rebuild settle
        requests_before = sum(w.status.requests for w in source.watches.values())
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(idle_s)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        requests = sum(w.status.requests for w in source.watches.values()) - requests_before
        print(f"idle: {cpu * 1000:.0f} ms CPU over {wall:.1f}s ({100 * cpu / wall:.2f} % of one core), "
              f"{requests} watch requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--flips", type=int, default=6)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    child = subprocess.Popen(
        [sys.executable, "-c", EMULATOR, str(args.services), str(args.instances)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    setup = time.perf_counter()
    address = child.stdout.readline().strip()
    print(f"emulator: {args.services} services x {args.instances} instances at {address} "
          f"(set up in {time.perf_counter() - setup:.1f}s)")
    try:
        asyncio.run(run(address, args.services, args.flips, args.idle))
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    main()
