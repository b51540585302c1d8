"""Running the agent's checks: TTL expiry, HTTP and TCP probes, the critical-service reaper.

- **TTL**: critical with output ``TTL expired`` once ``TTL`` passes without a
  pass/warn/fail/update call; every such call restarts the timer.
- **HTTP**: a real request every ``Interval`` (``Method``, ``Header``, ``Body``,
  ``Timeout``, ``DisableRedirects``, ``TLSSkipVerify``): 2xx → passing, 429 →
  warning, anything else or no answer → critical (Consul's ``CheckHTTP``);
  output ``HTTP GET <url>: 200 OK Output: …``.
- **TCP**: a connect every ``Interval``: success → passing, else critical.
- **gRPC**: ``grpc.health.v1.Health/Check`` every ``Interval`` (``GRPC`` is
  ``host:port`` or ``host:port/service``; needs ``grpcio``): ``SERVING`` →
  passing, anything else or no answer → critical.
- **DeregisterCriticalServiceAfter**: a service whose check has been critical
  for longer than that (at least ``deregister_minimum``, Consul's 1 minute) is
  deregistered by a reaper that runs every ``reap_interval`` (Consul: 30 s).
- ``SuccessBeforePassing`` / ``FailuresBeforeWarning`` / ``FailuresBeforeCritical``
  hold a status until that many consecutive results agree.

Time comes from an injectable clock; with :class:`ManualClock` a test moves time
with ``await emulator.advance(seconds)`` and sees expiry and reaping at once.
UDP, H2PING and OS-service checks are accepted but not executed: they keep
their initial status (documented in docs/consul-emulator.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from meshlib.testing.consul.registration import CheckSpec
from meshlib.testing.consul.state import CRITICAL, PASSING, WARNING, CatalogStore

OUTPUT_MAX = 4096


class Clock(Protocol):
    def __call__(self) -> float: ...


class ManualClock:
    """A clock that only moves when told to (``advance``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class CheckRuntime:
    """Agent-local state of one check."""

    spec: CheckSpec
    node: str
    ttl_deadline: float | None = None
    critical_since: float | None = None
    successes: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class CheckRunner:
    """Owns the probe tasks and the timer sweep of one agent."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        clock: Clock = time.monotonic,
        deregister: Callable[[str], None],
        interval_override: float | None = None,
        initial_delay: float = 0.0,
        reap_interval: float = 30.0,
        deregister_minimum: float = 60.0,
        sweep_resolution: float = 0.1,
    ) -> None:
        self.store = store
        self.clock = clock
        self._deregister = deregister
        self.interval_override = interval_override
        self.initial_delay = initial_delay
        self.reap_interval = reap_interval
        self.deregister_minimum = deregister_minimum
        self.sweep_resolution = sweep_resolution
        self.checks: dict[str, CheckRuntime] = {}
        self._last_reap = clock()
        self._sweeper: asyncio.Task[None] | None = None
        self._timers_added = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.probes = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        tasks = [rt.task for rt in self.checks.values() if rt.task is not None]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
            self._sweeper = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- registration --------------------------------------------------------------------------------

    def add(self, spec: CheckSpec, node: str, status: str) -> None:
        self.remove(spec.check_id)
        runtime = CheckRuntime(spec=spec, node=node)
        now = self.clock()
        if spec.ttl_ns:
            runtime.ttl_deadline = now + spec.ttl_ns / 1e9
        if status == CRITICAL:
            runtime.critical_since = now
        self.checks[spec.check_id] = runtime
        if spec.ttl_ns or spec.deregister_after_ns:
            self._timers_added.set()
        if spec.type in ("http", "tcp", "grpc"):
            runtime.task = asyncio.get_running_loop().create_task(self._probe_forever(runtime))

    def remove(self, check_id: str) -> None:
        runtime = self.checks.pop(check_id, None)
        if runtime is not None and runtime.task is not None:
            runtime.task.cancel()

    def note_status(self, check_id: str, status: str) -> None:
        runtime = self.checks.get(check_id)
        if runtime is None:
            return
        if status == CRITICAL:
            if runtime.critical_since is None:
                runtime.critical_since = self.clock()
        else:
            runtime.critical_since = None

    def ttl_update(self, check_id: str, status: str, output: str) -> bool:
        """A pass/warn/fail/update call; False when the check is not a TTL check of this agent."""
        runtime = self.checks.get(check_id)
        if runtime is None or not runtime.spec.ttl_ns:
            return False
        runtime.ttl_deadline = self.clock() + runtime.spec.ttl_ns / 1e9
        self._set(runtime, status, output[:OUTPUT_MAX])
        return True

    def _set(self, runtime: CheckRuntime, status: str, output: str) -> None:
        self.store.set_check_status(runtime.node, runtime.spec.check_id, status, output)
        self.note_status(runtime.spec.check_id, status)

    # -- timers --------------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Expire TTLs and reap long-critical services (called by the timer task and ``advance``)."""
        now = self.clock()
        for runtime in list(self.checks.values()):
            if runtime.ttl_deadline is not None and now >= runtime.ttl_deadline:
                runtime.ttl_deadline = None
                self._set(runtime, CRITICAL, "TTL expired")
        if now - self._last_reap >= self.reap_interval:
            self._last_reap = now
            self.reap(now)

    def reap(self, now: float | None = None) -> list[str]:
        """Deregister services whose check is critical for longer than DeregisterCriticalServiceAfter."""
        now = self.clock() if now is None else now
        reaped = []
        for runtime in list(self.checks.values()):
            limit_ns = runtime.spec.deregister_after_ns
            if not limit_ns or runtime.critical_since is None or not runtime.spec.service_id:
                continue
            limit = max(limit_ns / 1e9, self.deregister_minimum)
            if now - runtime.critical_since > limit and runtime.spec.service_id not in reaped:
                reaped.append(runtime.spec.service_id)
        for service_id in reaped:
            self._deregister(service_id)
        return reaped

    def _has_timers(self) -> bool:
        return any(rt.spec.ttl_ns or rt.spec.deregister_after_ns for rt in self.checks.values())

    async def _sweep_forever(self) -> None:
        # Idle (no TTL or DeregisterCriticalServiceAfter check): sleep until one is added, no polling.
        while True:
            if not self._has_timers():
                self._timers_added.clear()
                await self._timers_added.wait()
            await asyncio.sleep(self.sweep_resolution)
            self.sweep()

    # -- probes --------------------------------------------------------------------------------------

    def _interval(self, spec: CheckSpec) -> float:
        return self.interval_override if self.interval_override is not None else spec.interval_ns / 1e9

    async def _probe_forever(self, runtime: CheckRuntime) -> None:
        await asyncio.sleep(self.initial_delay)
        while True:
            status, output = await self._probe(runtime.spec)
            self.probes += 1
            self._record(runtime, status, output)
            await asyncio.sleep(self._interval(runtime.spec))

    def _record(self, runtime: CheckRuntime, status: str, output: str) -> None:
        spec = runtime.spec
        if status == PASSING:
            runtime.successes += 1
            runtime.failures = 0
            if runtime.successes < spec.success_before_passing:
                return
        else:
            runtime.failures += 1
            runtime.successes = 0
            if spec.failures_before_critical and runtime.failures < spec.failures_before_critical:
                if spec.failures_before_warning and runtime.failures >= spec.failures_before_warning:
                    status = WARNING
                else:
                    return
        self._set(runtime, status, output[:OUTPUT_MAX])

    async def _probe(self, spec: CheckSpec) -> tuple[str, str]:
        timeout = spec.timeout_ns / 1e9
        if spec.type == "grpc":
            return await grpc_health_probe(spec.definition.get("GRPC") or "",
                                           bool(spec.definition.get("GRPCUseTLS")), timeout)
        if spec.type == "tcp":
            host, _, port = spec.tcp.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                return CRITICAL, f"dial tcp {spec.tcp}: {exc}"
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return PASSING, f"TCP connect {spec.tcp}: Success"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = [(name, value) for name, values in spec.header.items() for value in values]
        try:
            async with self._session.request(
                spec.method, spec.http, headers=headers, data=spec.body or None,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=not spec.definition.get("DisableRedirects"),
                ssl=not spec.definition.get("TLSSkipVerify"),
            ) as resp:
                text = (await resp.content.read(OUTPUT_MAX)).decode("utf-8", "replace")
                line = f"HTTP {spec.method} {spec.http}: {resp.status} {resp.reason} Output: {text}"
                if 200 <= resp.status < 300:
                    return PASSING, line
                if resp.status == 429:
                    return WARNING, line
                return CRITICAL, line
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return CRITICAL, f"Get \"{spec.http}\": {exc or type(exc).__name__}"


def _health_request(service: str) -> bytes:
    """``grpc.health.v1.HealthCheckRequest{service}`` in protobuf wire format (field 1, string)."""
    data = service.encode()
    if not data:
        return b""
    length, prefix = len(data), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        prefix.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x0a" + bytes(prefix) + data


def _serving_status(response: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, enum) from wire bytes; 0 (UNKNOWN) when absent."""
    if len(response) >= 2 and response[0] == 0x08:
        return response[1] & 0x7F
    return 0


async def grpc_health_probe(target: str, use_tls: bool, deadline_s: float) -> tuple[str, str]:
    """One ``grpc.health.v1.Health/Check`` call, as Consul's gRPC check makes it."""
    try:
        import grpc
    except ImportError:
        return CRITICAL, "gRPC checks need grpcio (pip install 'meshlib[grpc]')"
    address, _, service = target.partition("/")
    credentials = grpc.ssl_channel_credentials() if use_tls else None
    channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    try:
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        response = await call(_health_request(service), timeout=deadline_s)
    except grpc.aio.AioRpcError as exc:
        reason = f"rpc error: code = {exc.code().name} desc = {exc.details()}"
        return CRITICAL, f"gRPC {target} health check failed: {reason}"
    finally:
        await channel.close()
    status = _serving_status(bytes(response))
    if status == 1:
        return PASSING, f"gRPC check {target}: success"
    names = {0: "UNKNOWN", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
    return CRITICAL, f"gRPC {target} serving status: {names.get(status, status)}"
