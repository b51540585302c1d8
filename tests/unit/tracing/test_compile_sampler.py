"""compile_sampler decides exactly as the SDK's built-in samplers do, for every kind of parent."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from meshlib.tracing.client_spans import compile_sampler

SAMPLERS = [
    ALWAYS_ON,
    ALWAYS_OFF,
    TraceIdRatioBased(0.25),
    ParentBased(ALWAYS_ON),
    ParentBased(ALWAYS_OFF),
    ParentBased(TraceIdRatioBased(0.5)),
    ParentBased(
        ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF, remote_parent_not_sampled=ALWAYS_ON,
        local_parent_sampled=TraceIdRatioBased(0.5), local_parent_not_sampled=ALWAYS_ON,
    ),
]


def parents(rng: random.Random) -> list[SpanContext]:
    invalid = trace.INVALID_SPAN_CONTEXT
    made = [invalid]
    for remote in (True, False):
        for flags in (0, 1):
            made.append(SpanContext(rng.getrandbits(128) | 1, rng.getrandbits(64) | 1, is_remote=remote,
                                    trace_flags=TraceFlags(flags)))
    return made


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.get_description())
def test_same_decision_as_the_sdk(sampler: Sampler) -> None:
    decide = compile_sampler(sampler)
    assert decide is not None
    rng = random.Random(3)
    for _ in range(200):
        for parent in parents(rng):
            trace_id = parent.trace_id if parent.is_valid else rng.getrandbits(128) | 1
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
            expected = sampler.should_sample(context, trace_id, "GET", SpanKind.CLIENT).decision
            assert decide(parent, trace_id) is expected.is_sampled()
            assert expected.is_sampled() is expected.is_recording()  # what LazyClientSpans relies on


class Always(Sampler):
    def should_sample(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise AssertionError("not called")

    def get_description(self) -> str:
        return "custom"


def test_anything_else_is_not_compiled() -> None:
    assert compile_sampler(Always()) is None
    assert compile_sampler(ParentBased(Always())) is None
    assert compile_sampler(None) is None


def test_a_static_sampler_with_another_decision_is_not_compiled() -> None:
    from opentelemetry.sdk.trace.sampling import Decision

    assert compile_sampler(StaticSampler(Decision.RECORD_ONLY)) is None
