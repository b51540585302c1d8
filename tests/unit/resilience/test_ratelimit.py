"""Envoy's local rate limit token bucket and meshlib's annotation form."""

from __future__ import annotations

import pytest

from meshlib.resilience.ratelimit import LocalRateLimit, TokenBucket, parse_local_rate_limit


def test_starts_full_and_empties() -> None:
    bucket = TokenBucket(max_tokens=3, tokens_per_fill=1, fill_interval_s=1.0, created_at=0.0)
    assert bucket.tokens(0.0) == 3
    assert [bucket.try_consume(0.1) for _ in range(4)] == [True, True, True, False]


def test_refills_only_in_whole_intervals() -> None:
    bucket = TokenBucket(max_tokens=10, tokens_per_fill=2, fill_interval_s=1.0, created_at=0.0)
    for _ in range(10):
        assert bucket.try_consume(0.0)
    assert bucket.tokens(0.99) == 0
    assert bucket.tokens(1.0) == 2
    assert bucket.tokens(1.99) == 2
    assert bucket.tokens(3.5) == 6
    # A partial interval is not lost: the next fill is at t=4.0, not 4.5.
    assert bucket.tokens(4.0) == 8


def test_refill_caps_at_max() -> None:
    bucket = TokenBucket(max_tokens=5, tokens_per_fill=3, fill_interval_s=0.5, created_at=0.0)
    bucket.try_consume(0.0)
    assert bucket.tokens(100.0) == 5


def test_fill_clock_starts_at_first_use_when_not_given() -> None:
    bucket = TokenBucket(max_tokens=1, fill_interval_s=1.0)
    assert bucket.try_consume(50.0)
    assert not bucket.try_consume(50.9)
    assert bucket.try_consume(51.0)


def test_clock_going_backwards_does_not_refill() -> None:
    bucket = TokenBucket(max_tokens=1, fill_interval_s=1.0, created_at=10.0)
    assert bucket.try_consume(10.0)
    assert not bucket.try_consume(5.0)


@pytest.mark.parametrize(
    ("args", "field"),
    [((1, 1, 0.049), "fillInterval"), ((0, 1, 1.0), "maxTokens"), ((1, 0, 1.0), "tokensPerFill"),
     ((1, 1, float("nan")), "fillInterval")],
)
def test_invalid_buckets(args: tuple[int, int, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TokenBucket(*args)


def test_fifty_ms_is_the_minimum_allowed() -> None:
    TokenBucket(1, 1, 0.05)


def test_parse_annotation() -> None:
    limit = parse_local_rate_limit('{"maxTokens": 100, "tokensPerFill": 10, "fillInterval": "1s"}')
    assert limit == LocalRateLimit(max_tokens=100, tokens_per_fill=10, fill_interval_s=1.0, per="route")
    cluster = parse_local_rate_limit('{"maxTokens": 5, "fillInterval": "500ms"}', per="cluster")
    assert (cluster.tokens_per_fill, cluster.fill_interval_s, cluster.per) == (1, 0.5, "cluster")
    bucket = cluster.new_bucket(created_at=0.0)
    assert bucket.tokens(0.0) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"fillInterval": "1s"}', "maxTokens: required"),
        ('{"maxTokens": 1}', "fillInterval: required"),
        ('{"maxTokens": 1, "fillInterval": "soon"}', "fillInterval: not a duration"),
        ('{"maxTokens": 1, "fillInterval": "10ms"}', "fillInterval: must be at least 50ms"),
        ('{"maxTokens": 0, "fillInterval": "1s"}', "maxTokens: must be an integer"),
        ('{"maxTokens": "10", "fillInterval": "1s"}', "maxTokens: must be an integer"),
        ('{"maxTokens": 1.5, "fillInterval": "1s"}', "maxTokens: must be an integer"),
        ('{"maxTokens": 1, "tokensPerFill": -1, "fillInterval": "1s"}', "tokensPerFill: must be"),
        ('{"maxTokens": 1, "fillInterval": "1s", "maxToken": 2}', "maxToken: unknown field"),
    ],
)
def test_parse_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_local_rate_limit(text)


def test_per_is_validated() -> None:
    with pytest.raises(ValueError, match="per"):
        LocalRateLimit(max_tokens=1, per="host")  # type: ignore[arg-type]
