"""Envoy-style access log: one line per outbound request, as a :class:`TelemetrySink`.

Fields and names are Envoy's (as Istio's JSON access log spells them):
``start_time`` (RFC 3339, milliseconds, UTC), ``method``, ``path``,
``protocol``, ``response_code``, ``response_flags`` (``UF,URX``, ``UO``, ``UT``,
``NR``, ``DI``, ``FI``, ``UH``, ``RL``, ``UC``… or ``-``), ``bytes_received``,
``bytes_sent``, ``duration`` (ms), ``upstream_service_time``,
``x_forwarded_for``, ``user_agent``, ``request_id``, ``authority``,
``upstream_host``, ``upstream_cluster``, ``route_name``, plus
``upstream_request_attempt_count`` and ``downstream_remote_address``.
Unknown values are ``null`` in JSON and ``-`` in text, as in Envoy.

``format="text"`` writes Envoy's default format::

    [2026-11-23T14:00:00.123Z] "GET /r/0 HTTP/1.1" 200 - 0 295 4 - "-" "curl/8" "9f0c" "reviews:9080" "10.0.0.7:9080"

Output goes to a :class:`logging.Logger` (``meshlib.access`` by default, at
INFO, nothing is formatted unless that logger is enabled for INFO) or to any
object with ``write(str)``.

Example::

    log = AccessLog()                         # JSON to logging.getLogger("meshlib.access")
    log = AccessLog(sys.stdout, format="text")
    log.outbound(record)
"""

from __future__ import annotations

import logging
import time
from json.encoder import encode_basestring as _encode_str
from typing import Any, Final, Literal, Protocol

from meshlib.tracing.record import InboundRecord, OutboundRecord

__all__ = ["AccessLog", "Writable", "access_log_fields", "format_start_time", "format_text", "to_json"]

LOGGER_NAME: Final = "meshlib.access"


class Writable(Protocol):
    """Anything with ``write(str)``: a file, ``sys.stdout``, an ``io.StringIO``."""

    def write(self, s: str, /) -> Any: ...


_time_cache: list[Any] = [-1, ""]  # [unix second, "YYYY-MM-DDTHH:MM:SS"]


def format_start_time(unix_ns: int) -> str:
    """RFC 3339 UTC with milliseconds, like Envoy's ``%START_TIME%``.

    >>> format_start_time(1_700_000_000_123_456_789)
    '2023-11-14T22:13:20.123Z'
    """
    ms_total = unix_ns // 1_000_000
    sec, ms = divmod(ms_total, 1000)
    cache = _time_cache
    if cache[0] != sec:
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        cache[0] = sec
    return f"{cache[1]}.{ms:03d}Z"


def _protocol(grpc_status: int | None) -> str:
    return "HTTP/1.1" if grpc_status is None else "HTTP/2"


def access_log_fields(record: OutboundRecord | InboundRecord) -> dict[str, Any]:
    """Envoy's access-log fields of one record, in Istio's JSON order (``None`` when unknown)."""
    if isinstance(record, OutboundRecord):
        upstream_host, upstream_cluster, route_name = record.upstream_host, record.upstream_cluster, record.route_name
        attempts: int | None = record.attempts
        remote: str | None = None
    else:
        upstream_host, upstream_cluster, route_name = None, None, record.route
        attempts, remote = None, record.source_address
    return {
        "start_time": format_start_time(record.start_time_unix_ns),
        "method": record.method,
        "path": record.path,
        "protocol": _protocol(record.grpc_status),
        "response_code": record.status,
        "response_flags": record.response_flags or "-",
        "bytes_received": record.request_bytes,
        "bytes_sent": record.response_bytes,
        "duration": int(record.duration_s * 1000),
        "upstream_service_time": None,  # x-envoy-upstream-service-time: not measured separately
        "x_forwarded_for": None,
        "user_agent": record.user_agent,
        "request_id": record.request_id,
        "authority": record.authority,
        "upstream_host": upstream_host,
        "upstream_cluster": upstream_cluster,
        "route_name": route_name,
        "upstream_request_attempt_count": attempts,
        "downstream_remote_address": remote,
    }


def _q(value: str | None) -> str:
    return "-" if value is None else value


def format_text(record: OutboundRecord | InboundRecord) -> str:
    """Envoy's default access-log format (without the trailing newline).

    ``[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
    "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"``
    """
    upstream = record.upstream_host if isinstance(record, OutboundRecord) else None
    return (
        f'[{format_start_time(record.start_time_unix_ns)}] '
        f'"{record.method} {record.path} {_protocol(record.grpc_status)}" '
        f'{record.status} {record.response_flags or "-"} {record.request_bytes} {record.response_bytes} '
        f'{int(record.duration_s * 1000)} - "-" "{_q(record.user_agent)}" "{_q(record.request_id)}" '
        f'"{record.authority}" "{_q(upstream)}"'
    )


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return _encode_str(value)
    return str(value)  # int


def to_json(fields: dict[str, Any]) -> str:
    """One compact JSON object (keys are plain ASCII; values are str, int or None), faster than ``json.dumps``.

    >>> print(to_json({"a": 'x"y', "b": 1, "c": None}))
    {"a":"x\\"y","b":1,"c":null}
    """
    return "{" + ",".join([f'"{key}":{_json_value(value)}' for key, value in fields.items()]) + "}"


class AccessLog:
    """A telemetry sink writing one access-log line per request.

    ``target`` is a :class:`logging.Logger` (default ``logging.getLogger("meshlib.access")``,
    logged at INFO with the field dict as ``extra={"access_log": fields}`` in
    JSON mode) or any writable stream. ``format`` is ``"json"`` (default) or
    ``"text"`` (Envoy's default format). Inbound requests are logged only with
    ``log_inbound=True``.

    Example::

        >>> import io
        >>> out = io.StringIO()
        >>> AccessLog(out, format="text").outbound(OutboundRecord(
        ...     1_700_000_000_000_000_000, 0.0042, "GET", "http", "reviews:9080", "/r", 503, "UF,URX",
        ...     upstream_host="10.0.0.7:9080", request_id="abc"))
        >>> print(out.getvalue(), end="")
        [2023-11-14T22:13:20.000Z] "GET /r HTTP/1.1" 503 UF,URX 0 0 4 - "-" "-" "abc" "reviews:9080" "10.0.0.7:9080"
    """

    def __init__(
        self,
        target: logging.Logger | Writable | None = None,
        *,
        format: Literal["json", "text"] = "json",
        log_inbound: bool = False,
    ) -> None:
        if format not in ("json", "text"):
            raise ValueError(f"access log format must be 'json' or 'text', not {format!r}")
        self.format = format
        self.log_inbound = log_inbound
        self._logger: logging.Logger | None
        self._stream: Writable | None
        if target is None:
            target = logging.getLogger(LOGGER_NAME)
        if isinstance(target, logging.Logger):
            self._logger, self._stream = target, None
        else:
            self._logger, self._stream = None, target

    def outbound(self, record: OutboundRecord) -> None:
        """Write the line for one outbound request."""
        self._emit(record)

    def inbound(self, record: InboundRecord) -> None:
        """Write the line for one inbound request if ``log_inbound``."""
        if self.log_inbound:
            self._emit(record)

    def _emit(self, record: OutboundRecord | InboundRecord) -> None:
        logger = self._logger
        if logger is not None and not logger.isEnabledFor(logging.INFO):
            return
        if self.format == "json":
            fields = access_log_fields(record)
            line = to_json(fields)
            if logger is not None:
                logger.info(line, extra={"access_log": fields})
                return
        else:
            line = format_text(record)
            if logger is not None:
                logger.info(line)
                return
        assert self._stream is not None
        self._stream.write(line + "\n")
