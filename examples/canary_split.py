"""A weighted canary and a header route, end to end, on two loopback servers.

    python examples/canary_split.py

Starts reviews v1 and v2, writes a ServiceEntry + DestinationRule +
VirtualService for them (90/10 split; `end-user: jason` always gets v2),
sends 200 requests through ``mesh.session()`` and prints where they went.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

from aiohttp import web

import meshlib

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - name: canary
    route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 90}}
    - {{destination: {{host: reviews, subset: v2}}, weight: 10}}
"""


async def start(version: str) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=version)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def main() -> Counter[str]:
    (r1, p1), (r2, p2) = await start("v1"), await start("v2")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mesh.yaml"
        config.write_text(MESH.format(v1=p1, v2=p2))
        mesh = meshlib.Mesh.from_files(config)
        seen: Counter[str] = Counter()
        async with mesh, mesh.session() as http:
            for _ in range(200):
                async with http.get("http://reviews:9080/reviews/1") as resp:
                    seen["anonymous → " + await resp.text()] += 1
            for _ in range(20):
                async with http.get("http://reviews:9080/reviews/1", headers={"end-user": "jason"}) as resp:
                    seen["jason → " + await resp.text()] += 1
    await r1.cleanup()
    await r2.cleanup()
    for key, count in sorted(seen.items()):
        print(f"{key}: {count}")
    return seen


if __name__ == "__main__":
    asyncio.run(main())
