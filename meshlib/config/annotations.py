"""meshlib's own settings carried as annotations, so the same YAML stays valid Istio.

- ``meshlib.io/local-rate-limit`` (JSON, Envoy's token bucket) — on a
  VirtualService a bucket per ``http[]`` rule, on a DestinationRule a bucket per
  cluster. See :mod:`meshlib.resilience.ratelimit` for the form.
"""

from __future__ import annotations

from meshlib.config.fields import Sink
from meshlib.config.istio_types import Meta
from meshlib.config.model import RateLimitSpec
from meshlib.resilience.ratelimit import ANNOTATION as RATE_LIMIT_ANNOTATION
from meshlib.resilience.ratelimit import parse_local_rate_limit


def rate_limit_annotation(sink: Sink, meta: Meta) -> RateLimitSpec | None:
    """The document's local rate limit, or None; a bad value is reported at its line."""
    text = dict(meta.annotations).get(RATE_LIMIT_ANNOTATION)
    if text is None:
        return None
    try:
        limit = parse_local_rate_limit(text)
    except ValueError as exc:
        sink.error(
            meta.annotation_line(RATE_LIMIT_ANNOTATION),
            f'metadata.annotations["{RATE_LIMIT_ANNOTATION}"]',
            str(exc),
        )
        return None
    return RateLimitSpec(limit.max_tokens, limit.tokens_per_fill, limit.fill_interval_s)
