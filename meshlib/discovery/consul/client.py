"""A non-blocking Consul HTTP client: py-consul's API on meshlib's own aiohttp transport.

py-consul (``consul`` package) supplies the endpoint methods (service
registration, TTL checks, config entries); meshlib supplies the HTTP layer,
because ``consul.aio`` must be built inside a running loop, applies one
session-wide timeout that a blocking query outlives, and lets raw aiohttp
errors escape. Here:

- the ``aiohttp.ClientSession`` is created lazily, on the first request, inside the loop;
- each request gets its own timeout: connect + ``wait`` + ``wait/16`` (the server
  adds up to ``wait/16`` of jitter to a blocking query), or connect + 10 s;
- TLS to Consul uses one ``ssl.SSLContext`` (CA file, client certificate, verify switch);
- every transport failure (refused, reset, DNS, timeout) becomes :class:`ConsulError`.

Settings follow Consul's CLI: an explicit argument wins, else ``CONSUL_HTTP_ADDR``
(``host:port``, ``http[s]://host:port`` or ``unix:///path``), ``CONSUL_HTTP_TOKEN`` /
``CONSUL_HTTP_TOKEN_FILE``, ``CONSUL_HTTP_SSL``, ``CONSUL_CACERT``,
``CONSUL_CLIENT_CERT`` / ``CONSUL_CLIENT_KEY``, ``CONSUL_HTTP_SSL_VERIFY``,
``CONSUL_TLS_SERVER_NAME``::

    client = ConsulClient.from_settings(ConsulSettings.resolve("127.0.0.1:8500", token="s3cr3t"))
    response = await client.get("/v1/health/service/web", [("stale", "")], index=42, wait_s=57.0)
    response.index, response.json()
    await client.close()
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import consul.base  # type: ignore[import-untyped]
from multidict import CIMultiDict, CIMultiDictProxy

from meshlib.errors import MeshError

__all__ = ["ConsulClient", "ConsulError", "ConsulResponse", "ConsulSettings"]

DEFAULT_ADDRESS = "127.0.0.1:8500"
DEFAULT_REQUEST_TIMEOUT_S = 10.0  # a non-blocking call (register, TTL pass, config write)
MAX_BODY_BYTES = 256 * 1024 * 1024  # a catalog of 10k services x 100 instances stays far below


class ConsulError(MeshError):
    """Consul could not be reached or answered with an error.

    ``status`` is the HTTP status, or None for a transport failure (refused,
    reset, timeout). ``str()`` names the request and the cause.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class ConsulResponse:
    """One HTTP answer from Consul, with the blocking-query headers decoded."""

    status: int
    headers: Mapping[str, str]
    body: str

    @property
    def index(self) -> int:
        """``X-Consul-Index`` (0 when absent or not a number)."""
        return _int_header(self.headers.get("X-Consul-Index"))

    @property
    def last_contact_ms(self) -> int | None:
        """``X-Consul-LastContact``: ms since the answering server heard from the leader (absent: None)."""
        raw = self.headers.get("X-Consul-LastContact")
        return None if raw is None else _int_header(raw)

    @property
    def known_leader(self) -> bool | None:
        """``X-Consul-KnownLeader`` (absent, e.g. the streaming backend: None)."""
        raw = self.headers.get("X-Consul-KnownLeader")
        return None if raw is None else raw.strip().lower() == "true"

    def json(self) -> Any:
        """The body decoded; :class:`ConsulError` when it is not JSON."""
        try:
            return json.loads(self.body) if self.body.strip() else None
        except ValueError as exc:
            raise ConsulError(f"Consul answered with invalid JSON: {exc}", status=self.status) from None


def _int_header(raw: str | None) -> int:
    if raw is None:
        return 0
    try:
        return max(0, int(raw.strip()))
    except ValueError:
        return 0


def _env_true(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class ConsulSettings:
    """Where Consul is and how to talk to it (resolved from arguments and the environment)."""

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    tls_server_name: str | None = None  # the name checked in Consul's certificate (default: the host)
    unix_socket: str | None = None  # CONSUL_HTTP_ADDR=unix:///path: the agent's HTTP API on a Unix socket
    datacenter: str | None = None
    connect_timeout_s: float = 5.0

    @property
    def base_url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        return f"{self.scheme}://{self.host}:{self.port}"

    @classmethod
    def resolve(
        cls,
        address: str | None = None,
        *,
        token: str | None = None,
        dc: str | None = None,
        env: Mapping[str, str] | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify: bool | None = None,
        connect_timeout_s: float = 5.0,
    ) -> ConsulSettings:
        """Arguments first, then the ``CONSUL_*`` environment variables Consul's CLI reads.

        >>> ConsulSettings.resolve("https://consul.internal:8501", env={}).base_url
        'https://consul.internal:8501'
        >>> ConsulSettings.resolve(env={"CONSUL_HTTP_ADDR": "10.0.0.5:8500", "CONSUL_HTTP_TOKEN": "t"}).token
        't'
        """
        environ = os.environ if env is None else env
        text = (address or environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDRESS).strip()
        unix_socket = None
        if text.startswith("unix://"):
            unix_socket = text[len("unix://") :]
            if not unix_socket:
                raise ValueError(f"Consul address {text!r}: want unix:///path/to/socket")
            text = "localhost:80"  # what the HTTP requests name; the socket carries them
        parsed = urllib.parse.urlsplit(text if "://" in text else f"//{text}")
        if parsed.scheme not in ("", "http", "https"):
            raise ValueError(f"Consul address {text!r}: scheme must be http or https")
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"Consul address {text!r}: the port is not a number in 1..65535") from None
        host = parsed.hostname
        if not host:
            raise ValueError(f"Consul address {text!r}: want host:port or http[s]://host:port")
        ssl_flag = _env_true(environ.get("CONSUL_HTTP_SSL"))
        scheme = parsed.scheme or ("https" if ssl_flag else "http")
        if ssl_flag is not None and not parsed.scheme:
            scheme = "https" if ssl_flag else "http"
        if token is None:
            token = environ.get("CONSUL_HTTP_TOKEN") or None
            token_file = environ.get("CONSUL_HTTP_TOKEN_FILE")
            if token is None and token_file:
                token = Path(token_file).read_text().strip() or None
        if verify is None:
            verify_flag = _env_true(environ.get("CONSUL_HTTP_SSL_VERIFY"))
            verify = True if verify_flag is None else verify_flag
        return cls(
            host=host,
            port=port or (8501 if scheme == "https" else 8500),
            scheme=scheme,
            token=token,
            ca_file=ca_file or environ.get("CONSUL_CACERT") or None,
            cert_file=cert_file or environ.get("CONSUL_CLIENT_CERT") or None,
            key_file=key_file or environ.get("CONSUL_CLIENT_KEY") or None,
            tls_server_name=environ.get("CONSUL_TLS_SERVER_NAME") or None,
            unix_socket=unix_socket,
            verify=verify,
            datacenter=dc,
            connect_timeout_s=connect_timeout_s,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an ``https`` Consul (None for plain HTTP)."""
        if self.scheme != "https":
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _wait_seconds(params: Sequence[tuple[str, Any]] | None) -> float:
    """The ``wait`` of a blocking query in seconds (0 when the request does not block)."""
    if not params:
        return 0.0
    values = dict(params)
    if not values.get("index"):
        return 0.0
    wait = str(values.get("wait", "5m"))
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if wait.endswith(suffix):
            try:
                return float(wait[: -len(suffix)]) * scale
            except ValueError:
                return 300.0
    return 300.0


async def _read_body(response: aiohttp.ClientResponse, what: str) -> bytes:
    """The whole body, refusing one above :data:`MAX_BODY_BYTES` (declared or as it streams in)."""
    if (response.content_length or 0) > MAX_BODY_BYTES:
        raise ConsulError(f"{what}: answer larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ConsulError(f"{what}: answer larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _AioHttpTransport(consul.base.HTTPClient):  # type: ignore[misc]
    """py-consul's ``HTTPClient`` contract (callback, method, path, params) on one aiohttp session."""

    def __init__(self, settings: ConsulSettings) -> None:
        super().__init__(settings.host, settings.port, settings.scheme, settings.verify, None)
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self.settings.unix_socket:
                connector = aiohttp.UnixConnector(self.settings.unix_socket, limit=0)
            else:
                connector = aiohttp.TCPConnector(ssl=self.settings.ssl_context() or True, limit=0)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, Any]] | None = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> consul.base.Response:
        uri = self.uri(path, list(params) if params else None)
        connect = self.settings.connect_timeout_s
        wait = _wait_seconds(params)
        total = connect + (wait + wait / 16 if wait else DEFAULT_REQUEST_TIMEOUT_S)
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect)
        try:
            async with self._client_session().request(
                method, uri, data=data, headers=dict(headers or {}), timeout=timeout,
                server_hostname=self.settings.tls_server_name if self.settings.scheme == "https" else None,
            ) as response:
                raw = await _read_body(response, f"{method} {path}")
                headers_out: CIMultiDictProxy[str] = response.headers
                return consul.base.Response(response.status, headers_out, raw.decode("utf-8", "replace"))
        except ConsulError:
            raise
        except TimeoutError:
            raise ConsulError(f"{method} {path}: no answer from Consul within {total:.1f}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConsulError(f"{method} {path}: cannot reach Consul at {self.base_uri}: {exc}") from None

    async def _call(self, callback: Callable[[Any], Any], method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, kwargs.get("params"), kwargs.get("data"), kwargs.get("headers"))
        try:
            return callback(response)
        except consul.ConsulException as exc:
            raise ConsulError(f"{method} {path}: {exc}", status=response.code, body=response.body) from None

    # py-consul calls these with (callback, path, params=..., headers=..., data=...) and awaits the result.
    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, **_: Any) -> Any:
        return self._call(callback, "GET", path, params=params, headers=headers)

    def put(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None, **_: Any) -> Any:
        return self._call(callback, "PUT", path, params=params, headers=headers, data=data)

    def delete(
        self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None, **_: Any
    ) -> Any:
        return self._call(callback, "DELETE", path, params=params, headers=headers, data=data or None)

    def post(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None, **_: Any) -> Any:
        return self._call(callback, "POST", path, params=params, headers=headers, data=data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _MeshConsul(consul.base.Consul):  # type: ignore[misc]
    """py-consul's client object with meshlib's transport and settings (not re-read from the environment)."""

    def __init__(self, settings: ConsulSettings) -> None:
        self._settings = settings
        super().__init__(
            host=settings.host,
            port=settings.port,
            token=settings.token,
            scheme=settings.scheme,
            dc=settings.datacenter,
            verify=settings.verify,
        )
        self.token = settings.token  # py-consul lets CONSUL_HTTP_TOKEN override the argument; Consul's CLI does not

    def http_connect(self, host: str, port: int, scheme: str, verify: bool | str = True, cert: Any = None) -> Any:
        return _AioHttpTransport(self._settings)


class PyConsulAgent(Protocol):
    """The part of py-consul's ``Consul`` object meshlib calls (py-consul has no type hints)."""

    agent: Any
    config: Any
    http: _AioHttpTransport

    def prepare_headers(self, token: str | None = None) -> dict[str, str]: ...


class ConsulClient:
    """Typed access to Consul for meshlib: blocking reads, registration, TTL checks, config writes."""

    def __init__(self, settings: ConsulSettings) -> None:
        self.settings = settings
        self._api: PyConsulAgent = _MeshConsul(settings)

    @classmethod
    def from_settings(cls, settings: ConsulSettings) -> ConsulClient:
        return cls(settings)

    @property
    def address(self) -> str:
        return self.settings.base_url

    @property
    def api(self) -> PyConsulAgent:
        """py-consul's client object (its methods return awaitables here)."""
        return self._api

    def _headers(self) -> dict[str, str]:
        return self._api.prepare_headers(None)

    async def get(
        self,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        index: int = 0,
        wait_s: float = 0.0,
    ) -> ConsulResponse:
        """One (blocking when ``index`` > 0) GET; any status comes back, transport failures raise."""
        query = list(params)
        if self.settings.datacenter and not any(key == "dc" for key, _ in query):
            query.append(("dc", self.settings.datacenter))
        if index > 0:
            query.append(("index", str(index)))
            query.append(("wait", f"{max(1, round(wait_s * 1000))}ms"))
        response = await self._api.http.request("GET", path, query, None, self._headers())
        return ConsulResponse(response.code, CIMultiDict(response.headers), response.body)

    async def register_service(self, **kwargs: Any) -> None:
        """``PUT /v1/agent/service/register`` via py-consul (keywords as ``agent.service.register``)."""
        await self._api.agent.service.register(**kwargs)

    async def deregister_service(self, service_id: str) -> None:
        await self._api.agent.service.deregister(service_id)

    async def ttl_pass(self, check_id: str, notes: str | None = None) -> None:
        await self._api.agent.check.ttl_pass(check_id, notes)

    async def ttl_fail(self, check_id: str, notes: str | None = None) -> None:
        await self._api.agent.check.ttl_fail(check_id, notes)

    async def put_config(self, entry: Mapping[str, Any]) -> None:
        """``PUT /v1/config``: create or replace a config entry (``Kind`` and ``Name`` inside)."""
        response = await self._api.http.request("PUT", "/v1/config", None, json.dumps(entry), self._headers())
        if response.code >= 300:
            raise ConsulError(
                f"PUT /v1/config {entry.get('Kind')}/{entry.get('Name')}: {response.code} {response.body.strip()}",
                status=response.code,
                body=response.body,
            )

    async def close(self) -> None:
        await self._api.http.close()

    async def __aenter__(self) -> ConsulClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

