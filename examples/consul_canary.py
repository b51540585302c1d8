"""A canary driven by Consul: registration, a service-splitter, a header route and maintenance mode.

    python examples/consul_canary.py

Everything runs on loopback: the Consul emulator stands in for an agent
(`meshlib.testing.consul`; a real agent at CONSUL_HTTP_ADDR works the same),
two aiohttp servers register themselves as `web` v1 / v2 with TTL checks, and
Consul config entries route 90/10 plus `x-canary: yes` → v2. Then v2 goes into
maintenance and the mesh drains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import web

import meshlib
from meshlib.aiohttp import consul_registration
from meshlib.discovery.consul.register import TtlCheck
from meshlib.discovery.consul.source import consul_source_of
from meshlib.testing.consul import ConsulEmulator

ENTRIES = [
    {"Kind": "service-defaults", "Name": "web", "Protocol": "http"},
    {"Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1",
     "Subsets": {"v1": {"Filter": '"v1" in Service.Tags'}, "v2": {"Filter": '"v2" in Service.Tags'}},
     "Failover": {"v2": {"ServiceSubset": "v1"}}},  # an empty v2 sends its share to v1
    {"Kind": "service-splitter", "Name": "web",
     "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]},
    {"Kind": "service-router", "Name": "web", "Routes": [
        {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "yes"}]}},
         "Destination": {"ServiceSubset": "v2"}}]},
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def web_server(mesh: meshlib.Mesh, version: str) -> AsyncIterator[int]:
    """An aiohttp server answering its version, registered in Consul while it runs."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=version)

    app = web.Application()
    app.router.add_get("/", hello)
    port = _free_port()
    consul_registration(app, mesh, "web", port, id=f"web-{version}", address="127.0.0.1", tags=(version,),
                        check=TtlCheck("10s"))
    runner = web.AppRunner(app)
    await runner.setup()  # on_startup: registered, TTL kept alive
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()  # deregistered


async def main() -> dict[str, int]:
    async with ConsulEmulator() as consul:  # 127.0.0.1:<free port>
        mesh = meshlib.Mesh.from_consul(consul.address, rng=random.Random(1))
        async with mesh, web_server(mesh, "v1"), web_server(mesh, "v2") as v2_port, mesh.session() as http:
            source = consul_source_of(mesh)
            for entry in ENTRIES:  # what `consul config write` does
                await source.client.put_config(entry)

            async def until(predicate: object) -> None:  # each rebuild after a Consul change
                async with asyncio.timeout(10):
                    while not predicate():  # type: ignore[operator]
                        await source.wait_for_rebuild(source.rebuilds)

            def picks(**headers: str) -> set[str]:
                decision = mesh.explain("GET", "http://web.service.consul/", headers)
                return {d["subset"] for d in decision["destinations"] if d["weight"]}

            def v2_serving() -> bool:  # the v2 instance among the endpoints the mesh would pick from
                found = mesh.explain("GET", "http://web.service.consul/", {"x-canary": "yes"})["endpoints"]
                return any(e == f"127.0.0.1:{v2_port}" for eps in found.values() for e in eps)

            await until(lambda: picks() == {"v1", "v2"} and picks(**{"x-canary": "yes"}) == {"v2"} and v2_serving())

            async def send(n: int, **headers: str) -> Counter[str]:
                seen: Counter[str] = Counter()
                for _ in range(n):
                    async with http.get("http://web.service.consul/", headers=headers) as response:
                        seen[await response.text()] += 1
                return seen

            anonymous, canary = await send(200), await send(20, **{"x-canary": "yes"})
            await source.client.api.agent.service.maintenance("web-v2", True, "draining the canary")
            await until(lambda: not v2_serving())
            drained = await send(50) + await send(10, **{"x-canary": "yes"})
        await consul.go_down("error", status=503)  # release the emulator's parked watches before it stops
    result = {
        "anonymous → v1": anonymous["v1"],
        "anonymous → v2": anonymous["v2"],
        "x-canary → v2": canary["v2"],
        "after maintenance → v1": drained["v1"],  # 60: v2's share and the canary fail over to v1
    }
    for what, count in result.items():
        print(f"{what:>24}: {count}")
    return result


if __name__ == "__main__":
    asyncio.run(main())
