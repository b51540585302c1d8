"""``LocalCaCertificateSource``: SVIDs signed in-process by a :class:`MeshCA`, renewed before expiry.

For the control plane's own serving certificate (``meshlib control-plane --ca DIR``) and for
tests and single-process setups where the CA key is at hand. Renewal follows the same
50–80 % jittered schedule as :class:`~meshlib.security.ca_client.CaClientCertificateSource`.

Example::

    source = LocalCaCertificateSource(ca, SpiffeId.for_workload("istio-system", "meshlib"),
                                      ip_addresses=["127.0.0.1"])
    async with source:
        source.current()
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from meshlib.security.bundle import CertBundle
from meshlib.security.ca import DEFAULT_SVID_TTL, MeshCA
from meshlib.security.rotation import refresh_time
from meshlib.security.source_lifecycle import BackgroundCertificateSource
from meshlib.security.spiffe import SpiffeId

_log = logging.getLogger(__name__)


class LocalCaCertificateSource(BackgroundCertificateSource):
    """See the module docstring."""

    def __init__(
        self,
        ca: MeshCA,
        spiffe_id: SpiffeId,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        ttl: timedelta = DEFAULT_SVID_TTL,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.ca = ca
        self.spiffe_id = spiffe_id
        self.dns_names = tuple(dns_names)
        self.ip_addresses = tuple(ip_addresses)
        self.ttl = ttl
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.refresh_at: datetime | None = None

    def _missing_certificate(self) -> str:
        return f"no certificate issued for {self.spiffe_id} yet (call start() first)"

    def rotate_now(self) -> CertBundle:
        """Issue a fresh certificate, install it and notify subscribers."""
        bundle = self.ca.issue_bundle(
            self.spiffe_id, dns_names=self.dns_names, ip_addresses=self.ip_addresses, ttl=self.ttl
        )
        self._bundle = bundle
        self.refresh_at = refresh_time(bundle, self._rng)
        self._subscribers.notify(bundle)
        return bundle

    async def start(self) -> None:
        if self._bundle is None:
            self.rotate_now()
        self._start_task(self._rotate_forever, "meshlib-local-svid")

    async def _rotate_forever(self) -> None:
        while True:
            assert self.refresh_at is not None
            await self._sleep(max(0.0, (self.refresh_at - self.ca.clock()).total_seconds()))
            try:
                self.rotate_now()
            except Exception:
                _log.exception("renewing %s failed; retrying in 60s", self.spiffe_id)
                self.refresh_at = self.ca.clock() + timedelta(seconds=60)
