"""Ids and ``traceparent`` values of new root spans, made in batches.

With tracing on, an outbound request that starts a trace needs a fresh trace
id and span id, and their ``traceparent`` text on the wire. Minting them one at
a time costs a 192-bit draw, its bytes, its hex and an f-string per request.
When the sampler's verdict on a root does not depend on the trace id
(``ALWAYS_ON``, ``ALWAYS_OFF``, or a ``ParentBased`` of one of them) and the ids
come from the SDK's ``RandomIdGenerator``, they are made 256 at a time instead,
as :mod:`meshlib.request_id` makes request ids: one draw of random bits from the
source that generator uses, its hex moved into a template of
``00-<32 hex>-<16 hex>-<flags>`` records with one strided copy per digit
position, and the text split. A request then takes one value off a list:
the header text alone for a root the sampler drops (:meth:`RootTraceparents.next`),
or the text with both ids for one it records (:meth:`RootTraceparents.next_with_ids`).

- Never an invalid id: a batch whose bytes hold eight zero bytes in a row
  (about 2⁻⁵² per batch) is checked id by id and ids with an all-zero trace id
  or span id are dropped, which leaves every valid id as likely as before —
  the SDK draws again in that case.
- A forked child drops the batches it inherited (they are the parent's ids).
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Callable
from itertools import repeat
from operator import lshift, or_

BATCH = 256
_ID_BYTES = 24  # a 128-bit trace id and a 64-bit span id
_HEX = 2 * _ID_BYTES
_TRACE_AT = 3  # "00-"
_SPAN_AT = _TRACE_AT + 32 + 1  # "-" after the trace id
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_live: weakref.WeakSet[RootTraceparents] = weakref.WeakSet()


class RootTraceparents:
    """New root spans' ``traceparent`` values (see the module docstring); each value is handed out once.

    ``random_bits``: the id source (``random.getrandbits`` for the SDK's generator);
    ``flags``: the two hex digits of the trace flags (``"00"``/``"01"``, or with W3C's random flag ``"02"``/``"03"``).
    Use one instance either for :meth:`next` or for :meth:`next_with_ids`.
    """

    __slots__ = ("__weakref__", "_digits", "_random_bits", "_ready", "_ready_ids", "_record", "_template")

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
        self._ready_ids: list[tuple[str, int, int]] = []
        _live.add(self)

    def next(self) -> str:
        """One ``traceparent`` value."""
        try:
            return self._ready.pop()
        except IndexError:
            self._ready.extend(self._batch()[0])
            return self._ready.pop()

    def next_with_ids(self) -> tuple[str, int, int]:
        """One ``traceparent`` value with its trace id and span id."""
        try:
            return self._ready_ids.pop()
        except IndexError:
            values, raw = self._batch()
            # Each id's 24 bytes as three big-endian 64-bit words: trace id high, trace id low, span id.
            words = struct.unpack(f">{3 * len(values)}Q", raw)
            trace_ids = map(or_, map(lshift, words[0::3], repeat(64)), words[1::3])
            self._ready_ids.extend(zip(values, trace_ids, words[2::3], strict=True))
            return self._ready_ids.pop()

    def _batch(self) -> tuple[list[str], bytes]:
        """A batch of ``traceparent`` values and their ids' bytes (24 per id, in order), without invalid ids."""
        raw = self._random_bits(8 * _ID_BYTES * BATCH).to_bytes(_ID_BYTES * BATCH, "big")
        digits = raw.hex().encode("ascii")
        text = bytearray(self._template)
        record = self._record
        for source, target in enumerate(self._digits):
            text[target::record] = digits[source::_HEX]
        values = text.decode("ascii").split("\n")
        values.pop()  # after the last newline
        if b"\0" * 8 in raw:  # an all-zero id needs eight zero bytes in a row: look closer, id by id
            kept = [
                i for i, value in enumerate(values)
                if value[_TRACE_AT:_TRACE_AT + 32] != _ZERO_TRACE and value[_SPAN_AT:_SPAN_AT + 16] != _ZERO_SPAN
            ]
            values = [values[i] for i in kept]
            raw = b"".join(raw[i * _ID_BYTES:(i + 1) * _ID_BYTES] for i in kept)
        return values, raw

    def forget(self) -> None:
        """Drop the values made so far (a forked child must not reuse its parent's)."""
        self._ready.clear()
        self._ready_ids.clear()


def _forget_all_after_fork() -> None:
    for batch in list(_live):
        batch.forget()


os.register_at_fork(after_in_child=_forget_all_after_fork)
