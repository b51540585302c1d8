"""The fused happy path of the aiohttp client middleware: one coroutine for a plain routed request.

Most requests of a mesh-routed session are plain: one destination, no fault,
no mirror, no rate limit, no TLS to add, no inbound deadline, no test fault
controller, a free connection slot, and a first attempt that
answers with a status the retry policy keeps. For those the general path
(:func:`~meshlib.decision.decide`, then
:meth:`~meshlib.resilience.attempts.UpstreamRunner.run` with its closures)
pays for generality it does not use. Here:

- the routing decision is memoised per configuration and request shape —
  the URL (port, scheme, authority, path) and ``Host`` header, then the
  method and the values of the headers the virtual host's routes read
  (:meth:`~meshlib.routing.RouteTable.memo_headers`). aiohttp hands the same
  ``URL`` object to every request made with the same URL text, so a URL
  object seen twice is then found by its identity; others (``params=``
  builds a new one per request) by their parts. At most :data:`MEMO_LIMIT` shapes
  (and URLs) are kept, each of at most :data:`MEMO_KEY_CHARS` characters
  (cleared when full, so hostile traffic cannot grow it), and all are
  dropped when the configuration is swapped; virtual hosts whose routes read
  query parameters are not memoised;
- telemetry rides along: an observed request (a recorded CLIENT span, or
  a sink) is described and finished here as on the full path;
- admission, the retry-budget deposit, the queued route and per-try timers,
  the pick, attempt 1, outlier and load feedback and the counters run inline
  in the middleware's own coroutine, in the order the runner runs them;
- anything unusual falls back *before* the request is touched (the full path
  :func:`~meshlib.aiohttp.client.client_middleware` runs it), and an attempt 1
  whose outcome is not final (a retriable status, a connection error, a
  per-try timeout) is handed to the runner with
  :class:`~meshlib.resilience.attempts.FirstAttempt`, which carries on as if
  it had made that attempt itself — retries, budget, breaker and counters
  behave exactly as on the full path (``tests/unit/aiohttp/test_fused.py``
  compares the two).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from yarl import URL

from meshlib.aiohttp.connector import set_connect_timeout
from meshlib.aiohttp.local_reply import local_response
from meshlib.aiohttp.observe import end_observation, traced_retry
from meshlib.aiohttp.total_timeout import settle
from meshlib.balancing import PickContext, observe_rtt
from meshlib.config.model import Cluster, Endpoint, Route, WeightedCluster
from meshlib.decision import Action, Decision, decide
from meshlib.mesh_state import MeshState
from meshlib.request import RequestView
from meshlib.request_id import new_request_id
from meshlib.resilience.attempts import FirstAttempt, LocalReply, RoutePlan, UpstreamRunner
from meshlib.resilience.cluster_runtime import STATUS_COUNTERS, ClusterRuntime
from meshlib.resilience.deadline import current_deadline
from meshlib.resilience.outcome import RESPONSE_OUTCOMES, Outcome, OutcomeKind
from meshlib.resilience.retry import is_idempotent_method
from meshlib.resilience.timer import QueuedTimer
from meshlib.routing import apply_header_ops
from meshlib.routing.match import header_value

if TYPE_CHECKING:
    from meshlib.mesh import Mesh
    from meshlib.tracing.observation import Observation

# The full path: (request, handler, observation, total timeout entry) -> response.
FullPath = Callable[
    [ClientRequest, ClientHandlerType, "Observation | None", QueuedTimer | None], Awaitable[ClientResponse]
]

MEMO_LIMIT = 4096  # memoised request shapes per configuration; the memo is cleared when it is full
MEMO_KEY_CHARS = 512  # a longer authority + path, or header value, is not memoised (keys stay small in bytes)
ATTEMPT_COUNT = "x-envoy-attempt-count"
EXPECTED_TIMEOUT = "x-envoy-expected-rq-timeout-ms"
_ATTEMPTS = [str(n) for n in range(10)]
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_NO_QUERY: dict[str, str] = {}
_URL_CACHE_LIMIT = 4096
_PER_TRY_TIMEOUT = Outcome(OutcomeKind.PER_TRY_TIMEOUT)
_TIMED_OUT = b"meshlib: upstream request timeout\n"
_NONE_HEALTHY = b"meshlib: no healthy upstream\n"

_UNKNOWN: tuple[str, ...] = ("not looked up",)  # a virtual host's header names not yet asked for


def timeout_hint(seconds: float) -> str:
    """``x-envoy-expected-rq-timeout-ms`` for ``seconds`` left: whole milliseconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds * 1000)))


class FusedRoute:
    """One memoised routing decision that the fused path can run, and what it precomputes for it."""

    __slots__ = ("authority", "balancer", "close", "connect_timeout_s", "decision", "path", "plan", "plan_loop",
                 "request_ops", "response_ops", "route", "runtime", "try_hint")

    def __init__(
        self, decision: Decision, route: Route, destination: WeightedCluster, cluster: Cluster,
        runtime: ClusterRuntime,
    ) -> None:
        # The cluster's runtime (limits, budget, outlier detector, counters): the mesh keeps one per cluster
        # name across configurations, and a new configuration drops every FusedRoute, so it is looked up once.
        self.runtime = runtime
        self.decision = decision
        self.route = route
        assert decision.balancer is not None
        self.balancer = decision.balancer
        self.path = decision.path  # the rewritten path, None: the request's own
        self.authority = decision.authority  # the rewritten Host, None: unchanged
        pool = cluster.policy.connection_pool
        self.close = pool.max_requests_per_connection == 1  # Istio's maxRequestsPerConnection: 1
        self.connect_timeout_s = pool.connect_timeout_s
        self.request_ops = tuple(ops for ops in (route.headers.request, destination.headers.request) if not ops.empty)
        self.response_ops = tuple(
            ops for ops in (route.headers.response, destination.headers.response) if not ops.empty
        )
        self.plan: RoutePlan | None = None  # the runner's plan for the route, on ``plan_loop``
        self.plan_loop: asyncio.AbstractEventLoop | None = None
        # ``x-envoy-expected-rq-timeout-ms`` when the per-try timeout alone bounds an attempt (no route timeout).
        self.try_hint: str | None = None

    def use_plan(self, plan: RoutePlan, loop: asyncio.AbstractEventLoop) -> RoutePlan:
        """Keep ``plan`` (made on ``loop``) and what follows from it; returns it."""
        self.plan = plan
        self.plan_loop = loop
        try_queue = plan.try_queue
        self.try_hint = timeout_hint(try_queue.timeout) if try_queue is not None and plan.route_queue is None else None
        return plan


def fusable(state: MeshState, decision: Decision, runtimes: Mapping[str, ClusterRuntime]) -> FusedRoute | None:
    """``decision`` as a :class:`FusedRoute`, or None when it needs the full path whatever the request."""
    if decision.action is not Action.ROUTE or decision.hit is None:
        return None
    route = decision.hit.route
    destination = decision.destination
    cluster = decision.cluster
    if (
        destination is None
        or cluster is None
        or len(route.destinations) != 1  # a weighted draw per request
        or route.fault is not None
        or route.mirrors
        or id(route) in state.route_buckets
        or cluster.policy.tls.mode != "DISABLE"
        or (not cluster.endpoints and cluster.resolution == "NONE")  # passthrough cluster
        or cluster.policy.lb.hash_policies
    ):
        return None
    runtime = runtimes.get(cluster.name)
    if runtime is None:
        return None
    decision.request = None  # shared by every request of this shape: keep no request's headers alive
    decision.telemetry_memo = {}  # shared: telemetry may keep what it derives from it (tracing.spans)
    return FusedRoute(decision, route, destination, cluster, runtime)


class _Site:
    """What a memo lookup needs of one request target — scheme, authority (the ``Host`` header, else the URL's),
    port and path — worked out once, with the memo of the routes taken there."""

    __slots__ = ("authority", "last_url", "memo", "names", "port")

    def __init__(self, authority: str, port: int, names: tuple[str, ...] | None) -> None:
        self.authority = authority
        self.port = port
        self.names = names  # the headers the routes read; None: not memoised (they read the query, or too long)
        self.memo: dict[object, FusedRoute | None] = {}  # (method, header values...) or method -> route
        self.last_url: URL | None = None  # the URL object of the last request found by shape (see FusedPath._site)


class FusedPath:
    """The memo and the fused coroutine of one mesh's client middleware."""

    __slots__ = ("_by_url", "_memo_size", "_memo_state", "_names", "_pick", "_sites", "_urls",
                 "apply_response_ops", "fallback", "mesh", "runner", "suppress_hints")

    def __init__(
        self, mesh: Mesh, runner: UpstreamRunner[ClientResponse],
        apply_response_ops: Callable[..., None], *, suppress_hints: bool = False,
    ) -> None:
        self.mesh = mesh
        self.runner = runner
        self.apply_response_ops = apply_response_ops  # the middleware's: (response, *HeaderOps)
        self.suppress_hints = suppress_hints
        # The full path, for requests found unusual before they were touched (set by the middleware).
        self.fallback: FullPath | None = None
        # Sites by (scheme, authority, port, path, Host header); each holds its memo. A URL object seen
        # twice is also filed by its identity, with the object kept to verify it.
        self._sites: dict[tuple[str, str, int, str, str | None], _Site] = {}
        self._by_url: dict[object, tuple[URL, _Site]] = {}  # id(url), or (id(url), Host header)
        self._memo_size = 0  # memoised request shapes over every site
        self._names: dict[tuple[str, int], tuple[str, ...] | None] = {}
        self._memo_state: MeshState | None = None
        self._urls: dict[tuple[str, int, str, str, str], URL] = {}
        # The fused path's own pick context (the runner's is refilled by its attempts): no hash key, attempt 0,
        # nothing to avoid, and the runner's random source and host statistics.
        self._pick = PickContext(runner.rng, 0.0, runner.stats)

    def __len__(self) -> int:
        """Memoised request shapes (for tests and diagnostics)."""
        return self._memo_size

    def _forget(self) -> None:
        self._sites.clear()
        self._by_url.clear()
        self._names.clear()
        self._memo_size = 0

    def lookup(self, req: ClientRequest) -> FusedRoute | None:
        """The fused route for ``req``, or None: the full path handles it (see the module docstring)."""
        mesh = self.mesh
        if mesh._faults is not None or current_deadline() is not None:
            return None
        state = mesh._state
        if state is not self._memo_state:  # a new configuration: everything memoised is stale
            self._forget()
            self._memo_state = state
        url = req.url
        headers = req.headers
        host = headers.get(hdrs.HOST)
        known = self._by_url.get(id(url) if host is None else (id(url), host))
        site = known[1] if known is not None and known[0] is url else self._site(state, url, host)
        names = site.names
        if names is None:
            return None  # the routes read the query string, or a long authority + path: the full path routes it
        if not names:
            key: object = req.method
        elif len(names) == 1:  # the usual case when routes match on a header
            value = header_value(headers, names[0])
            if value is not None and len(value) > MEMO_KEY_CHARS:
                return None
            key = (req.method, value)
        else:
            values = [header_value(headers, name) for name in names]
            for value in values:
                if value is not None and len(value) > MEMO_KEY_CHARS:
                    return None
            key = (req.method, *values)
        memo = site.memo
        try:
            return memo[key]
        except KeyError:
            pass
        view = RequestView(req.method, site.authority, url.raw_path, url.scheme, headers,
                           url.query if url.raw_query_string else _NO_QUERY)
        port = site.port
        hit = state.routes.route(view, port)
        fused: FusedRoute | None = None  # memoised too: this shape takes the full path
        if hit is not None and len(hit.route.destinations) == 1:  # decide() draws nothing from the rng then
            fused = fusable(state, decide(state, view, port, mesh.rng), mesh._runtimes.runtimes)
        if self._memo_size >= MEMO_LIMIT:
            self._forget()
            site = self._site(state, url, host)
            memo = site.memo
        memo[key] = fused
        self._memo_size += 1
        return fused

    def _site(self, state: MeshState, url: URL, host: str | None) -> _Site:
        """The site of ``url`` (+ ``host``) by its shape; a URL object seen twice in a row there is filed by
        identity too (aiohttp hands the same object to every request made with the same URL text, but a new
        one to each request with ``params=`` or a fragment: those are found by shape every time)."""
        authority = host or url.raw_authority
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        shape = (url.scheme, authority, port, url.raw_path, host)
        site = self._sites.get(shape)
        if site is None:
            names = self._names.get((authority, port), _UNKNOWN)
            if names is _UNKNOWN:
                names = state.routes.memo_headers(authority, port)
                if len(self._names) >= MEMO_LIMIT:
                    self._names.clear()
                self._names[(authority, port)] = names
            if len(url.raw_path) + len(authority) > MEMO_KEY_CHARS:
                names = None  # a long path: routed by the full path, so the memo stays small in bytes too
            site = _Site(authority, port, names)
            if len(self._sites) >= MEMO_LIMIT:
                self._sites.clear()
                self._by_url.clear()
                self._memo_size = 0
            self._sites[shape] = site
        elif site.last_url is url:
            if len(self._by_url) >= MEMO_LIMIT:
                self._by_url.clear()
            self._by_url[id(url) if host is None else (id(url), host)] = (url, site)
        site.last_url = url
        return site

    def _endpoint_url(self, endpoint: Endpoint, scheme: str, path: str, query: str) -> URL:
        key = (endpoint.address, endpoint.port, scheme, path, query)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= _URL_CACHE_LIMIT:
                self._urls.clear()
            url = self._urls[key] = URL.build(
                scheme=scheme, host=endpoint.address, port=endpoint.port, path=path, query_string=query, encoded=True
            )
        return url

    async def request(
        self, req: ClientRequest, handler: ClientHandlerType, fused: FusedRoute, total: QueuedTimer | None,
        observation: Observation | None = None,
    ) -> ClientResponse:
        """Route ``req`` by ``fused``: the runner's steps 4–6 for attempt 1, inline (see the module docstring).

        ``total``: the request's entry for aiohttp's total timeout (:mod:`meshlib.aiohttp.total_timeout`);
        ``observation``: the request's telemetry (:mod:`meshlib.aiohttp.observe`), None when unobserved.
        """
        runtime = fused.runtime
        limits = runtime.limits
        # Admission first (a request slot and a connection slot, both free now, or nothing is taken).
        if runtime.bucket is not None or not limits.admit_at_once():
            assert self.fallback is not None  # nothing touched yet: the full path takes it from the start
            return await self.fallback(req, handler, observation, total)
        runner = self.runner
        counters = runtime.counters
        route_timer: QueuedTimer | None = None
        handed_over = False  # once attempt 1 is handed to the runner, the runner releases what is held
        returned: ClientResponse | None = None  # what the caller gets (the total timeout then covers its body)
        try:
            headers = req.headers
            url = req.url
            if observation is not None:
                observation.describe(fused.decision, headers.get(hdrs.HOST) or url.raw_authority)
            if hdrs.X_REQUEST_ID not in headers:
                headers[hdrs.X_REQUEST_ID] = new_request_id()
            for ops in fused.request_ops:
                apply_header_ops(ops, headers)
            if fused.authority is not None:
                headers[hdrs.HOST] = fused.authority
            if fused.close:
                headers[hdrs.CONNECTION] = "close"
            set_connect_timeout(req, fused.connect_timeout_s)
            scheme = url.scheme
            if scheme in ("https", "wss") and req.server_hostname is None:
                req.server_hostname = url.host

            # The runner's steps 4–5 (steps 1–3 have nothing to do for a fused route).
            loop = asyncio.get_running_loop()
            plan = fused.plan
            if plan is None or fused.plan_loop is not loop:
                plan = fused.use_plan(runner.plan_for(fused.route, loop), loop)
            now = runner.clock()
            counters["upstream_rq_total"] += 1
            try_queue = plan.try_queue
            route_queue = plan.route_queue
            task: asyncio.Task[object] | None = None
            if try_queue is not None or route_queue is not None:
                task = asyncio.current_task(loop)
                if task is None:
                    raise RuntimeError("the mesh middleware must run inside a task (its timeouts cancel the task)")
                if route_queue is not None:
                    route_timer = route_queue.arm(task)
            runtime.budget.deposit(now)

            # Step 6, attempt 1.
            pick = self._pick  # attempt 1 of a route without hash policies: only ``now`` changes
            pick.now = now
            balancer = fused.balancer
            endpoint = balancer.pick(pick)
            if endpoint is None:
                counters["upstream_cx_none_healthy"] += 1
                returned = local_response(req, 503, _NONE_HEALTHY, flag="UH")
                return returned
            key = endpoint.key
            if observation is not None:
                observation.attempts = 1
                observation.upstream_host = key
            req.url = self._endpoint_url(
                endpoint, scheme, url.raw_path if fused.path is None else fused.path, url.raw_query_string
            )
            if not self.suppress_hints:
                headers[ATTEMPT_COUNT] = "1"
                if route_timer is not None:
                    remaining = route_timer.when - loop.time()
                    headers[EXPECTED_TIMEOUT] = timeout_hint(
                        remaining if try_queue is None else min(try_queue.timeout, remaining)
                    )
                elif fused.try_hint is not None:
                    headers[EXPECTED_TIMEOUT] = fused.try_hint
            host = runner.stats.get(key, now)
            host.active_requests += 1
            response: ClientResponse | None = None
            try_timer = try_queue.arm(task) if try_queue is not None and task is not None else None
            try:
                response = await handler(req)
                # What ``runner.classify`` (the client's ``_classify``) answers, without its two calls.
                outcome = RESPONSE_OUTCOMES.get(response.status) or runner.classify(response)
            except asyncio.CancelledError:
                if try_timer is None or not try_timer.expired():
                    raise
                counters["upstream_rq_per_try_timeout"] += 1
                outcome = _PER_TRY_TIMEOUT
            except Exception as exc:
                classified = runner.outcome_of_error(exc, counters)
                if classified is None:
                    raise
                outcome = classified
            finally:
                if try_timer is not None:
                    try_timer.cancel()
                host.active_requests -= 1
            classifier = plan.classifier
            status = outcome.http_status
            if response is None or (
                classifier is not None
                and classifier.may_retry_response(status, outcome.grpc_status)  # a 200: no more asked
                and classifier.should_retry(outcome, idempotent=is_idempotent_method(req.method), body_replayable=True)
            ):
                # Not final: the runner carries on from this outcome (and releases what is held).
                handed_over = True
                first = FirstAttempt(now=now, task=task, route_timer=route_timer, key=key, host=host,
                                     response=response, outcome=outcome, try_timer=try_timer)
                send = self._sender(req, handler, scheme, url.raw_path if fused.path is None else fused.path,
                                    url.raw_query_string, observation)
                result = await runner.run(
                    fused.decision, runtime, send,
                    idempotent=is_idempotent_method(req.method),
                    body_replayable=lambda: not getattr(req.body, "consumed", False),
                    report=observation,
                    first=first,
                )
                returned = self._rendered(req, result, fused)
                return returned
            # Final: the runner's feedback and bookkeeping after the loop, inline.
            decay_s = balancer.ewma_decay_s
            outlier = runtime.outlier
            if decay_s is not None:
                done = runner.clock()
                observe_rtt(host, done - now, done, decay_s)
                if outlier is not None:
                    outlier.record(key, outcome, done)
            elif outlier is not None:
                if status < 500 and outcome.grpc_status is None:
                    outlier.record_success(key)  # reads no clock
                else:
                    outlier.record(key, outcome, runner.clock())
            # aiohttp releases the connection once the body is in: only a body still arriving needs a guard.
            if response._connection is not None and (try_timer is not None or route_timer is not None):
                guard_body = runner.guard_body
                if guard_body is not None:
                    route_when = route_timer.when if route_timer is not None else math.inf
                    if try_timer is not None and try_timer.when < route_when:
                        guard_body(response, try_timer.when, counters, "upstream_rq_per_try_timeout")
                    else:
                        guard_body(response, route_when, counters, "upstream_rq_timeout")
            counters["upstream_rq_completed"] += 1
            status_counter = STATUS_COUNTERS.get(status // 100)
            if status_counter is not None:
                counters[status_counter] += 1
            if fused.response_ops:
                self.apply_response_ops(response, *fused.response_ops)
            returned = response
            return returned
        except asyncio.CancelledError:
            if not handed_over and route_timer is not None and route_timer.expired():
                counters["upstream_rq_timeout"] += 1
                returned = local_response(req, 504, _TIMED_OUT, flag="UT")
                return returned
            if total is not None and total.expired():  # aiohttp's total timeout (total_timeout.py)
                raise TimeoutError from None
            raise
        finally:
            if total is not None:
                settle(total, returned)
            if not handed_over:
                if route_timer is not None:
                    route_timer.cancel()
                if runtime.waiters:  # a request waits for a connection slot: it gets this one
                    runtime.release_admitted(True)
                else:
                    limits.release_at_once()
            if observation is not None:
                end_observation(observation, req, returned)

    def _sender(  # noqa: PLR0917 - the request's parts the attempts need
        self, req: ClientRequest, handler: ClientHandlerType, scheme: str, path: str, query: str,
        observation: Observation | None,
    ) -> Callable[[Endpoint, int, float | None], Awaitable[ClientResponse]]:
        """The runner's ``send`` for the attempts after a handed-over attempt 1 (made only then)."""

        def send(endpoint: Endpoint, attempt: int, timeout_hint_s: float | None) -> Awaitable[ClientResponse]:
            req.url = self._endpoint_url(endpoint, scheme, path, query)
            if not self.suppress_hints:
                req.headers[ATTEMPT_COUNT] = _ATTEMPTS[attempt] if attempt < 10 else str(attempt)
                if timeout_hint_s is not None:
                    req.headers[EXPECTED_TIMEOUT] = timeout_hint(timeout_hint_s)
            if observation is not None and observation.span is not None:  # a retry: its own CLIENT span
                return traced_retry(req, handler, endpoint, attempt, observation)
            return handler(req)

        return send

    def _rendered(self, req: ClientRequest, result: ClientResponse | LocalReply, fused: FusedRoute) -> ClientResponse:
        if isinstance(result, LocalReply):
            return local_response(req, result.status, f"meshlib: {result.body}\n".encode(), headers=result.headers,
                                  flag=result.flag)
        if fused.response_ops:
            self.apply_response_ops(result, *fused.response_ops)
        return result
