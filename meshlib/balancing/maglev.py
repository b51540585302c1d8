"""Maglev consistent hashing, Envoy's ``MAGLEV`` (Eisenbud et al., NSDI 2016).

Build (Envoy ``MaglevTable``, semantics.md §1): a table of M slots (M prime,
default 65537). Hosts are sorted by their hash key (``ip:port``) so the table
does not depend on the order endpoints arrived in. Each host gets a
permutation of the slots: ``offset = xxh64(key, seed 0) % M``,
``skip = xxh64(key, seed 1) % (M - 1) + 1``, ``slot_j = (offset + skip*j) % M``
(M prime makes every such walk visit every slot). Hosts take turns claiming
their next free slot, in rounds weighted by host weight: in round r a host
claims only when ``r * w ≥ target``, then ``target += max_w``, so a host of
the heaviest weight claims every round and one of a third of it every third.

Lookup: ``table[hash % M]``, O(1). On retry attempt k the hash is XORed with
``2**64 - k`` (Envoy: flip most bits for a large jump). Compared to the ring,
Maglev spreads load more evenly and looks up faster, at the price of a bigger
build (O(M log M)) and slightly more key movement on membership change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from meshlib.balancing.hashing import endpoint_hash_key, xxh64
from meshlib.config.model import Endpoint

if TYPE_CHECKING:  # at run time: config → maglev (is_prime) → context → config would be a cycle
    from meshlib.balancing.context import PickContext

__all__ = ["DEFAULT_TABLE_SIZE", "MaglevPicker", "is_prime"]

DEFAULT_TABLE_SIZE = 65537
_MASK64 = (1 << 64) - 1


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


def _build_table(keys: Sequence[str], weights: Sequence[float], size: int) -> list[int]:
    """Slot → index into ``keys`` (already sorted)."""
    count = len(keys)
    offsets = [xxh64(k, 0) % size for k in keys]
    skips = [xxh64(k, 1) % (size - 1) + 1 for k in keys]
    nexts = [0] * count
    targets = [0.0] * count
    max_w = max(weights)
    table = [-1] * size
    filled = 0
    iteration = 1
    while filled < size:
        for i in range(count):
            if iteration * weights[i] < targets[i]:
                continue
            targets[i] += max_w
            offset = offsets[i]
            skip = skips[i]
            j = nexts[i]
            slot = (offset + skip * j) % size
            while table[slot] >= 0:
                j += 1
                slot = (offset + skip * j) % size
            table[slot] = i
            nexts[i] = j + 1
            filled += 1
            if filled == size:
                break
        iteration += 1
    return table


class MaglevPicker:
    """A Maglev lookup table over fixed hosts."""

    __slots__ = ("_size", "_table")

    def __init__(
        self,
        hosts: Sequence[Endpoint],
        weights: Sequence[float] | None = None,
        table_size: int = DEFAULT_TABLE_SIZE,
    ) -> None:
        if not hosts:
            raise ValueError("a picker needs at least one host")
        if not is_prime(table_size):
            raise ValueError(f"maglev table size must be prime, got {table_size}")
        if weights is None:
            weights = [1.0] * len(hosts)
        elif len(weights) != len(hosts) or any(w <= 0 for w in weights):
            raise ValueError("need one positive weight per host")
        # Normalised weights, as Envoy; only the ratios matter for the rounds.
        total = float(sum(weights))
        entries = sorted(
            ((endpoint_hash_key(h), h, w / total) for h, w in zip(hosts, weights, strict=True)),
            key=lambda e: e[0],
        )
        keys = [k for k, _, _ in entries]
        owners = [h for _, h, _ in entries]
        slots = _build_table(keys, [w for _, _, w in entries], table_size)
        self._table = tuple(owners[i] for i in slots)
        self._size = table_size

    @property
    def size(self) -> int:
        return self._size

    def slots_of(self, endpoint: Endpoint) -> int:
        """How many table slots ``endpoint`` owns (diagnostics and tests)."""
        return sum(1 for owner in self._table if owner is endpoint)

    def lookup(self, hash_key: int, attempt: int = 0) -> Endpoint:
        if attempt:
            hash_key ^= ((1 << 64) - attempt) & _MASK64
        return self._table[hash_key % self._size]

    def pick(self, ctx: PickContext) -> Endpoint:
        hash_key = ctx.hash_key
        if hash_key is None:
            hash_key = ctx.rng.getrandbits(64)
        return self.lookup(hash_key, ctx.attempt)
