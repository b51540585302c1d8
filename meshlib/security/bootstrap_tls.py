"""gRPC xDS bootstraps with TLS: mTLS to the control plane and ``file_watcher`` certificate providers.

:func:`secure_bootstrap` builds what ``meshlib bootstrap --certs DIR`` prints:

- ``xds_servers[0].channel_creds = [{"type": "tls", "config": {ca_certificate_file, certificate_file,
  private_key_file}}]`` (gRFC A65) — the xDS stream itself is mTLS, with the workload's SVID;
- ``certificate_providers.default = {"plugin_name": "file_watcher", "config": {certificate_file,
  private_key_file, ca_certificate_file, refresh_interval}}`` (gRFC A29) — the instance the control
  plane's TLS contexts (``UpstreamTlsContext``/``DownstreamTlsContext``) name for proxyless gRPC mTLS.

The files are the ones ``meshlib ca issue`` writes (``cert-chain.pem``, ``key.pem``, ``root-cert.pem``);
rotate them in place (or by symlink swap) and both gRPC and meshlib pick the new ones up.

Example::

    boot = secure_bootstrap("127.0.0.1:15010", "reviews.default~pod-1", "/etc/certs")
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(boot)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from meshlib.security.ca import WORKLOAD_CHAIN_FILE, WORKLOAD_KEY_FILE, WORKLOAD_ROOT_FILE
from meshlib.xds.bootstrap import grpc_bootstrap

CERTIFICATE_PROVIDER_INSTANCE = "default"
DEFAULT_REFRESH_INTERVAL = "60s"


def secure_bootstrap(
    xds_address: str,
    node_id: str,
    cert_dir: str | os.PathLike[str],
    *,
    refresh_interval: str = DEFAULT_REFRESH_INTERVAL,
    instance_name: str = CERTIFICATE_PROVIDER_INSTANCE,
    **kwargs: Any,
) -> dict[str, Any]:
    """A bootstrap using the SVID files in ``cert_dir`` for the xDS channel and as a certificate provider.

    Paths are made absolute (gRPC resolves them from its own working directory). Other keyword
    arguments go to :func:`meshlib.xds.bootstrap.grpc_bootstrap` (``cluster``, ``locality``, …).
    """
    base = Path(cert_dir).absolute()
    files = {
        "certificate_file": str(base / WORKLOAD_CHAIN_FILE),
        "private_key_file": str(base / WORKLOAD_KEY_FILE),
        "ca_certificate_file": str(base / WORKLOAD_ROOT_FILE),
    }
    providers = {
        instance_name: {"plugin_name": "file_watcher", "config": {**files, "refresh_interval": refresh_interval}}
    }
    return grpc_bootstrap(
        xds_address,
        node_id,
        channel_creds="tls",
        channel_creds_config=files,
        certificate_providers=providers,
        **kwargs,
    )
