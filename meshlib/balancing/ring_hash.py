"""Ring hash (Ketama), Envoy's ``RING_HASH`` and Istio's ``consistentHash`` default.

Build (Envoy ``RingHashLoadBalancer::Ring``, semantics.md §1):

1. normalise host weights to sum 1; ``min_w`` is the smallest;
2. ``scale = min(ceil(min_w * min_ring) / min_w, max_ring)`` — the lightest
   host gets a whole number of entries, and the ring never exceeds the max;
3. walk the hosts in order with running sums: ``target += scale * w`` and emit
   entries ``"<ip:port>_<i>"`` (i = 0, 1, … per host) while ``current < target``.
   Running sums across hosts keep fractional shares fair without per-host
   rounding;
4. hash every entry with xxHash64 (seed 0) and sort by hash.

Lookup: the first entry whose hash is ≥ the request hash, wrapping to entry 0
past the end (a ``bisect``, O(log n)). On retry attempt k the pick moves k
entries clockwise — Envoy's way to leave a failed host without rehashing. No
request hash → a random point on the ring.

Adding one host to N moves about 1/(N+1) of the keys; that is the point.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

from meshlib.balancing.context import PickContext
from meshlib.balancing.hashing import endpoint_hash_key, xxh64
from meshlib.config.model import Endpoint

__all__ = ["DEFAULT_MAX_RING_SIZE", "DEFAULT_MIN_RING_SIZE", "RingHashPicker", "ring_entry_count"]

DEFAULT_MIN_RING_SIZE = 1024
DEFAULT_MAX_RING_SIZE = 8_388_608  # Envoy's hard limit as well as its default


def _normalise(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if total <= 0 or any(w <= 0 for w in weights):
        raise ValueError("ring hash weights must be positive")
    return [w / total for w in weights]


def ring_entry_count(weights: Sequence[float], min_size: int, max_size: int) -> list[int]:
    """How many ring entries each host gets (the build's running-sum walk, without hashing)."""
    normalised = _normalise(weights)
    min_w = min(normalised)
    scale = min(math.ceil(min_w * min_size) / min_w, float(max_size))
    counts: list[int] = []
    current = 0.0
    target = 0.0
    for w in normalised:
        target += scale * w
        n = 0
        while current < target:
            n += 1
            current += 1.0
        counts.append(n)
    return counts


class RingHashPicker:
    """A consistent-hash ring over fixed hosts; lookups by bisection."""

    __slots__ = ("_hashes", "_owners", "_size")

    def __init__(
        self,
        hosts: Sequence[Endpoint],
        weights: Sequence[float] | None = None,
        min_size: int = DEFAULT_MIN_RING_SIZE,
        max_size: int = DEFAULT_MAX_RING_SIZE,
    ) -> None:
        if not hosts:
            raise ValueError("a picker needs at least one host")
        if min_size > max_size:
            raise ValueError(f"ring hash: minimum_ring_size ({min_size}) > maximum_ring_size ({max_size})")
        if min_size < 1:
            raise ValueError("ring hash: minimum_ring_size must be at least 1")
        if weights is None:
            weights = [1.0] * len(hosts)
        elif len(weights) != len(hosts):
            raise ValueError("need one weight per host")
        counts = ring_entry_count(weights, min_size, max_size)
        entries: list[tuple[int, int]] = []
        for index, (host, count) in enumerate(zip(hosts, counts, strict=True)):
            prefix = endpoint_hash_key(host) + "_"
            entries.extend((xxh64(f"{prefix}{i}"), index) for i in range(count))
        # Sort by hash; equal hashes (vanishingly rare) keep build order, as Envoy's sort would not
        # promise either — stability here only makes tests reproducible.
        entries.sort(key=lambda e: e[0])
        host_tuple = tuple(hosts)
        self._hashes = [h for h, _ in entries]
        self._owners = tuple(host_tuple[i] for _, i in entries)
        self._size = len(entries)

    @property
    def size(self) -> int:
        """Number of entries on the ring."""
        return self._size

    def lookup(self, hash_key: int, attempt: int = 0) -> Endpoint:
        """The host owning ``hash_key`` (first entry ≥ it, wrapping), moved ``attempt`` entries on."""
        index = bisect_left(self._hashes, hash_key)
        if index == self._size:
            index = 0
        if attempt:
            index = (index + attempt) % self._size
        return self._owners[index]

    def pick(self, ctx: PickContext) -> Endpoint:
        hash_key = ctx.hash_key
        if hash_key is None:
            hash_key = ctx.rng.getrandbits(64)
        return self.lookup(hash_key, ctx.attempt)
