"""``FileCertificateSource``: credentials from PEM files, reloaded when they change.

Works like gRPC's ``file_watcher`` certificate provider and with Kubernetes secret mounts:
the files are re-read every ``refresh_interval`` (content is compared, so an atomic
``..data`` symlink swap, a rename-over or an in-place rewrite are all seen, whatever the
mtime granularity). A new set of files is installed only when it forms a valid bundle —
the key matches the leaf, the leaf is an X.509-SVID and the chain verifies against the
trust bundle at the current time; otherwise the previous bundle stays in force and the
problem is logged once and kept in :attr:`last_error` (a half-written update is simply
picked up on a later poll).

Example::

    source = FileCertificateSource.from_directory("/etc/certs")   # cert-chain.pem, key.pem, root-cert.pem
    async with source:
        bundle = source.current()
        source.subscribe(lambda b: print("rotated, now valid until", b.not_after))
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from meshlib.security.bundle import MAX_PEM_BYTES, CertBundle
from meshlib.security.ca import WORKLOAD_CHAIN_FILE, WORKLOAD_KEY_FILE, WORKLOAD_ROOT_FILE, Clock, utc_now
from meshlib.security.errors import CertificateInvalid, SecurityError
from meshlib.security.source_lifecycle import BackgroundCertificateSource
from meshlib.security.verify import verify_svid

_log = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL_S = 60.0  # gRPC file_watcher's default refresh_interval
MIN_REFRESH_INTERVAL_S = 0.01


class FileCertificateSource(BackgroundCertificateSource):
    """Watches a certificate chain, private key and trust bundle file; see the module docstring."""

    def __init__(
        self,
        certificate_file: str | os.PathLike[str],
        private_key_file: str | os.PathLike[str],
        ca_certificate_file: str | os.PathLike[str],
        *,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        clock: Clock = utc_now,
    ) -> None:
        if refresh_interval_s < MIN_REFRESH_INTERVAL_S:
            raise ValueError(f"refresh_interval_s must be at least {MIN_REFRESH_INTERVAL_S}")
        super().__init__()
        self.certificate_file = Path(certificate_file)
        self.private_key_file = Path(private_key_file)
        self.ca_certificate_file = Path(ca_certificate_file)
        self.refresh_interval_s = refresh_interval_s
        self._clock = clock
        self._seen: tuple[bytes, bytes, bytes] | None = None
        self.last_error: str | None = None
        self.reloads = 0

    @classmethod
    def from_directory(cls, directory: str | os.PathLike[str], **kwargs: object) -> FileCertificateSource:
        """Watch ``cert-chain.pem``, ``key.pem`` and ``root-cert.pem`` in ``directory``."""
        base = Path(directory)
        return cls(
            base / WORKLOAD_CHAIN_FILE,
            base / WORKLOAD_KEY_FILE,
            base / WORKLOAD_ROOT_FILE,
            **kwargs,  # type: ignore[arg-type]
        )

    # --- CertificateSource -------------------------------------------------------------------------------

    def _missing_certificate(self) -> str:
        detail = f": {self.last_error}" if self.last_error else " (call start() first)"
        return f"no certificate loaded from {self.certificate_file}{detail}"

    async def start(self) -> None:
        """Load the files (raising :class:`SecurityError` if they are not a valid bundle) and start polling."""
        if not self.check():
            raise CertificateInvalid(self.last_error or f"cannot load {self.certificate_file}")
        self._start_task(self._poll, "meshlib-cert-file-watch")

    # --- reloading ---------------------------------------------------------------------------------------

    def check(self) -> bool:
        """Re-read the files once; install and announce a changed valid bundle.

        Returns True when a bundle is in force afterwards (new or previous). Called by the
        poller; tests call it directly instead of waiting for the interval.
        """
        try:
            contents = (
                _read_limited(self.certificate_file),
                _read_limited(self.private_key_file),
                _read_limited(self.ca_certificate_file),
            )
        except OSError as exc:
            self._fail(f"cannot read {exc.filename}: {exc.strerror}")
            return self._bundle is not None
        if contents == self._seen:
            return self._bundle is not None
        try:
            bundle = CertBundle.from_pem(*contents)
            verify_svid(bundle.cert_chain_pem, bundle.trust_bundle_pem, now=self._clock())
        except SecurityError as exc:
            self._seen = contents  # do not re-log the same bad content every poll
            self._fail(f"{self.certificate_file}: {exc}")
            return self._bundle is not None
        self._seen = contents
        self._bundle = bundle
        self.last_error = None
        self.reloads += 1
        _log.info("loaded %s for %s (valid until %s)", self.certificate_file, bundle.spiffe_id, bundle.not_after)
        self._subscribers.notify(bundle)
        return True

    def _fail(self, message: str) -> None:
        if message != self.last_error:
            kept = "; keeping the previous certificate" if self._bundle is not None else ""
            _log.warning("certificate files not loaded: %s%s", message, kept)
        self.last_error = message

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                self.check()
            except Exception:  # never let the watcher die silently
                _log.exception("certificate file watcher failed; retrying")


def _read_limited(path: Path) -> bytes:
    with path.open("rb") as handle:  # open() follows symlinks: a swapped ..data link is read afresh
        data = handle.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise OSError(0, f"larger than {MAX_PEM_BYTES} bytes", str(path))
    return data
