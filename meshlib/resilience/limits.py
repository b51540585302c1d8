"""Per-cluster circuit-breaker counters: Envoy's thresholds from Istio's connectionPool.

Envoy's "circuit breakers" are not open/closed state machines but four
resource counters per cluster, each refused once ``active >= max``
(``ResourceManagerImpl::canCreate``): connections, pending requests,
requests, retries. Istio fills them from ``connectionPool``
(``tcp.maxConnections``, ``http.http1MaxPendingRequests``,
``http.http2MaxRequests``, ``http.maxRetries``), defaulting each to 2³²−1.
meshlib keeps them per process, as Envoy keeps them per sidecar.

What the caller does on a refusal (semantics.md §3):

- **request / pending overflow** → answer 503 with ``x-envoy-overloaded: true``
  at once, and **never retry it** (the outcome is ``OutcomeKind.OVERFLOW``,
  which no retry condition matches): retrying into a saturated cluster is the
  load the breaker exists to shed. Envoy counts both in
  ``upstream_rq_pending_overflow``, and so does this class.
- **retry overflow** → skip the retry and return the last response
  (``upstream_rq_retry_overflow``).
- **connection overflow** → the request waits as pending (or overflows there);
  ``upstream_cx_overflow`` counts it.

When a :class:`~meshlib.resilience.budget.ConcurrencyRetryBudget` is given it
replaces ``max_retries``, as Envoy's ``retry_budget`` does.

The caller keeps one ``ClusterLimits`` per cluster name for the life of the
process and calls :meth:`ClusterLimits.update` when a new snapshot changes the
pool: the active counts survive the swap, so a lowered limit takes effect as
in-flight work drains instead of being forgotten.

Cost: one comparison and one increment per acquire (plain slotted ints, no
locks — one event loop owns the object).
"""

from __future__ import annotations

from meshlib.config.model import ConnectionPool
from meshlib.resilience.budget import ConcurrencyRetryBudget

# try_admit results.
REFUSED = 0
ADMITTED_PENDING = 1
ADMITTED = 2


class ClusterLimits:
    """The four Envoy resource counters of one cluster, with Envoy's stat names."""

    __slots__ = (
        "_budget",
        "_cx_active",
        "_max_connections",
        "_max_pending",
        "_max_requests",
        "_max_retries",
        "_pending_active",
        "_retry_active",
        "_rq_active",
        "pool",
        "upstream_cx_overflow",
        "upstream_rq_pending_overflow",
        "upstream_rq_retry_overflow",
    )

    def __init__(self, pool: ConnectionPool, retry_budget: ConcurrencyRetryBudget | None = None) -> None:
        self._rq_active = 0
        self._pending_active = 0
        self._retry_active = 0
        self._cx_active = 0
        # Counters (monotonic, Envoy names).
        self.upstream_rq_pending_overflow = 0
        self.upstream_rq_retry_overflow = 0
        self.upstream_cx_overflow = 0
        self.update(pool, retry_budget)

    def update(self, pool: ConnectionPool, retry_budget: ConcurrencyRetryBudget | None = None) -> None:
        """Adopt new thresholds from a config swap; active counts and counters are kept."""
        self.pool = pool
        self._max_requests = pool.max_requests
        self._max_pending = pool.max_pending_requests
        self._max_retries = pool.max_retries
        self._max_connections = pool.max_connections
        self._budget = retry_budget

    # ------------------------------------------------------------------ requests

    def try_acquire_request(self) -> bool:
        """Admit one request (an attempt in flight upstream); ``False`` → local 503, no retry."""
        if self._rq_active < self._max_requests:
            self._rq_active += 1
            return True
        self.upstream_rq_pending_overflow += 1
        return False

    def release_request(self) -> None:
        if self._rq_active <= 0:
            raise RuntimeError("release_request without a matching acquire")
        self._rq_active -= 1

    def try_acquire_pending(self) -> bool:
        """Admit one request waiting for a connection; ``False`` → local 503, no retry."""
        if self._pending_active < self._max_pending:
            self._pending_active += 1
            return True
        self.upstream_rq_pending_overflow += 1
        return False

    def release_pending(self) -> None:
        if self._pending_active <= 0:
            raise RuntimeError("release_pending without a matching acquire")
        self._pending_active -= 1

    # ------------------------------------------------------------------ both, in one call (the request path)

    def try_admit(self) -> int:
        """Admit one request and take a connection slot for it: the two acquires in one call.

        Returns :data:`ADMITTED` (both held), :data:`ADMITTED_PENDING` (the request
        is admitted but every connection is busy: the caller waits as pending;
        ``upstream_cx_overflow`` is counted) or :data:`REFUSED` (request overflow,
        nothing held).
        """
        if self._rq_active >= self._max_requests:
            self.upstream_rq_pending_overflow += 1
            return REFUSED
        self._rq_active += 1
        if self._cx_active < self._max_connections:
            self._cx_active += 1
            return ADMITTED
        self.upstream_cx_overflow += 1
        return ADMITTED_PENDING

    def admit_at_once(self) -> bool:
        """Admit one request with a connection slot when both are free now, as :meth:`try_admit` returning
        :data:`ADMITTED` does; otherwise take and count nothing and return False (the caller goes the long way).
        """
        if self._rq_active < self._max_requests and self._cx_active < self._max_connections:
            self._rq_active += 1
            self._cx_active += 1
            return True
        return False

    def release_at_once(self) -> None:
        """Release a request and its connection slot that :meth:`admit_at_once` took (checked there)."""
        self._rq_active -= 1
        self._cx_active -= 1

    def release_admitted(self, connection: bool) -> None:
        """Release a request admitted by :meth:`try_admit`, and its connection slot when ``connection``."""
        if self._rq_active <= 0 or (connection and self._cx_active <= 0):
            raise RuntimeError("release_admitted without a matching acquire")
        self._rq_active -= 1
        if connection:
            self._cx_active -= 1

    # ------------------------------------------------------------------ retries

    def max_retries(self) -> int:
        """The current retry threshold: the budget's when one is set, else ``max_retries``."""
        if self._budget is not None:
            return self._budget.max_retries(self._rq_active, self._pending_active)
        return self._max_retries

    def try_acquire_retry(self) -> bool:
        """Admit one retry; ``False`` → do not retry, return the last response."""
        if self._retry_active < self.max_retries():
            self._retry_active += 1
            return True
        self.upstream_rq_retry_overflow += 1
        return False

    def release_retry(self) -> None:
        """Call when the retried attempt has finished (Envoy holds the slot through backoff and attempt)."""
        if self._retry_active <= 0:
            raise RuntimeError("release_retry without a matching acquire")
        self._retry_active -= 1

    # ------------------------------------------------------------------ connections

    def try_acquire_connection(self) -> bool:
        """Admit one new upstream connection; ``False`` → queue as pending instead."""
        if self._cx_active < self._max_connections:
            self._cx_active += 1
            return True
        self.upstream_cx_overflow += 1
        return False

    def release_connection(self) -> None:
        if self._cx_active <= 0:
            raise RuntimeError("release_connection without a matching acquire")
        self._cx_active -= 1

    # ------------------------------------------------------------------ gauges

    @property
    def upstream_rq_active(self) -> int:
        return self._rq_active

    @property
    def upstream_rq_pending_active(self) -> int:
        return self._pending_active

    @property
    def upstream_rq_retry_active(self) -> int:
        return self._retry_active

    @property
    def upstream_cx_active(self) -> int:
        return self._cx_active

    @property
    def rq_open(self) -> int:
        """1 when the requests breaker is saturated (Envoy ``circuit_breakers.default.rq_open``)."""
        return int(self._rq_active >= self._max_requests)

    @property
    def rq_pending_open(self) -> int:
        return int(self._pending_active >= self._max_pending)

    @property
    def rq_retry_open(self) -> int:
        return int(self._retry_active >= self.max_retries())

    @property
    def cx_open(self) -> int:
        return int(self._cx_active >= self._max_connections)

    @property
    def remaining_rq(self) -> int:
        return max(self._max_requests - self._rq_active, 0)

    @property
    def remaining_pending(self) -> int:
        return max(self._max_pending - self._pending_active, 0)

    @property
    def remaining_retries(self) -> int:
        return max(self.max_retries() - self._retry_active, 0)

    @property
    def remaining_cx(self) -> int:
        return max(self._max_connections - self._cx_active, 0)

    def stats(self) -> dict[str, int]:
        """Every gauge and counter by its Envoy name (``circuit_breakers.default.*`` unprefixed)."""
        return {
            "upstream_rq_active": self._rq_active,
            "upstream_rq_pending_active": self._pending_active,
            "upstream_rq_retry_active": self._retry_active,
            "upstream_cx_active": self._cx_active,
            "upstream_rq_pending_overflow": self.upstream_rq_pending_overflow,
            "upstream_rq_retry_overflow": self.upstream_rq_retry_overflow,
            "upstream_cx_overflow": self.upstream_cx_overflow,
            "rq_open": self.rq_open,
            "rq_pending_open": self.rq_pending_open,
            "rq_retry_open": self.rq_retry_open,
            "cx_open": self.cx_open,
            "remaining_rq": self.remaining_rq,
            "remaining_pending": self.remaining_pending,
            "remaining_retries": self.remaining_retries,
            "remaining_cx": self.remaining_cx,
        }
