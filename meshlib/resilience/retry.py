"""Retry decisions: Envoy's ``retry_on`` conditions, compiled once, plus per-request state.

Two pieces, kept apart as Finagle keeps ``ResponseClassifier`` apart from
retrying and tower keeps its retry ``Policy`` ("retry after d, or stop") apart
from the service it wraps:

- :class:`RetryClassifier` — the compiled form of a :class:`RetryPolicy`'s
  conditions. Built at config time (``for_policy`` caches one per policy), it
  answers ``should_retry(outcome, idempotent=, body_replayable=)`` with two
  frozenset look-ups.
- :class:`RetryState` — one per request: counts attempts against
  ``num_retries`` and draws Envoy's backoff. :meth:`RetryState.decide` is the
  tower-style policy: a delay in seconds, or ``None`` to stop.

Admission is not decided here: after ``decide`` returns a delay the caller
still asks the cluster's limits (``max_retries`` / retry budget) and the token
budget; a refusal there means "return the last response" (Envoy counts
``upstream_rq_retry_overflow``), never an error.

Conditions, as Envoy's ``RetryStateImpl`` evaluates them (Outcome kinds in
brackets):

=========================  ==================================================================
``5xx``                    any 5xx response; every reset, connect failure, refused stream and
                           per-try timeout (Envoy counts an upstream reset as a 5xx)
``gateway-error``          502/503/504; and the same local failures as ``5xx``
``reset``                  [RESET, RESET_BEFORE_REQUEST, CONNECT_FAILURE, REFUSED_STREAM,
                           PER_TRY_TIMEOUT, PROTOCOL_ERROR] — "no response at all", timeouts included
``connect-failure``        [CONNECT_FAILURE]
``refused-stream``         [REFUSED_STREAM]
``reset-before-request``   [RESET_BEFORE_REQUEST, CONNECT_FAILURE] — no byte was sent upstream
``retriable-4xx``          409
``retriable-status-codes`` the policy's ``retriable_status_codes``
gRPC names               ``cancelled`` 1, ``deadline-exceeded`` 4, ``resource-exhausted`` 8,
                           ``internal`` 13, ``unavailable`` 14 — against the response's
                           ``grpc-status`` only (no grpc-status → no match)
=========================  ==================================================================

Never retried: OVERFLOW (a local circuit breaker refused the attempt: Envoy's
``Overflow`` reset reason short-circuits to "no retry"). Numeric tokens in
``retry_on`` are read as status codes, as Istio's ``parseRetryOn`` does.
Unknown tokens are ignored by the classifier; :func:`unknown_retry_on` lets
config validation reject them where they enter.
``envoy-ratelimited`` and ``retriable-headers`` are accepted but cannot match:
an :class:`Outcome` carries no response headers.

**meshlib differs from Envoy on purpose (semantics.md §4):**

- *Non-idempotent requests* (anything but GET HEAD OPTIONS PUT DELETE TRACE,
  RFC 9110 §9.2.2) are retried only when the request provably never reached
  the server: CONNECT_FAILURE, REFUSED_STREAM (HTTP/2 promises the stream was
  not processed) and RESET_BEFORE_REQUEST. A 503 or a reset after sending
  may mean the server acted, so a POST is not repeated — unless the route opts
  in (``retry_non_idempotent=True``). gRPC adapters pass ``idempotent=True``:
  every gRPC call is a POST, and A6 makes the service owner responsible for
  listing only safe status codes.
- *A consumed body* (``body_replayable=False``, e.g. a streamed upload) is
  never retried: there is nothing to send again.
"""

from __future__ import annotations

import random
from functools import lru_cache

from meshlib.config.model import RetryPolicy
from meshlib.resilience.backoff import envoy_backoff_bound
from meshlib.resilience.outcome import Outcome, OutcomeKind

# RFC 9110 §9.2.2 idempotent methods.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

GRPC_STATUS_BY_CONDITION: dict[str, int] = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}

_K = OutcomeKind
_ALL_LOCAL_FAILURES = frozenset(
    {_K.RESET, _K.RESET_BEFORE_REQUEST, _K.CONNECT_FAILURE, _K.REFUSED_STREAM, _K.PER_TRY_TIMEOUT,
     _K.PROTOCOL_ERROR}
)
# Which non-response outcomes each condition retries.
_KINDS_BY_CONDITION: dict[str, frozenset[OutcomeKind]] = {
    "5xx": _ALL_LOCAL_FAILURES,
    "gateway-error": _ALL_LOCAL_FAILURES,
    "reset": _ALL_LOCAL_FAILURES,
    "connect-failure": frozenset({_K.CONNECT_FAILURE}),
    "refused-stream": frozenset({_K.REFUSED_STREAM}),
    # Envoy: retry when the upstream request had not started; a failed connect
    # never started it.
    "reset-before-request": frozenset({_K.RESET_BEFORE_REQUEST, _K.CONNECT_FAILURE}),
}
# Outcomes where the server provably did not process the request: the only
# ones a non-idempotent request may be retried on.
NEVER_SENT_KINDS = frozenset({_K.CONNECT_FAILURE, _K.REFUSED_STREAM, _K.RESET_BEFORE_REQUEST})

_STATUSES_BY_CONDITION: dict[str, frozenset[int]] = {
    "5xx": frozenset(range(500, 600)),
    "gateway-error": frozenset({502, 503, 504}),
    "retriable-4xx": frozenset({409}),
}

KNOWN_CONDITIONS = frozenset(
    {
        *_KINDS_BY_CONDITION,
        *_STATUSES_BY_CONDITION,
        *GRPC_STATUS_BY_CONDITION,
        "retriable-status-codes",
        "envoy-ratelimited",  # needs response headers: accepted, never matches
        "retriable-headers",  # likewise
    }
)


def unknown_retry_on(tokens: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The ``retry_on`` tokens meshlib does not know, for config validation to report."""
    stripped = (t.strip() for t in tokens)
    return tuple(t for t in stripped if t and not t.isdigit() and t not in KNOWN_CONDITIONS)


def is_idempotent_method(method: str) -> bool:
    """RFC 9110 idempotency of an HTTP method (upper-case names, as on the wire)."""
    return method in IDEMPOTENT_METHODS


class RetryClassifier:
    """The compiled conditions of one :class:`RetryPolicy`; immutable after construction."""

    __slots__ = (
        "_grpc",
        "_kinds",
        "_kinds_never_sent",
        "_statuses",
        "conditions",
        "policy",
        "retry_non_idempotent",
    )

    def __init__(self, policy: RetryPolicy, *, retry_non_idempotent: bool = False) -> None:
        conditions: set[str] = set()
        codes = set(policy.retriable_status_codes)
        for raw in policy.retry_on:
            token = raw.strip()
            if not token:
                continue
            if token.isdigit():
                # Istio turns numeric retryOn parts into retriable status codes
                # and adds the condition that makes Envoy look at them.
                codes.add(int(token))
                conditions.add("retriable-status-codes")
                continue
            # Unknown tokens are ignored here: config validation rejects them at
            # the edge (see unknown_retry_on), and the request path must not fail.
            if token in KNOWN_CONDITIONS:
                conditions.add(token)

        kinds: set[OutcomeKind] = set()
        statuses: set[int] = set()
        grpc: set[int] = set()
        for condition in conditions:
            kinds |= _KINDS_BY_CONDITION.get(condition, frozenset())
            statuses |= _STATUSES_BY_CONDITION.get(condition, frozenset())
            if condition in GRPC_STATUS_BY_CONDITION:
                grpc.add(GRPC_STATUS_BY_CONDITION[condition])
        # Envoy reads retriable_status_codes only under this condition.
        if "retriable-status-codes" in conditions:
            statuses |= codes

        self.policy = policy
        self.conditions = frozenset(conditions)
        self.retry_non_idempotent = retry_non_idempotent
        self._kinds = frozenset(kinds)
        self._kinds_never_sent = self._kinds & NEVER_SENT_KINDS
        self._statuses = frozenset(statuses)
        self._grpc = frozenset(grpc)

    @staticmethod
    @lru_cache(maxsize=1024)
    def for_policy(policy: RetryPolicy, retry_non_idempotent: bool = False) -> RetryClassifier:
        """The classifier for ``policy``, compiled once (policies are frozen and hashable)."""
        return RetryClassifier(policy, retry_non_idempotent=retry_non_idempotent)

    def may_retry_response(self, http_status: int, grpc_status: int | None) -> bool:
        """False when a response with these statuses is final under this policy whatever the request
        (a cheap first check; True means :meth:`should_retry` decides)."""
        return http_status in self._statuses or (grpc_status is not None and grpc_status in self._grpc)

    def should_retry(self, outcome: Outcome, *, idempotent: bool, body_replayable: bool) -> bool:
        """Whether ``outcome`` is retriable under this policy (attempt limits not considered)."""
        if not body_replayable:
            return False
        kind = outcome.kind
        if kind is _K.RESPONSE:
            if not (idempotent or self.retry_non_idempotent):
                # The server answered, so it saw the request.
                return False
            if outcome.http_status in self._statuses:
                return True
            grpc_status = outcome.grpc_status
            return grpc_status is not None and grpc_status in self._grpc
        # OVERFLOW is in no condition's kind set, so it falls through to False.
        if idempotent or self.retry_non_idempotent:
            return kind in self._kinds
        return kind in self._kinds_never_sent

    def __repr__(self) -> str:
        return f"RetryClassifier({sorted(self.conditions)}, statuses={len(self._statuses)})"


class RetryState:
    """Attempt bookkeeping for one request under one policy.

    ``attempts`` is the number of attempts started so far (the value of
    ``x-envoy-attempt-count`` for the current attempt); ``retries`` how many
    of them were retries. Envoy spends a retry from ``num_retries`` before it
    checks the retry circuit breaker, so an overflowed retry still counts.
    """

    __slots__ = ("attempts", "classifier", "retries")

    def __init__(self, classifier: RetryClassifier) -> None:
        self.classifier = classifier
        self.attempts = 1  # the first try has started when anyone asks
        self.retries = 0

    @property
    def retries_left(self) -> int:
        return max(self.classifier.policy.num_retries - self.retries, 0)

    @property
    def exhausted(self) -> bool:
        """No retry left (Envoy counts ``upstream_rq_retry_limit_exceeded`` when one was wanted)."""
        return self.retries >= self.classifier.policy.num_retries

    def next_backoff(self, rng: random.Random) -> float:
        """Spend one retry and return the wait before it, Envoy-jittered.

        Raises :class:`RuntimeError` when no retry is left: callers check
        :attr:`exhausted` (or use :meth:`decide`) first.
        """
        if self.exhausted:
            raise RuntimeError("no retries left")
        self.retries += 1
        self.attempts += 1
        policy = self.classifier.policy
        return rng.random() * envoy_backoff_bound(self.retries, policy.backoff_base_s, policy.backoff_max_s)

    def decide(
        self, outcome: Outcome, *, idempotent: bool, body_replayable: bool, rng: random.Random
    ) -> float | None:
        """Retry after the returned seconds, or stop (``None``)."""
        if self.retries >= self.classifier.policy.num_retries:
            return None
        if not self.classifier.should_retry(outcome, idempotent=idempotent, body_replayable=body_replayable):
            return None
        return self.next_backoff(rng)
