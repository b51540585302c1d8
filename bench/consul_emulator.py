"""What the Consul emulator costs: catalog load, health queries, parked blocking queries.

    python bench/consul_emulator.py [--services 1000] [--instances 10] [--watchers 1000]

Prints, in one process on loopback: the time to load services × instances into
the catalog; the median latency of a health query (10 instances, aiohttp client
in the same loop); the CPU the process spends while ``--watchers`` blocking
queries are parked for 3 s (long-polling must cost ~nothing); and how long one
health flip takes to answer its watcher while the others stay parked. Figures
are for tests that use the emulator (e.g. bench/consul_sync.py); no real Consul
is involved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshlib.testing.consul import ConsulEmulator


async def run(services: int, instances: int, watchers: int) -> None:
    async with ConsulEmulator() as consul:
        started = time.perf_counter()
        for s in range(services):
            for i in range(instances):
                consul.add_service(f"svc{s}", 10000 + i, address=f"10.{s // 250}.{s % 250}.{i + 1}",
                                   node=f"node{s % 100}-{i}", tags=["v1"], meta={"version": "v1"})
        load = time.perf_counter() - started
        print(f"load {services} × {instances} instances: {load:.2f} s")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            samples = []
            for s in range(min(services, 300)):
                t0 = time.perf_counter()
                async with http.get(f"{consul.url}/v1/health/service/svc{s}") as resp:
                    await resp.read()
                samples.append(time.perf_counter() - t0)
            print(f"health query ({instances} instances), median: {statistics.median(samples) * 1000:.2f} ms")

            async def watch(s: int) -> int:
                async with http.get(f"{consul.url}/v1/health/service/svc{s}") as resp:
                    index = resp.headers["X-Consul-Index"]
                async with http.get(f"{consul.url}/v1/health/service/svc{s}",
                                    params={"index": index, "wait": "60s"}) as resp:
                    return resp.status

            parked = [asyncio.create_task(watch(s % services)) for s in range(watchers)]
            await consul.wait_blocked(watchers, within=120)
            cpu = time.process_time()
            await asyncio.sleep(3)
            print(f"{watchers} parked blocking queries, CPU over 3 s idle: {time.process_time() - cpu:.3f} s")
            t0 = time.perf_counter()
            consul.set_check_status("svc0-10.0.0.1-10000", "critical")
            await parked[0]  # the watcher of svc0
            print(f"one health flip answered its watcher in {(time.perf_counter() - t0) * 1000:.1f} ms; "
                  f"{consul.blocked} still parked")
            await consul.stop()
            await asyncio.gather(*parked, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--watchers", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.services, args.instances, args.watchers))


if __name__ == "__main__":
    main()
