"""Pieces of the deferred CLIENT spans: preset ids, and url.full as the conventions want it."""

from __future__ import annotations

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from yarl import URL

from meshlib.tracing.client_spans import PresetIds, _url_full


def test_preset_ids_apply_until_cleared_then_defer_to_the_provider() -> None:
    ids = PresetIds(RandomIdGenerator())
    ids.preset(0xABC, 0xDEF)
    assert (ids.generate_trace_id(), ids.generate_span_id()) == (0xABC, 0xDEF)
    ids.clear()
    assert ids.generate_span_id() != 0xDEF
    assert ids.generate_trace_id() != 0xABC
    assert ids.is_trace_id_random() == RandomIdGenerator().is_trace_id_random()


def test_url_full_hides_credentials() -> None:
    assert _url_full(URL("http://alice:secret@reviews:9080/r?q=1")) == "http://REDACTED:REDACTED@reviews:9080/r?q=1"
    assert _url_full(URL("http://reviews:9080/r")) == "http://reviews:9080/r"
    assert _url_full("http://reviews:50051/pkg.Svc/Get") == "http://reviews:50051/pkg.Svc/Get"
