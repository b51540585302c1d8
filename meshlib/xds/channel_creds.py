"""The xDS channel's credentials, from a bootstrap's ``channel_creds`` (gRFC A27, A65).

The list is read in order and the **first type meshlib knows** decides — unknown types are
skipped, as gRPC does. Known types:

- ``insecure`` — plaintext;
- ``tls`` — TLS; ``config`` may name ``ca_certificate_file`` (else the system roots),
  ``certificate_file`` + ``private_key_file`` (mTLS, both or neither). Files are re-read on
  every (re)connect, so rotated certificates are used without restart;
- ``google_default`` — Google Cloud credentials: **refused** with a clear error. meshlib never
  falls back to a later entry (that could be ``insecure``): a configuration asking for security
  never runs in plaintext.

Example::

    creds = XdsChannelCredentials.from_bootstrap([{"type": "tls", "config": {
        "ca_certificate_file": "root-cert.pem", "certificate_file": "cert-chain.pem",
        "private_key_file": "key.pem"}}])
    channel = creds.channel("127.0.0.1:15010")     # grpc.aio secure channel
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshlib.errors import MeshError

KNOWN_TYPES = ("insecure", "tls", "google_default")
MAX_CREDENTIAL_FILE_BYTES = 1 << 20


class ChannelCredentialsError(MeshError):
    """``channel_creds`` cannot be honoured; the message names the field."""


@dataclass(frozen=True)
class XdsChannelCredentials:
    """How to connect to the xDS server: ``kind`` ``insecure`` or ``tls`` with optional files."""

    kind: str = "insecure"
    ca_certificate_file: Path | None = None
    certificate_file: Path | None = None
    private_key_file: Path | None = None

    @classmethod
    def from_bootstrap(cls, channel_creds: Any, where: str = "xds_servers[0].channel_creds") -> XdsChannelCredentials:
        """Pick the first known entry of a bootstrap ``channel_creds`` list (see the module docstring)."""
        if not isinstance(channel_creds, list) or not channel_creds:
            raise ChannelCredentialsError(f"{where}: must be a non-empty list")
        for index, entry in enumerate(channel_creds):
            kind = entry.get("type") if isinstance(entry, dict) else None
            if kind not in KNOWN_TYPES:
                continue
            field = f"{where}[{index}]"
            if kind == "google_default":
                raise ChannelCredentialsError(
                    f"{field}: type google_default (Google Cloud credentials) is not supported by meshlib's xDS "
                    "client; use 'tls' (with certificate files) or 'insecure'"
                )
            if kind == "insecure":
                return cls("insecure")
            return cls._tls(entry.get("config") or {}, field)
        raise ChannelCredentialsError(f"{where}: no supported type ({', '.join(KNOWN_TYPES[:2])})")

    @classmethod
    def _tls(cls, config: Any, field: str) -> XdsChannelCredentials:
        if not isinstance(config, dict):
            raise ChannelCredentialsError(f"{field}.config: must be an object")
        paths: dict[str, Path | None] = {}
        for key in ("ca_certificate_file", "certificate_file", "private_key_file"):
            value = config.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ChannelCredentialsError(f"{field}.config.{key}: must be a non-empty string")
            paths[key] = Path(value) if value else None
        if (paths["certificate_file"] is None) != (paths["private_key_file"] is None):
            raise ChannelCredentialsError(
                f"{field}.config: certificate_file and private_key_file must be given together"
            )
        return cls("tls", paths["ca_certificate_file"], paths["certificate_file"], paths["private_key_file"])

    @property
    def secure(self) -> bool:
        return self.kind == "tls"

    def grpc_credentials(self) -> grpc.ChannelCredentials | None:
        """Fresh grpc credentials (files read now), or None for ``insecure``.

        Raises :class:`ChannelCredentialsError` naming the file when one cannot be read.
        """
        if not self.secure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_certificate_file),
            private_key=_read(self.private_key_file),
            certificate_chain=_read(self.certificate_file),
        )

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A ``grpc.aio`` channel to ``target`` with these credentials."""
        credentials = self.grpc_credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        return grpc.aio.secure_channel(target, credentials, options=list(options))

    def describe(self) -> str:
        """``insecure`` / ``tls`` / ``mtls`` (for status and logs)."""
        if not self.secure:
            return "insecure"
        return "mtls" if self.certificate_file is not None else "tls"


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CREDENTIAL_FILE_BYTES + 1)
    except OSError as exc:
        raise ChannelCredentialsError(f"xDS channel credentials: cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_CREDENTIAL_FILE_BYTES:
        raise ChannelCredentialsError(
            f"xDS channel credentials: {path} is larger than {MAX_CREDENTIAL_FILE_BYTES} bytes"
        )
    return data
