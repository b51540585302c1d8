"""Local rate limiting: Envoy's token bucket, and meshlib's configuration form for it.

**The bucket** (Envoy ``local_ratelimit``, semantics.md §8): capacity
``max_tokens``, full at start; every whole ``fill_interval`` adds
``tokens_per_fill`` (default 1), capped at ``max_tokens``; each request costs
one token; an empty bucket means 429 (gRPC: UNAVAILABLE or
RESOURCE_EXHAUSTED). Envoy refills on a timer in whole fills, so a request
arriving 0.9 intervals after the bucket emptied still sees zero tokens.
:class:`TokenBucket` computes the same thing lazily from ``now`` — no timer:
fills = ``floor((now − last_fill) / fill_interval)``, and ``last_fill``
advances by whole intervals only, so partial intervals are never lost.
``fill_interval`` below 50 ms is rejected, as Envoy rejects it.

**Configuration (meshlib proposal).** Istio has no first-class field for a
local rate limit; it is only reachable through an ``EnvoyFilter``. meshlib
reads it from an annotation instead, whose JSON mirrors Envoy's
``token_bucket``::

    metadata:
      annotations:
        meshlib.io/local-rate-limit: '{"maxTokens": 100, "tokensPerFill": 10, "fillInterval": "1s"}'

- on a **VirtualService**: ``per="route"`` — each ``http[]`` rule of that
  VirtualService gets its own bucket (Envoy's per-route
  ``typed_per_filter_config``);
- on a **DestinationRule**: ``per="cluster"`` — one bucket per destination
  cluster (each subset is its own cluster), shared by every route to it.

``maxTokens`` is required; ``tokensPerFill`` defaults to 1; ``fillInterval``
is an Istio duration (``"1s"``, ``"500ms"``) and required. Unknown keys are
errors, so a misspelt field is not silently ignored.
:func:`parse_local_rate_limit` validates the text and names the failing field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

MIN_FILL_INTERVAL_S = 0.05  # Envoy: "fill_interval must be >= 50ms"
ANNOTATION = "meshlib.io/local-rate-limit"


class TokenBucket:
    """Envoy's local rate limit token bucket, refilled lazily in whole intervals."""

    __slots__ = ("_last_fill", "_tokens", "fill_interval_s", "max_tokens", "tokens_per_fill")

    def __init__(
        self,
        max_tokens: int,
        tokens_per_fill: int = 1,
        fill_interval_s: float = 1.0,
        *,
        created_at: float | None = None,
    ) -> None:
        """``created_at`` starts the fill clock; ``None`` starts it at the first call."""
        _validate(max_tokens, tokens_per_fill, fill_interval_s)
        self.max_tokens = max_tokens
        self.tokens_per_fill = tokens_per_fill
        self.fill_interval_s = fill_interval_s
        self._tokens = max_tokens
        self._last_fill = created_at

    def _refill(self, now: float) -> None:
        last = self._last_fill
        if last is None:
            self._last_fill = now
            return
        elapsed = now - last
        if elapsed < self.fill_interval_s:
            return  # also covers a clock that went backwards
        fills = math.floor(elapsed / self.fill_interval_s)
        self._last_fill = last + fills * self.fill_interval_s
        self._tokens = min(self.max_tokens, self._tokens + fills * self.tokens_per_fill)

    def try_consume(self, now: float) -> bool:
        """Take one token; ``False`` means rate limited (answer 429)."""
        self._refill(now)
        if self._tokens > 0:
            self._tokens -= 1
            return True
        return False

    def tokens(self, now: float) -> int:
        """Tokens available at ``now``."""
        self._refill(now)
        return self._tokens

    def __repr__(self) -> str:
        return (
            f"TokenBucket(max_tokens={self.max_tokens}, tokens_per_fill={self.tokens_per_fill}, "
            f"fill_interval_s={self.fill_interval_s})"
        )


def _validate(max_tokens: int, tokens_per_fill: int, fill_interval_s: float) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"maxTokens: must be an integer >= 1, got {max_tokens!r}")
    if isinstance(tokens_per_fill, bool) or not isinstance(tokens_per_fill, int) or tokens_per_fill < 1:
        raise ValueError(f"tokensPerFill: must be an integer >= 1, got {tokens_per_fill!r}")
    if not fill_interval_s >= MIN_FILL_INTERVAL_S:  # also rejects NaN
        raise ValueError(f"fillInterval: must be at least 50ms, got {fill_interval_s}s")


@dataclass(frozen=True, slots=True)
class LocalRateLimit:
    """A local rate limit as configured; ``per`` says who shares one bucket."""

    max_tokens: int
    tokens_per_fill: int = 1
    fill_interval_s: float = 1.0
    per: Literal["route", "cluster"] = "route"

    def __post_init__(self) -> None:
        _validate(self.max_tokens, self.tokens_per_fill, self.fill_interval_s)
        if self.per not in ("route", "cluster"):
            raise ValueError(f"per: must be 'route' or 'cluster', got {self.per!r}")

    def new_bucket(self, created_at: float | None = None) -> TokenBucket:
        return TokenBucket(self.max_tokens, self.tokens_per_fill, self.fill_interval_s, created_at=created_at)


_FIELDS = ("maxTokens", "tokensPerFill", "fillInterval")


def parse_local_rate_limit(text: str, per: Literal["route", "cluster"] = "route") -> LocalRateLimit:
    """Parse the ``meshlib.io/local-rate-limit`` annotation value.

    ``per`` comes from where the annotation sits: ``"route"`` on a
    VirtualService, ``"cluster"`` on a DestinationRule. Raises
    :class:`ValueError` whose message starts with the offending field.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ANNOTATION}: not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{ANNOTATION}: must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (expected {', '.join(_FIELDS)})")
    if "maxTokens" not in data:
        raise ValueError("maxTokens: required")
    if "fillInterval" not in data:
        raise ValueError("fillInterval: required (e.g. \"1s\")")
    raw_interval = data["fillInterval"]
    # Imported here: meshlib.config imports this module (annotations), so a top-level import is a cycle.
    from meshlib.config.durations import parse_duration

    interval = parse_duration(raw_interval)
    if interval is None:
        raise ValueError(f"fillInterval: not a duration: {raw_interval!r} (use e.g. \"1s\" or \"500ms\")")
    return LocalRateLimit(
        max_tokens=data["maxTokens"],
        tokens_per_fill=data.get("tokensPerFill", 1),
        fill_interval_s=interval,
        per=per,
    )
