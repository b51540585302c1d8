"""The demo's services: Istio's bookinfo shape on loopback, every hop a mesh-routed aiohttp call.

``productpage`` calls ``reviews`` (v1/v2/v3); v2 and v3 call ``ratings`` (v3
still on the legacy ``/v0/ratings`` path, which a VirtualService rewrites).
Like bookinfo, a caller degrades gracefully: productpage answers 200 and says
the reviews were unavailable, reviews answers without stars when ratings
failed — and each reports the status and Envoy response flag it got, so the
demo can show what the mesh did one hop down.

The two ratings instances have a :class:`RatingsBehaviour` that scenes switch
(flaky, failing, slow): the broken upstream the mesh must cope with.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from meshlib.mesh import Mesh

__all__ = ["PRODUCTPAGE", "RATINGS", "REVIEWS", "Bookinfo", "RatingsBehaviour", "Visit"]

# The loopback ports of the embedded default mesh's ServiceEntries (meshlib/data/default/bookinfo.yaml).
PRODUCTPAGE: Final = 19081
REVIEWS: Final[dict[str, int]] = {"v1": 19181, "v2": 19182, "v3": 19183}
RATINGS: Final = (19191, 19192)


@dataclass
class RatingsBehaviour:
    """How one ratings instance misbehaves (scenes set it); counts what it saw."""

    fail_every: int = 0  # answer 503 to every n-th request (flaky); 0 = never
    failing: bool = False  # answer 500 to everything
    delay_s: float = 0.0  # wait before answering (slow)
    seen: int = 0
    failed: int = 0

    def reset(self) -> None:
        self.fail_every, self.failing, self.delay_s = 0, False, 0.0


@dataclass(frozen=True)
class Visit:
    """What one productpage request showed: the reviews version and stars, or which hop failed and why."""

    status: int  # productpage's own status as the driver saw it
    flag: str  # Envoy response flag of that answer ("" when it came from productpage)
    reviews_status: int
    reviews_flag: str
    version: str | None
    ratings_status: int | None  # None: this reviews version does not call ratings
    ratings_flag: str
    ratings_instance: int | None
    elapsed_s: float

    @property
    def outcome(self) -> str:
        """A short classification, e.g. ``stars from ratings``, ``reviews 504 UT``, ``ratings 503 FI``."""
        if self.status != 200:
            return f"productpage {self.status} {self.flag}".strip()
        if self.reviews_status != 200:
            return f"reviews {self.reviews_status} {self.reviews_flag}".strip()
        if self.ratings_status is None:
            return "no stars (v1)"
        if self.ratings_status != 200:
            return f"ratings {self.ratings_status} {self.ratings_flag}".strip()
        return "stars from ratings"


@dataclass
class Bookinfo:
    """The running services; ``await start()``/``await stop()``; one mesh-routed session for all hops."""

    mesh: Mesh
    http: aiohttp.ClientSession
    ratings: dict[int, RatingsBehaviour] = field(default_factory=lambda: {p: RatingsBehaviour() for p in RATINGS})
    reviews_seen: Counter[str] = field(default_factory=Counter)
    ratings_paths: Counter[str] = field(default_factory=Counter)
    _runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self) -> None:
        try:
            await self._serve(self._productpage(), PRODUCTPAGE)
            for version, port in REVIEWS.items():
                await self._serve(self._reviews(version), port)
            for port in RATINGS:
                await self._serve(self._ratings(port), port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    def reset(self) -> None:
        """Every instance healthy again and every count zero."""
        for behaviour in self.ratings.values():
            behaviour.reset()
            behaviour.seen = behaviour.failed = 0
        self.reviews_seen.clear()
        self.ratings_paths.clear()

    async def visit(self, user: str | None = None) -> Visit:
        """GET productpage as ``user`` (the ``end-user`` header) through the mesh."""
        headers = {"end-user": user} if user else {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with self.http.get("http://productpage:9080/productpage", headers=headers) as resp:
            body: dict[str, Any] = await resp.json() if resp.status == 200 else {}
            status, flag = resp.status, resp.headers.get(LOCAL_REPLY_HEADER, "")
        reviews = body.get("reviews") or {}
        return Visit(
            status=status, flag=flag,
            reviews_status=int(body.get("reviews_status", 0)), reviews_flag=str(body.get("reviews_flag", "")),
            version=reviews.get("version"),
            ratings_status=reviews.get("ratings_status"), ratings_flag=str(reviews.get("ratings_flag", "")),
            ratings_instance=(reviews.get("ratings") or {}).get("instance"),
            elapsed_s=loop.time() - started,
        )

    # ------------------------------------------------------------------ the services

    async def _serve(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as exc:
            raise SystemExit(
                f"meshlib demo: cannot listen on 127.0.0.1:{port} ({exc.strerror}); is another demo running?"
            ) from None

    def _app(self) -> web.Application:
        return web.Application(middlewares=[self.mesh.server_middleware()])  # inbound deadline + trace context

    def _productpage(self) -> web.Application:
        async def page(request: web.Request) -> web.Response:
            forward = {"end-user": request.headers["end-user"]} if "end-user" in request.headers else {}
            async with self.http.get("http://reviews:9080/reviews/0", headers=forward) as resp:
                reviews = await resp.json() if resp.status == 200 else None
                return web.json_response({
                    "product": 0, "reviews": reviews, "reviews_status": resp.status,
                    "reviews_flag": resp.headers.get(LOCAL_REPLY_HEADER, ""),
                })

        app = self._app()
        app.router.add_get("/productpage", page)
        return app

    def _reviews(self, version: str) -> web.Application:
        async def reviews(request: web.Request) -> web.Response:
            self.reviews_seen[version] += 1
            body: dict[str, Any] = {"version": version}
            if version != "v1":  # v1 shows no stars; v3 still calls the legacy ratings API
                path = "/v0/ratings/0" if version == "v3" else "/ratings/0"
                async with self.http.get(f"http://ratings:9080{path}") as resp:
                    body["ratings"] = await resp.json() if resp.status == 200 else None
                    body["ratings_status"] = resp.status
                    body["ratings_flag"] = resp.headers.get(LOCAL_REPLY_HEADER, "")
            return web.json_response(body)

        app = self._app()
        app.router.add_get("/reviews/{id}", reviews)
        return app

    def _ratings(self, port: int) -> web.Application:
        behaviour = self.ratings[port]

        async def ratings(request: web.Request) -> web.Response:
            behaviour.seen += 1
            self.ratings_paths[request.path] += 1
            if behaviour.delay_s:
                await asyncio.sleep(behaviour.delay_s)  # a slow instance: the delay is the behaviour shown
            if behaviour.failing or (behaviour.fail_every and behaviour.seen % behaviour.fail_every == 0):
                behaviour.failed += 1
                status = 500 if behaviour.failing else 503
                return web.json_response({"error": "ratings instance failing"}, status=status)
            return web.json_response({"stars": 5, "instance": port})

        app = self._app()
        app.router.add_get("/ratings/{id}", ratings)
        return app
