"""A bookinfo-like app in three services: productpage → reviews → ratings (and details).

Each handler calls the next service by its mesh name through one ``mesh.session()``,
so routing, timeouts, retries, outlier detection and circuit breaking all apply.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web


def reviews_handler(http: aiohttp.ClientSession) -> web.RequestHandler:  # type: ignore[type-arg]
    """reviews: its review text, plus stars from ratings when ratings answers."""

    async def reviews(request: web.Request) -> web.Response:
        stars: int | None = None
        async with http.get("http://ratings:9080/ratings/0") as resp:
            if resp.status == 200:
                stars = (await resp.json())["stars"]
        return web.json_response({"review": "An extremely entertaining play", "stars": stars})

    return reviews


async def ratings(request: web.Request) -> web.Response:
    return web.json_response({"stars": 5})


async def product_page(http: aiohttp.ClientSession) -> dict[str, object]:
    """What productpage renders: the reviews, or why they are missing (status and Envoy flag)."""
    async with http.get("http://reviews:9080/reviews/0") as resp:
        if resp.status == 200:
            return {"reviews": await resp.json(), "status": 200}
        return {"reviews": None, "status": resp.status, "flag": resp.headers.get("x-meshlib-local-reply")}
