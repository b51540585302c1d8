"""When to renew a certificate: pure functions, no I/O (shared by the rotating sources).

>>> import random
>>> from datetime import datetime, timedelta, UTC
>>> start = datetime(2026, 1, 1, tzinfo=UTC)
>>> at = renewal_time(start, start + timedelta(hours=24), random.Random(1))
>>> timedelta(hours=12) <= at - start <= timedelta(hours=19.2)
True
"""

from __future__ import annotations

import random
from datetime import datetime

from meshlib.security.bundle import CertBundle

REFRESH_WINDOW = (0.5, 0.8)  # renew between 50 % and 80 % of the lifetime
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 60.0


def renewal_time(
    not_before: datetime, not_after: datetime, rng: random.Random, window: tuple[float, float] = REFRESH_WINDOW
) -> datetime:
    """A uniformly random point of ``window`` (fractions of the lifetime): jitter spreads a fleet's renewals."""
    return not_before + (not_after - not_before) * rng.uniform(*window)


def refresh_time(bundle: CertBundle, rng: random.Random, window: tuple[float, float] = REFRESH_WINDOW) -> datetime:
    """When to renew ``bundle`` (see :func:`renewal_time`)."""
    return renewal_time(bundle.not_before, bundle.not_after, rng, window)


def retry_delay_s(failures: int, rng: random.Random) -> float:
    """Capped exponential backoff with jitter after ``failures`` consecutive failures (≥ 1)."""
    ceiling = min(RETRY_MAX_S, RETRY_INITIAL_S * 2 ** min(failures - 1, 16))
    return rng.uniform(ceiling / 2, ceiling)
