"""One Consul blocking-query loop, with the client rules Consul documents.

A :class:`BlockingWatch` repeatedly GETs one endpoint with ``?index=N&wait=W``
and hands every *changed* payload to a callback. The rules
(``api-docs/features/blocking.mdx``, and the herd/empty-on-error lessons of
other Consul clients):

- ``wait`` is drawn per request from a jittered range (55–60 s by default), so
  thousands of watches do not re-issue at the same boundary;
- ``?stale`` by default: any server answers, also without a leader;
- the index: a value that goes backwards resets it to 0 (the next read is a
  full, non-blocking one), and a 0 from Consul is replaced by 1 so the next
  request really blocks instead of spinning (:func:`next_index`);
- a token bucket per loop (burst 2, one token a second by default) bounds the
  request rate however quickly Consul answers (:class:`LoopLimiter`);
- a failure (transport, 5xx, 403, bad JSON) keeps the last good payload,
  is recorded in :attr:`BlockingWatch.status`, and the loop backs off with
  jitter, capped low (2 s) so a returning Consul is picked up within seconds
  (:func:`backoff_delay`); the first read after a failure does not block, so a
  Consul whose index was reset is resynced at once;
- the payload is compared with the last one before the callback runs (an index
  move says nothing about the data); an empty answer with
  ``X-Consul-KnownLeader: false`` never replaces non-empty data.

Time, randomness and sleeping are injected, so the rules are unit-tested
without real sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshlib.discovery.consul.client import ConsulError, ConsulResponse

__all__ = ["BlockingWatch", "LoopLimiter", "WatchStatus", "WatchTiming", "backoff_delay", "next_index"]

log = logging.getLogger("meshlib.consul")

Fetch = Callable[[str, Sequence[tuple[str, str]], int, float], Awaitable[ConsulResponse]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WatchTiming:
    """The loop's timing knobs (the defaults suit production; tests shrink them)."""

    wait_min_s: float = 55.0
    wait_max_s: float = 60.0
    limiter_burst: int = 2
    limiter_interval_s: float = 1.0  # one token per interval once the burst is spent
    backoff_base_s: float = 0.25
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.wait_min_s <= self.wait_max_s <= 600:
            raise ValueError("wait range must satisfy 0 < wait_min_s <= wait_max_s <= 600 (Consul's maximum)")
        if self.limiter_burst < 1 or self.limiter_interval_s < 0:
            raise ValueError("limiter_burst must be >= 1 and limiter_interval_s >= 0")
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise ValueError("backoff must satisfy 0 < backoff_base_s <= backoff_max_s")


def next_index(last: int, returned: int) -> int:
    """The index for the next request, given the last one and the one Consul returned.

    >>> next_index(10, 12)   # moved forward: block on it
    12
    >>> next_index(10, 3)    # went backwards (snapshot restore, new cluster): full read
    0
    >>> next_index(0, 0)     # 0 would never block: "it is always safe to use 1"
    1
    """
    if returned < last:
        return 0
    return max(returned, 1)


def backoff_delay(failures: int, rng: random.Random, base_s: float, max_s: float) -> float:
    """Jittered exponential backoff for the ``failures``-th consecutive failure (1-based).

    Equal jitter: half the capped exponential step is fixed, half random, so
    watches that failed together do not retry together, and no delay exceeds ``max_s``.
    """
    step: float = min(max_s, base_s * 2.0 ** max(0, min(failures, 32) - 1))
    return step / 2 + rng.random() * step / 2


class LoopLimiter:
    """A token bucket for one loop: ``burst`` requests at once, then one per ``interval_s``.

    :meth:`reserve` takes a token and returns how long to wait before using it
    (0 while tokens are left), so a loop whose requests return at once settles
    at one request per interval instead of spinning.
    """

    __slots__ = ("_last", "_tokens", "burst", "interval_s")

    def __init__(self, burst: int, interval_s: float, now: float) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self._tokens = float(burst)
        self._last = now

    def reserve(self, now: float) -> float:
        if self.interval_s <= 0:
            return 0.0
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed / self.interval_s) - 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens * self.interval_s


@dataclass
class WatchStatus:
    """What ``mesh.status()`` shows for one watch."""

    path: str
    connected: bool = False
    last_index: int = 0
    last_contact_ms: int | None = None
    known_leader: bool | None = None
    last_error: str | None = None
    last_error_at: float | None = None  # the watch clock's time of the last failure
    last_ok_at: float | None = None
    consecutive_failures: int = 0
    requests: int = 0
    updates: int = 0

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "path": self.path,
            "connected": self.connected,
            "last_index": self.last_index,
            "last_contact_ms": self.last_contact_ms,
            "known_leader": self.known_leader,
            "last_error": self.last_error,
            "seconds_since_ok": None if self.last_ok_at is None else round(now - self.last_ok_at, 3),
            "seconds_since_error": None if self.last_error_at is None else round(now - self.last_error_at, 3),
            "consecutive_failures": self.consecutive_failures,
            "requests": self.requests,
            "updates": self.updates,
        }


def _is_empty(payload: Any) -> bool:
    return payload is None or payload in ([], {})


@dataclass
class BlockingWatch:
    """A blocking-query loop on ``path``; ``on_change(payload)`` runs for each new payload.

    ``check(payload)`` may raise ``ValueError`` for a payload of the wrong
    shape (it then counts as a failure and the last good payload stays).
    """

    path: str
    fetch: Fetch
    on_change: Callable[[Any], None]
    params: Sequence[tuple[str, str]] = ()
    stale: bool = True
    timing: WatchTiming = field(default_factory=WatchTiming)
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    sleep: Sleep = asyncio.sleep
    check: Callable[[Any], None] | None = None
    on_step: Callable[[], None] | None = None  # after every request's outcome is recorded in ``status``

    def __post_init__(self) -> None:
        self.status = WatchStatus(self.path)
        self.value: Any = None
        self.has_value = False
        self.synced = asyncio.Event()  # set after the first successful read
        self._index = 0
        self._limiter = LoopLimiter(self.timing.limiter_burst, self.timing.limiter_interval_s, self.clock())

    @property
    def index(self) -> int:
        """The index the next request blocks on (0 = a full, non-blocking read)."""
        return self._index

    async def run(self) -> None:
        """Loop until cancelled."""
        while True:
            await self.step()

    async def step(self) -> None:
        """One request: rate limit, fetch, then accept (and maybe notify) or back off."""
        pause = self._limiter.reserve(self.clock())
        if pause > 0:
            await self.sleep(pause)
        params = list(self.params)
        if self.stale:
            params.append(("stale", ""))
        wait_s = self.rng.uniform(self.timing.wait_min_s, self.timing.wait_max_s)
        self.status.requests += 1
        try:
            response = await self.fetch(self.path, params, self._index, wait_s)
            self._accept(response)
        except ConsulError as exc:
            await self._failed(str(exc))
        else:
            self._stepped()

    def _stepped(self) -> None:
        if self.on_step is not None:
            self.on_step()

    def _accept(self, response: ConsulResponse) -> None:
        if response.status != 200:
            detail = response.body.strip()[:200]
            if response.status == 403:
                detail = f"permission denied (ACL token): {detail}"
            raise ConsulError(f"GET {self.path}: {response.status} {detail}".rstrip(), status=response.status)
        payload = response.json()
        if self.check is not None:
            try:
                self.check(payload)
            except ValueError as exc:
                raise ConsulError(f"GET {self.path}: unexpected answer: {exc}", status=200) from None
        status = self.status
        now = self.clock()
        status.connected = True
        status.consecutive_failures = 0
        status.last_ok_at = now
        status.last_contact_ms = response.last_contact_ms
        status.known_leader = response.known_leader
        returned = response.index
        self._index = next_index(self._index, returned)
        status.last_index = returned
        if response.known_leader is False and _is_empty(payload) and self.has_value and not _is_empty(self.value):
            # An empty answer from a server that lost its leader is not news (rickfast/consul-client#148).
            status.last_error = "empty answer without a known leader: the last good data stays"
            status.last_error_at = now
            self._index = 0
            return
        changed = not self.has_value or payload != self.value
        self.value = payload
        self.has_value = True
        if changed:
            status.updates += 1
            self.on_change(payload)
        self.synced.set()

    async def _failed(self, message: str) -> None:
        status = self.status
        status.connected = False
        status.last_error = message
        status.last_error_at = self.clock()
        status.consecutive_failures += 1
        self._index = 0  # the first read after a failure is a full one (Consul may have been rebuilt)
        if status.consecutive_failures in (1, 10) or status.consecutive_failures % 100 == 0:
            log.warning("consul watch %s failing (%d in a row): %s", self.path, status.consecutive_failures, message)
        self._stepped()
        t = self.timing
        await self.sleep(backoff_delay(status.consecutive_failures, self.rng, t.backoff_base_s, t.backoff_max_s))
