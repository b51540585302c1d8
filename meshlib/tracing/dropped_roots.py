"""``traceparent`` values of root spans the sampler always drops, made in batches.

With tracing on and a sampler that never records a root (``ParentBased(ALWAYS_OFF)``,
the usual "sample at the edge" set-up), an outbound request that starts a trace
still carries a fresh trace id and span id on the wire, and nothing else
happens. Minting one such header per request costs a 192-bit draw, its bytes,
its hex and an f-string. Here they are made 256 at a time, as
:mod:`meshlib.request_id` makes request ids: one draw of random bits from the
source the SDK's ``RandomIdGenerator`` uses, its hex moved into a template of
``00-<32 hex>-<16 hex>-<flags>`` records with one strided copy per digit
position, and the text split. A request then takes one value off a list.

- Never an invalid id: a batch whose bytes hold eight zero bytes in a row
  (about 2⁻⁵² per batch) is checked id by id and ids with an all-zero trace id
  or span id are dropped, which leaves every valid id as likely as before —
  the SDK draws again in that case.
- A forked child drops the batches it inherited (they are the parent's ids).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

BATCH = 256
_ID_BYTES = 24  # a 128-bit trace id and a 64-bit span id
_HEX = 2 * _ID_BYTES
_TRACE_AT = 3  # "00-"
_SPAN_AT = _TRACE_AT + 32 + 1  # "-" after the trace id
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_live: weakref.WeakSet[DroppedRootTraceparents] = weakref.WeakSet()


class DroppedRootTraceparents:
    """``next()``: a ``traceparent`` for a new root span that is not sampled (see the module docstring).

    ``random_bits``: the id source (``random.getrandbits`` for the SDK's generator);
    ``flags``: the two hex digits of the trace flags (``"00"``, or ``"02"`` with W3C's random flag).
    """

    __slots__ = ("__weakref__", "_digits", "_random_bits", "_ready", "_record", "_template")

    def __init__(self, random_bits: Callable[[int], int], flags: str) -> None:
        if len(flags) != 2:
            raise ValueError(f"trace flags are two hex digits, got {flags!r}")
        self._random_bits = random_bits
        record = f"00-{_ZERO_TRACE}-{_ZERO_SPAN}-{flags}\n".encode("ascii")
        self._record = len(record)
        self._template = record * BATCH
        # Where each of an id's 48 hex digits goes in its record: the trace id's, then the span id's.
        self._digits = [_TRACE_AT + i for i in range(32)] + [_SPAN_AT + i for i in range(16)]
        self._ready: list[str] = []
        _live.add(self)

    def next(self) -> str:
        """One value of the header (each value is handed out once)."""
        try:
            return self._ready.pop()
        except IndexError:
            self._refill()
            return self._ready.pop()

    def _refill(self) -> None:
        raw = self._random_bits(8 * _ID_BYTES * BATCH).to_bytes(_ID_BYTES * BATCH, "big")
        digits = raw.hex().encode("ascii")
        text = bytearray(self._template)
        record = self._record
        for source, target in enumerate(self._digits):
            text[target::record] = digits[source::_HEX]
        values = text.decode("ascii").split("\n")
        values.pop()  # after the last newline
        if b"\0" * 8 in raw:  # an all-zero id needs eight zero bytes in a row: look closer, id by id
            values = [
                value for value in values
                if value[_TRACE_AT:_TRACE_AT + 32] != _ZERO_TRACE and value[_SPAN_AT:_SPAN_AT + 16] != _ZERO_SPAN
            ]
        self._ready.extend(values)

    def forget(self) -> None:
        """Drop the values made so far (a forked child must not reuse its parent's)."""
        self._ready.clear()


def _forget_all_after_fork() -> None:
    for batch in list(_live):
        batch.forget()


os.register_at_fork(after_in_child=_forget_all_after_fork)
