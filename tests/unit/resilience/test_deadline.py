"""Deadline propagation: contextvar scope, header formats, min(route, remaining)."""

from __future__ import annotations

import asyncio

import pytest

from meshlib.resilience.deadline import (
    DeadlineExceeded,
    current_deadline,
    deadline_from_headers,
    deadline_scope,
    effective_timeout,
    format_expected_rq_timeout_ms,
    format_grpc_timeout,
    parse_expected_rq_timeout_ms,
    parse_grpc_timeout,
    remaining_timeout,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1H", 3600.0), ("2M", 120.0), ("3S", 3.0), ("250m", 0.25), ("1500u", 0.0015), ("7n", 7e-9),
     ("0n", 0.0), ("99999999S", 99_999_999.0), ("00000001m", 0.001)],
)
def test_parse_grpc_timeout(text: str, seconds: float) -> None:
    assert parse_grpc_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "S", "10", "123456789S", "1s", "1h", "1.5S", "-1S", " 1S", "1S ", "1SS", "١S", "1 S"],
)
def test_parse_grpc_timeout_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="grpc-timeout"):
        parse_grpc_timeout(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0n"), (-1.0, "0n"), (5e-9, "5n"), (0.05, "50000000n"), (0.1, "100000u"), (1.1, "1100000u"),
        (30.0, "30000000u"), (300.0, "300000m"), (100_000.0, "100000S"), (100_000_000.0, "1666667M"),
        (1e12, "99999999H"),
    ],
)
def test_format_grpc_timeout(seconds: float, text: str) -> None:
    assert format_grpc_timeout(seconds) == text


@pytest.mark.parametrize("seconds", [1e-9, 0.000123, 0.25, 1.0, 2.5, 59.999, 3600.0, 86_400.0 * 30])
def test_grpc_timeout_round_trip_never_shortens(seconds: float) -> None:
    back = parse_grpc_timeout(format_grpc_timeout(seconds))
    assert back >= seconds * (1 - 1e-12)
    assert back == pytest.approx(seconds, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("text", ["1H", "5M", "30S", "250m", "1500u", "7n"])
def test_grpc_timeout_canonical_forms_survive(text: str) -> None:
    seconds = parse_grpc_timeout(text)
    assert parse_grpc_timeout(format_grpc_timeout(seconds)) == pytest.approx(seconds)


def test_expected_rq_timeout_ms() -> None:
    assert parse_expected_rq_timeout_ms("1500") == 1.5
    assert parse_expected_rq_timeout_ms("0") is None
    for bad in ["", "-5", "1.5", "abc", "١٢"]:
        with pytest.raises(ValueError, match="expected-rq-timeout"):
            parse_expected_rq_timeout_ms(bad)
    assert format_expected_rq_timeout_ms(1.5) == "1500"
    assert format_expected_rq_timeout_ms(0.0001) == "1"  # rounded up, never shortened
    assert parse_expected_rq_timeout_ms(format_expected_rq_timeout_ms(2.25)) == 2.25


def test_deadline_from_headers() -> None:
    assert deadline_from_headers({"grpc-timeout": "2S"}, now=10.0) == 12.0
    assert deadline_from_headers({"x-envoy-expected-rq-timeout-ms": "500"}, now=10.0) == 10.5
    both = {"grpc-timeout": "1S", "x-envoy-expected-rq-timeout-ms": "5000"}
    assert deadline_from_headers(both, now=0.0) == 1.0
    malformed_grpc = {"grpc-timeout": "soon", "x-envoy-expected-rq-timeout-ms": "300"}
    assert deadline_from_headers(malformed_grpc, now=0.0) == 0.3
    assert deadline_from_headers({"grpc-timeout": "bad"}, now=0.0) is None
    assert deadline_from_headers({"x-envoy-expected-rq-timeout-ms": "0"}, now=0.0) is None
    assert deadline_from_headers({}, now=0.0) is None


def test_scope_sets_and_restores() -> None:
    assert current_deadline() is None
    with deadline_scope(100.0) as inner:
        assert inner == 100.0
        assert current_deadline() == 100.0
        with deadline_scope(50.0):
            assert current_deadline() == 50.0
        with deadline_scope(200.0) as kept:  # scopes only tighten
            assert kept == 100.0
            assert current_deadline() == 100.0
        with deadline_scope(None):
            assert current_deadline() == 100.0
        assert current_deadline() == 100.0
    assert current_deadline() is None


def test_scope_restores_on_exception() -> None:
    with pytest.raises(KeyError), deadline_scope(1.0):
        raise KeyError
    assert current_deadline() is None


def test_deadline_follows_tasks_and_stays_per_request() -> None:
    async def child() -> float | None:
        return current_deadline()

    async def request(deadline: float) -> tuple[float | None, float | None]:
        with deadline_scope(deadline):
            first, second = await asyncio.gather(child(), child())
            return first, second

    async def main() -> list[tuple[float | None, float | None]]:
        return list(await asyncio.gather(request(5.0), request(7.0)))

    assert asyncio.run(main()) == [(5.0, 5.0), (7.0, 7.0)]


@pytest.mark.parametrize(
    ("route", "deadline", "now", "expected"),
    [
        (None, None, 0.0, None),
        (0.0, None, 0.0, None),  # 0 = disabled
        (3.0, None, 0.0, 3.0),
        (None, 10.0, 4.0, 6.0),
        (3.0, 10.0, 4.0, 3.0),  # route is tighter
        (8.0, 10.0, 4.0, 6.0),  # remaining is tighter
        (0.0, 10.0, 9.5, 0.5),
    ],
)
def test_remaining_timeout_is_min_of_route_and_deadline(
    route: float | None, deadline: float | None, now: float, expected: float | None
) -> None:
    assert remaining_timeout(route, deadline, now) == expected


@pytest.mark.parametrize("now", [10.0, 11.0])
def test_passed_deadline_raises(now: float) -> None:
    with pytest.raises(DeadlineExceeded) as info:
        remaining_timeout(5.0, 10.0, now)
    assert info.value.deadline == 10.0
    assert info.value.now == now


def test_effective_timeout_reads_the_scope() -> None:
    assert effective_timeout(2.0, now=0.0) == 2.0
    with deadline_scope(1.0):
        assert effective_timeout(2.0, now=0.25) == 0.75
        with pytest.raises(DeadlineExceeded):
            effective_timeout(2.0, now=1.0)
