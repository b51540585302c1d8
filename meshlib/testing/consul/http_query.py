"""Query options, blocking queries and response headers, as Consul's HTTP layer does them.

- ``?index=N&wait=D``: block until the endpoint's index exceeds N, or until
  ``wait`` (default 5 m, capped at 10 m) plus a random ``wait/16`` jitter has
  passed; then answer with the current index even if unchanged. ``index=0``
  never blocks. A snapshot restore releases every blocked query at once.
- ``X-Consul-Index`` is never 0 (Consul answers 1 instead, so clients cannot
  spin on 0); ``X-Consul-KnownLeader`` / ``X-Consul-LastContact`` (ms) /
  ``X-Consul-Effective-Consistency`` / ``X-Consul-Query-Backend`` accompany it.
- Bad ``wait``/``index`` → 400 ``Invalid wait time`` / ``Invalid index``;
  ``?stale`` with ``?consistent`` → 400; an unknown ``?dc`` → 500 ``No path to
  datacenter``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from meshlib.testing.consul.durations import DurationError, parse_go_duration
from meshlib.testing.consul.state import CatalogStore

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
JITTER_FRACTION = 16


class HttpProblem(Exception):
    """An error answer: ``status`` and Consul's plain-text body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@dataclass(frozen=True)
class QueryOptions:
    min_index: int
    wait: float
    consistency: str  # "leader" | "stale" | "consistent"
    cached: bool
    datacenter: str
    token: str
    filter: str


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``: the value, or None for text it rejects."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    return None


def request_token(request: web.Request) -> str:
    """``X-Consul-Token``, then ``Authorization: Bearer``, then ``?token=`` (Consul's order)."""
    token = request.headers.get("X-Consul-Token", "")
    if not token:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
    return token or request.query.get("token", "")


def parse_query(request: web.Request, local_dc: str) -> QueryOptions:
    wait = DEFAULT_WAIT
    if "wait" in request.query:
        try:
            wait = parse_go_duration(request.query["wait"]) / 1e9
        except DurationError:
            raise HttpProblem(400, "Invalid wait time") from None
        if wait <= 0:
            wait = DEFAULT_WAIT
    wait = min(wait, MAX_WAIT)
    min_index = 0
    if "index" in request.query:
        text = request.query["index"]
        if not text.isdigit() or len(text) > 20:
            raise HttpProblem(400, "Invalid index")
        min_index = int(text)
    # Consul's parseConsistency looks at presence only: ?stale=false still means stale.
    stale, consistent, cached = ("stale" in request.query, "consistent" in request.query,
                                 "cached" in request.query)
    if stale and consistent:
        raise HttpProblem(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    if cached and consistent:
        raise HttpProblem(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
    consistency = "stale" if stale else "consistent" if consistent else "leader"
    return QueryOptions(min_index=min_index, wait=wait, consistency=consistency, cached=cached,
                        datacenter=request.query.get("dc") or local_dc, token=request_token(request),
                        filter=request.query.get("filter", ""))


async def blocking_query(
    store: CatalogStore,
    options: QueryOptions,
    topics: list[str],
    compute: Callable[[], tuple[int, Any]],
    *,
    rng: random.Random,
    stop: Callable[[], bool] = lambda: False,
    parked: Callable[[int], None] = lambda delta: None,
) -> tuple[int, Any]:
    """Run ``compute`` (returning ``(index, body)``) with Consul's blocking semantics."""
    index, body = compute()
    if options.min_index == 0 or index > options.min_index:
        return index, body
    timeout = options.wait + rng.random() * options.wait / JITTER_FRACTION
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    generation = store.generation
    parked(1)
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or stop():
                return index, body
            await store.wait_for_change(topics, remaining)
            index, body = compute()
            if store.generation != generation or index > options.min_index or stop():
                return index, body
    finally:
        parked(-1)


def json_response(body: Any, *, index: int | None = None, options: QueryOptions | None = None,
                  known_leader: bool = True, last_contact_ms: int = 0, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(body=json.dumps(body).encode(), status=status,
                            headers={"Content-Type": "application/json"})
    if index is not None:
        response.headers["X-Consul-Index"] = str(max(1, index))
        response.headers["X-Consul-KnownLeader"] = "true" if known_leader else "false"
        response.headers["X-Consul-LastContact"] = str(last_contact_ms)
        response.headers["X-Consul-Query-Backend"] = "blocking-query"
        if options is not None:
            response.headers["X-Consul-Effective-Consistency"] = options.consistency
            if options.cached:
                response.headers["X-Cache"] = "MISS"
                response.headers["Age"] = "0"
    if headers:
        response.headers.update(headers)
    return response


def text_response(status: int, text: str) -> web.Response:
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
