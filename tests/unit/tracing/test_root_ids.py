"""Batched ids and ``traceparent`` values of new root spans (meshlib.tracing.root_ids), and span contexts."""

from __future__ import annotations

import os
import random
import re

import pytest

from meshlib.tracing.root_ids import BATCH, RootTraceparents

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def test_values_are_w3c_traceparents_with_the_given_flags_each_handed_out_once() -> None:
    source = random.Random(7)
    batch = RootTraceparents(source.getrandbits, "02")
    values = [batch.next() for _ in range(3 * BATCH + 5)]
    assert len(set(values)) == len(values)
    for value in values:
        found = TRACEPARENT.fullmatch(value)
        assert found is not None, value
        assert found.group(3) == "02"


def test_the_ids_are_the_drawn_bits_trace_id_first() -> None:
    # The first value handed out is the last id of the draw: its 192 bits are the draw's lowest.
    drawn = random.Random(11).getrandbits(192 * BATCH)
    batch = RootTraceparents(random.Random(11).getrandbits, "00")
    lowest = drawn & ((1 << 192) - 1)
    assert batch.next() == f"00-{lowest >> 64:032x}-{lowest & ((1 << 64) - 1):016x}-00"


def test_an_all_zero_trace_or_span_id_is_never_handed_out() -> None:
    bits = 192 * BATCH
    ones = (1 << bits) - 1
    # Id 0 (the highest bits) gets a zero trace id, id 1 a zero span id; the rest are all ones.
    zero_trace = ((1 << 128) - 1) << (bits - 128)
    zero_span = ((1 << 64) - 1) << (bits - 2 * 192)
    batch = RootTraceparents(lambda n: ones ^ zero_trace ^ zero_span, "00")
    values = [batch.next() for _ in range(BATCH - 2)]
    assert all(TRACEPARENT.fullmatch(v) for v in values)
    assert not any("0" * 16 in value for value in values)
    assert len(batch._ready) == 0  # the two invalid ids were dropped, not kept


def test_ids_handed_out_with_their_header_are_the_header_s() -> None:
    batch = RootTraceparents(random.Random(3).getrandbits, "01")
    for _ in range(BATCH + 1):
        value, trace_id, span_id = batch.next_with_ids()
        assert value == f"00-{trace_id:032x}-{span_id:016x}-01" and trace_id and span_id


def test_flags_must_be_two_hex_digits() -> None:
    with pytest.raises(ValueError, match="two hex digits"):
        RootTraceparents(random.getrandbits, "2")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_its_parents_values() -> None:
    batch = RootTraceparents(random.getrandbits, "00")
    batch.next()  # a batch is made; the parent will hand out the rest
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether its batch was dropped at the fork
        os.write(write, b"empty" if not batch._ready else b"kept")
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    assert report == b"empty"
    assert batch._ready  # the parent keeps its own


def test_span_context_shortcut_equals_the_constructor_or_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    from meshlib.tracing import client_spans

    state = TraceState([("vendor", "x")])
    for trace_state in (None, state):
        built = client_spans._local_span_context(5, 6, TraceFlags(1), trace_state)
        expected = SpanContext(5, 6, False, TraceFlags(1), trace_state)
        assert type(built) is SpanContext and tuple(built) == tuple(expected) and built.is_valid
    # An API whose SpanContext holds other fields: the constructor is used.
    monkeypatch.setattr(client_spans, "_span_context_tuple", lambda *parts: tuple.__new__(SpanContext, (*parts, 0)))
    assert client_spans._choose_span_context_maker() is client_spans._span_context_constructor
