"""Retry conditions (Envoy's retry_on), the non-idempotent rule, attempt counting."""

from __future__ import annotations

import random

import pytest

from meshlib.config.model import ISTIO_DEFAULT_RETRY, RetryPolicy
from meshlib.resilience.outcome import Outcome, OutcomeKind
from meshlib.resilience.retry import (
    RetryClassifier,
    RetryState,
    is_idempotent_method,
    unknown_retry_on,
)

K = OutcomeKind


def resp(status: int, grpc: int | None = None) -> Outcome:
    return Outcome(K.RESPONSE, http_status=status, grpc_status=grpc)


LOCAL = {
    "connect": Outcome(K.CONNECT_FAILURE),
    "reset_before": Outcome(K.RESET_BEFORE_REQUEST),
    "reset": Outcome(K.RESET),
    "refused": Outcome(K.REFUSED_STREAM),
    "timeout": Outcome(K.PER_TRY_TIMEOUT),
    "overflow": Outcome(K.OVERFLOW),
}


def classifier(*retry_on: str, codes: tuple[int, ...] = ()) -> RetryClassifier:
    return RetryClassifier(RetryPolicy(num_retries=3, retry_on=retry_on, retriable_status_codes=codes))


# (retry_on, outcome, expected for an idempotent request with a replayable body)
CASES: list[tuple[tuple[str, ...], Outcome, bool]] = [
    # 5xx: every 5xx and every local failure
    (("5xx",), resp(500), True),
    (("5xx",), resp(503), True),
    (("5xx",), resp(599), True),
    (("5xx",), resp(499), False),
    (("5xx",), resp(200), False),
    (("5xx",), resp(409), False),
    (("5xx",), LOCAL["connect"], True),
    (("5xx",), LOCAL["reset_before"], True),
    (("5xx",), LOCAL["reset"], True),
    (("5xx",), LOCAL["refused"], True),
    (("5xx",), LOCAL["timeout"], True),
    # gateway-error: 502/503/504 and local failures, not other 5xx
    (("gateway-error",), resp(502), True),
    (("gateway-error",), resp(503), True),
    (("gateway-error",), resp(504), True),
    (("gateway-error",), resp(500), False),
    (("gateway-error",), resp(501), False),
    (("gateway-error",), LOCAL["reset"], True),
    (("gateway-error",), LOCAL["timeout"], True),
    (("gateway-error",), LOCAL["connect"], True),
    # reset: no response at all, timeouts included; never a response
    (("reset",), LOCAL["reset"], True),
    (("reset",), LOCAL["reset_before"], True),
    (("reset",), LOCAL["timeout"], True),
    (("reset",), LOCAL["connect"], True),
    (("reset",), LOCAL["refused"], True),
    (("reset",), resp(503), False),
    # connect-failure
    (("connect-failure",), LOCAL["connect"], True),
    (("connect-failure",), LOCAL["reset"], False),
    (("connect-failure",), LOCAL["timeout"], False),
    (("connect-failure",), resp(503), False),
    # refused-stream
    (("refused-stream",), LOCAL["refused"], True),
    (("refused-stream",), LOCAL["reset"], False),
    (("refused-stream",), LOCAL["connect"], False),
    # reset-before-request: nothing sent yet
    (("reset-before-request",), LOCAL["reset_before"], True),
    (("reset-before-request",), LOCAL["connect"], True),
    (("reset-before-request",), LOCAL["reset"], False),
    (("reset-before-request",), LOCAL["timeout"], False),
    (("reset-before-request",), LOCAL["refused"], False),
    # retriable-4xx
    (("retriable-4xx",), resp(409), True),
    (("retriable-4xx",), resp(429), False),
    (("retriable-4xx",), resp(503), False),
    # gRPC conditions, read from grpc-status only
    (("cancelled",), resp(200, grpc=1), True),
    (("deadline-exceeded",), resp(200, grpc=4), True),
    (("resource-exhausted",), resp(200, grpc=8), True),
    (("internal",), resp(200, grpc=13), True),
    (("unavailable",), resp(200, grpc=14), True),
    (("unavailable",), resp(200, grpc=13), False),
    (("unavailable",), resp(200, grpc=0), False),
    (("unavailable",), resp(503), False),  # no grpc-status: HTTP 503 does not count
    (("unavailable",), LOCAL["reset"], False),
    (("internal",), resp(200, grpc=2), False),
    (("5xx",), resp(200, grpc=14), False),  # 5xx reads the HTTP status
    # accepted but header-based: cannot match an Outcome
    (("envoy-ratelimited",), resp(429), False),
    (("retriable-headers",), resp(503), False),
]


@pytest.mark.parametrize(("retry_on", "outcome", "expected"), CASES)
def test_condition_table(retry_on: tuple[str, ...], outcome: Outcome, expected: bool) -> None:
    policy = classifier(*retry_on)
    assert policy.should_retry(outcome, idempotent=True, body_replayable=True) is expected
    if outcome.kind is OutcomeKind.RESPONSE and expected:  # the fused path's first check never hides a retry
        assert policy.may_retry_response(outcome.http_status, outcome.grpc_status)


def test_retriable_status_codes_need_their_condition() -> None:
    with_condition = classifier("retriable-status-codes", codes=(418, 503))
    assert with_condition.should_retry(resp(418), idempotent=True, body_replayable=True)
    assert with_condition.should_retry(resp(503), idempotent=True, body_replayable=True)
    assert not with_condition.should_retry(resp(500), idempotent=True, body_replayable=True)
    # Envoy ignores retriable_status_codes without the condition.
    without = classifier("connect-failure", codes=(418,))
    assert not without.should_retry(resp(418), idempotent=True, body_replayable=True)


def test_numeric_tokens_become_status_codes_like_istio() -> None:
    c = classifier("connect-failure", "503", " 429 ")
    assert "retriable-status-codes" in c.conditions
    assert c.should_retry(resp(503), idempotent=True, body_replayable=True)
    assert c.should_retry(resp(429), idempotent=True, body_replayable=True)
    assert not c.should_retry(resp(502), idempotent=True, body_replayable=True)


@pytest.mark.parametrize("kind", list(OutcomeKind))
def test_overflow_is_never_retried_whatever_the_policy(kind: OutcomeKind) -> None:
    everything = classifier(
        "5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "reset-before-request",
        "retriable-4xx", "cancelled", "deadline-exceeded", "resource-exhausted", "internal", "unavailable",
    )
    outcome = Outcome(kind, http_status=503 if kind is K.RESPONSE else 0)
    assert everything.should_retry(outcome, idempotent=True, body_replayable=True) is (kind is not K.OVERFLOW)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (LOCAL["connect"], True),
        (LOCAL["refused"], True),
        (LOCAL["reset_before"], True),
        (LOCAL["reset"], False),  # the server may have acted on it
        (LOCAL["timeout"], False),
        (resp(503), False),
        (resp(200, grpc=14), False),
        (LOCAL["overflow"], False),
    ],
)
def test_non_idempotent_retried_only_when_never_sent(outcome: Outcome, expected: bool) -> None:
    c = classifier("5xx", "reset", "connect-failure", "refused-stream", "reset-before-request", "unavailable")
    assert c.should_retry(outcome, idempotent=False, body_replayable=True) is expected
    # The never-sent rule does not add conditions: it only filters them.
    narrow = classifier("connect-failure")
    assert not narrow.should_retry(LOCAL["refused"], idempotent=False, body_replayable=True)


def test_route_may_opt_in_to_retrying_non_idempotent() -> None:
    policy = RetryPolicy(num_retries=1, retry_on=("5xx",))
    opted = RetryClassifier(policy, retry_non_idempotent=True)
    assert opted.should_retry(resp(503), idempotent=False, body_replayable=True)
    assert opted.should_retry(LOCAL["reset"], idempotent=False, body_replayable=True)


@pytest.mark.parametrize("outcome", [resp(503), *LOCAL.values()])
def test_consumed_body_is_never_retried(outcome: Outcome) -> None:
    c = classifier("5xx", "reset", "connect-failure", "refused-stream", "reset-before-request")
    assert not c.should_retry(outcome, idempotent=True, body_replayable=False)
    assert not c.should_retry(outcome, idempotent=False, body_replayable=False)


def test_istio_default_policy() -> None:
    c = RetryClassifier.for_policy(ISTIO_DEFAULT_RETRY)
    assert c.should_retry(LOCAL["connect"], idempotent=True, body_replayable=True)
    assert c.should_retry(LOCAL["refused"], idempotent=True, body_replayable=True)
    assert c.should_retry(resp(200, grpc=14), idempotent=True, body_replayable=True)
    assert c.should_retry(resp(200, grpc=1), idempotent=True, body_replayable=True)
    assert not c.should_retry(resp(503), idempotent=True, body_replayable=True)  # 503 not by default
    assert not c.should_retry(LOCAL["reset"], idempotent=True, body_replayable=True)
    assert not c.should_retry(LOCAL["timeout"], idempotent=True, body_replayable=True)


def test_for_policy_caches_per_policy() -> None:
    policy = RetryPolicy(num_retries=2, retry_on=("5xx",))
    assert RetryClassifier.for_policy(policy) is RetryClassifier.for_policy(policy)
    assert RetryClassifier.for_policy(policy) is not RetryClassifier.for_policy(policy, True)


def test_unknown_tokens_ignored_by_classifier_and_reported_for_validation() -> None:
    c = classifier("5XX", "connect-failure", "")
    assert c.conditions == frozenset({"connect-failure"})
    assert unknown_retry_on(["5XX", "connect-failure", "503", " ", "bogus"]) == ("5XX", "bogus")


@pytest.mark.parametrize(
    ("method", "expected"),
    [("GET", True), ("HEAD", True), ("OPTIONS", True), ("PUT", True), ("DELETE", True), ("TRACE", True),
     ("POST", False), ("PATCH", False), ("CONNECT", False)],
)
def test_idempotent_methods(method: str, expected: bool) -> None:
    assert is_idempotent_method(method) is expected


# --------------------------------------------------------------------------- RetryState


def test_attempts_count_against_num_retries() -> None:
    rng = random.Random(1)
    state = RetryState(classifier("5xx"))  # num_retries=3
    assert (state.attempts, state.retries, state.retries_left) == (1, 0, 3)
    delays = []
    for _ in range(3):
        d = state.decide(resp(503), idempotent=True, body_replayable=True, rng=rng)
        assert d is not None
        delays.append(d)
    assert (state.attempts, state.retries, state.retries_left, state.exhausted) == (4, 3, 0, True)
    assert state.decide(resp(503), idempotent=True, body_replayable=True, rng=rng) is None
    assert state.attempts == 4
    with pytest.raises(RuntimeError):
        state.next_backoff(rng)


def test_decide_stops_on_success_without_spending_a_retry() -> None:
    rng = random.Random(1)
    state = RetryState(classifier("5xx"))
    assert state.decide(resp(200), idempotent=True, body_replayable=True, rng=rng) is None
    assert state.retries == 0


def test_zero_retries_never_retries() -> None:
    state = RetryState(RetryClassifier(RetryPolicy(num_retries=0, retry_on=("5xx",))))
    assert state.exhausted
    assert state.decide(resp(503), idempotent=True, body_replayable=True, rng=random.Random(0)) is None


def test_state_backoff_follows_the_policy_base_and_cap() -> None:
    policy = RetryPolicy(num_retries=10, retry_on=("5xx",), backoff_base_s=0.1, backoff_max_s=0.3)
    rng = random.Random(7)
    bounds = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]
    for _ in range(200):
        state = RetryState(RetryClassifier(policy))
        for bound in bounds:
            assert 0.0 <= state.next_backoff(rng) < bound
