"""``meshlib demo``: bookinfo on loopback, routed by the embedded default mesh.

Starts productpage, reviews v1/v2/v3 and two ratings instances as aiohttp
servers on the loopback endpoints of the embedded ServiceEntries, sends
traffic to productpage through the mesh, and prints, per VirtualService rule,
what the configuration says and where the requests actually went. Every hop
(driver → productpage → reviews → ratings) is a mesh-routed aiohttp call.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from meshlib.mesh import Mesh

REVIEWS = {"v1": 19181, "v2": 19182, "v3": 19183}
RATINGS = (19191, 19192)
PRODUCTPAGE = 19081


class _Observed:
    def __init__(self) -> None:
        self.ratings_instances: Counter[int] = Counter()
        self.ratings_paths: Counter[str] = Counter()


def _productpage(http: aiohttp.ClientSession) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        forward = {k: v for k, v in request.headers.items() if k.lower() == "end-user"}
        async with http.get("http://reviews:9080/reviews/0", headers=forward) as resp:
            reviews = await resp.json()
        return web.json_response({"product": 0, "reviews": reviews})

    app = web.Application()
    app.router.add_get("/productpage", page)
    return app


def _reviews(version: str, http: aiohttp.ClientSession) -> web.Application:
    async def reviews(request: web.Request) -> web.Response:
        body: dict[str, Any] = {"version": version}
        if version != "v1":  # v1 shows no stars; v3 still calls the legacy ratings API
            path = "/v0/ratings/0" if version == "v3" else "/ratings/0"
            async with http.get(f"http://ratings:9080{path}") as resp:
                body["ratings"] = await resp.json()
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/reviews/{id}", reviews)
    return app


def _ratings(port: int, observed: _Observed) -> web.Application:
    async def ratings(request: web.Request) -> web.Response:
        observed.ratings_instances[port] += 1
        observed.ratings_paths[request.path] += 1
        return web.json_response({"stars": 5, "instance": port})

    app = web.Application()
    app.router.add_get("/ratings/{id}", ratings)
    return app


async def _serve(app: web.Application, port: int, runners: list[web.AppRunner]) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except OSError as exc:
        raise SystemExit(
            f"meshlib demo: cannot listen on 127.0.0.1:{port} ({exc.strerror}); is another demo running?"
        ) from None


def _pct(n: int, total: int) -> str:
    return f"{n:4d} ({100.0 * n / total:5.1f}%)" if total else "   0"


async def run_demo(requests: int = 200, jason_requests: int = 20, seed: int = 7) -> int:
    """Run the demo; returns 0 when the traffic went where the rules say, else 1."""
    mesh = Mesh.from_files(rng=random.Random(seed))
    observed = _Observed()
    runners: list[web.AppRunner] = []
    print(f"meshlib demo — embedded mesh {mesh.status()['paths'][0]} (version {mesh.snapshot.version})")
    async with mesh, mesh.session() as http:
        try:
            await _serve(_productpage(http), PRODUCTPAGE, runners)
            for version, port in REVIEWS.items():
                await _serve(_reviews(version, http), port, runners)
            for port in RATINGS:
                await _serve(_ratings(port, observed), port, runners)

            by_class: dict[str, Counter[str]] = {"jason": Counter(), "anonymous": Counter()}
            for who, count, headers in (
                ("jason", jason_requests, {"end-user": "jason"}),
                ("anonymous", requests, {}),
            ):
                for _ in range(count):
                    async with http.get("http://productpage:9080/productpage", headers=headers) as resp:
                        resp.raise_for_status()
                        page = await resp.json()
                    by_class[who][page["reviews"]["version"]] += 1
        finally:
            for runner in runners:
                await runner.cleanup()

    ok = _report(mesh, by_class, observed, requests, jason_requests)
    print("\nresult:", "traffic followed the rules" if ok else "traffic did NOT follow the rules")
    return 0 if ok else 1


def _report(
    mesh: Mesh, by_class: dict[str, Counter[str]], observed: _Observed, requests: int, jason: int
) -> bool:
    print("\nrule (VirtualService / rule)         configured                    observed")
    ok = True
    jason_plan = mesh.explain("GET", "http://reviews:9080/reviews/0", {"end-user": "jason"})
    anon_plan = mesh.explain("GET", "http://reviews:9080/reviews/0")
    for who, plan, total in (("jason", jason_plan, jason), ("anonymous", anon_plan, requests)):
        route = plan["route"]
        configured = ", ".join(f"{d['subset']} {d['weight']:g}%" for d in plan["destinations"])
        seen = ", ".join(f"{v} {_pct(n, total)}" for v, n in sorted(by_class[who].items()))
        print(f"{route['virtual_service']} / {route['rule']:<16} {configured:<29} {seen}   [{who}]")
        for dest in plan["destinations"]:
            share = by_class[who][dest["subset"]] / total if total else 0.0
            # Weighted choice is random: allow 4 standard deviations of a binomial draw.
            p = dest["weight"] / 100.0
            tolerance = 4 * (p * (1 - p) / max(total, 1)) ** 0.5 + 1e-9
            ok &= abs(share - p) <= tolerance
    legacy = observed.ratings_paths
    print(
        f"default/ratings / legacy-api       rewrite /v0/ratings → /ratings  "
        f"server saw paths: {dict(legacy)}"
    )
    ok &= not any(path.startswith("/v0/") for path in legacy)
    spread = ", ".join(f"127.0.0.1:{port} {n}" for port, n in sorted(observed.ratings_instances.items()))
    print(f"ratings endpoints (ROUND_ROBIN)    even spread                   {spread}")
    counts = list(observed.ratings_instances.values())
    ok &= len(counts) == len(RATINGS) and max(counts) - min(counts) <= 1
    return ok
