"""Envoy-style access log lines from hand-built records."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from meshlib.tracing.access_log import AccessLog, access_log_fields, format_start_time, format_text
from meshlib.tracing.record import InboundRecord, OutboundRecord

START_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
CLUSTER = "outbound|9080|v1|reviews.default.svc.cluster.local"
ENVOY_FIELDS = [
    "start_time", "method", "path", "protocol", "response_code", "response_flags", "bytes_received",
    "bytes_sent", "duration", "upstream_service_time", "x_forwarded_for", "user_agent", "request_id",
    "authority", "upstream_host", "upstream_cluster", "route_name",
]


def record(status: int = 503, flags: str = "UF,URX", **overrides: object) -> OutboundRecord:
    r = OutboundRecord(
        start_time_unix_ns=START_NS, duration_s=0.0427, method="POST", scheme="http", authority="reviews:9080",
        path="/reviews/1", status=status, response_flags=flags, attempts=3, route_name="jason",
        virtual_service="default/reviews", upstream_cluster=CLUSTER,
        destination_service="reviews.default.svc.cluster.local", destination_subset="v1",
        upstream_host="10.0.0.7:9080", request_id="6b1c3f0e-8d6a-4d7e-9a51-0c4b1f2e3d4a",
        user_agent="python/aiohttp", request_bytes=17, response_bytes=91,
    )
    for key, value in overrides.items():
        setattr(r, key, value)
    return r


def test_start_time_is_rfc3339_with_milliseconds() -> None:
    assert format_start_time(START_NS) == "2023-11-14T22:13:20.123Z"
    assert format_start_time(START_NS + 1_000_000_000) == "2023-11-14T22:13:21.123Z"  # cache moves on
    assert format_start_time(0) == "1970-01-01T00:00:00.000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", format_start_time(1_234_567_890_999_000_000))


def test_json_line_has_envoy_fields() -> None:
    out = io.StringIO()
    AccessLog(out).outbound(record())
    line = out.getvalue()
    assert line.endswith("\n")
    assert line.count("\n") == 1
    fields = json.loads(line)
    assert list(fields)[: len(ENVOY_FIELDS)] == ENVOY_FIELDS
    assert fields == {
        "start_time": "2023-11-14T22:13:20.123Z",
        "method": "POST",
        "path": "/reviews/1",
        "protocol": "HTTP/1.1",
        "response_code": 503,
        "response_flags": "UF,URX",
        "bytes_received": 17,
        "bytes_sent": 91,
        "duration": 42,
        "upstream_service_time": None,
        "x_forwarded_for": None,
        "user_agent": "python/aiohttp",
        "request_id": "6b1c3f0e-8d6a-4d7e-9a51-0c4b1f2e3d4a",
        "authority": "reviews:9080",
        "upstream_host": "10.0.0.7:9080",
        "upstream_cluster": CLUSTER,
        "route_name": "jason",
        "upstream_request_attempt_count": 3,
        "downstream_remote_address": None,
    }


@pytest.mark.parametrize("flags", ["UO", "UF", "URX", "UT", "NR", "DI", "FI", "UH", "RL", "UC", "DI,FI"])
def test_response_flags_pass_through(flags: str) -> None:
    assert access_log_fields(record(flags=flags))["response_flags"] == flags
    assert f" {flags} " in format_text(record(flags=flags))


def test_missing_values() -> None:
    r = record(200, "", upstream_host=None, upstream_cluster=None, route_name=None, request_id=None,
               user_agent=None)
    fields = access_log_fields(r)
    assert fields["response_flags"] == "-"
    assert fields["upstream_host"] is fields["request_id"] is fields["route_name"] is None
    text = format_text(r)
    assert text.endswith('"-" "-" "-" "reviews:9080" "-"')


def test_text_format_is_envoys_default() -> None:
    out = io.StringIO()
    AccessLog(out, format="text").outbound(record())
    assert out.getvalue() == (
        '[2023-11-14T22:13:20.123Z] "POST /reviews/1 HTTP/1.1" 503 UF,URX 17 91 42 - "-" "python/aiohttp" '
        '"6b1c3f0e-8d6a-4d7e-9a51-0c4b1f2e3d4a" "reviews:9080" "10.0.0.7:9080"\n'
    )


def test_grpc_is_http2() -> None:
    assert access_log_fields(record(200, "-", grpc_status=0))["protocol"] == "HTTP/2"


def test_logger_target_and_structured_extra(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="meshlib.access"):
        AccessLog().outbound(record())
    [entry] = caplog.records
    assert entry.name == "meshlib.access"
    assert entry.levelno == logging.INFO
    assert json.loads(entry.getMessage())["response_flags"] == "UF,URX"
    assert entry.access_log["upstream_cluster"] == CLUSTER  # type: ignore[attr-defined]


def test_nothing_is_formatted_when_the_logger_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("test.access.off")
    logger.setLevel(logging.WARNING)

    def boom(_record: object) -> dict[str, object]:
        raise AssertionError("formatted although disabled")

    monkeypatch.setattr("meshlib.tracing.access_log.access_log_fields", boom)
    monkeypatch.setattr("meshlib.tracing.access_log.format_text", boom)
    AccessLog(logger).outbound(record())
    AccessLog(logger, format="text").outbound(record())


def test_inbound_only_when_asked() -> None:
    inbound = InboundRecord(START_NS, 0.002, "GET", "http", "productpage:9080", "/p", 200,
                            route="/p", source_address="10.0.0.9:51234", request_id="r1")
    out = io.StringIO()
    AccessLog(out).inbound(inbound)
    assert out.getvalue() == ""
    AccessLog(out, log_inbound=True).inbound(inbound)
    fields = json.loads(out.getvalue())
    assert fields["downstream_remote_address"] == "10.0.0.9:51234"
    assert fields["route_name"] == "/p"
    assert fields["upstream_host"] is None


def test_non_ascii_and_quotes_are_valid_json() -> None:
    out = io.StringIO()
    AccessLog(out).outbound(record(path='/a"b\\ü', user_agent="x\ny"))
    fields = json.loads(out.getvalue())
    assert fields["path"] == '/a"b\\ü'
    assert fields["user_agent"] == "x\ny"
    assert out.getvalue().count("\n") == 1


def test_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="json"):
        AccessLog(io.StringIO(), format="xml")  # type: ignore[arg-type]


def test_docstring_examples() -> None:
    import doctest

    import meshlib.tracing.access_log
    import meshlib.tracing.metrics
    import meshlib.tracing.prometheus

    for module in (meshlib.tracing.access_log, meshlib.tracing.metrics, meshlib.tracing.prometheus):
        result = doctest.testmod(module)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__
