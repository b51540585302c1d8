"""The ``--consul ADDR`` variants of ``meshlib validate``, ``explain`` and ``control-plane``.

``meshlib validate --consul 127.0.0.1:8500``      every rejected config entry as ``Kind name: field: message``
``meshlib explain --consul 127.0.0.1:8500 GET http://web.service.consul/``
``meshlib control-plane --consul 127.0.0.1:8500 [--config overlay/]``

An empty address (``--consul ''``) means ``CONSUL_HTTP_ADDR``; the token, datacenter and
TLS settings also come from the ``CONSUL_*`` variables Consul's CLI reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from meshlib.errors import ConfigInvalid
from meshlib.extras import require_extra

if TYPE_CHECKING:
    from meshlib.controlplane.consul_source import ConsulSnapshotSource

__all__ = ["add_consul_arguments", "control_plane_source", "explain_command", "validate_command"]


def add_consul_arguments(parser: argparse.ArgumentParser) -> None:
    """``--consul ADDR``, ``--consul-token``, ``--consul-dc`` (tokens and TLS also from ``CONSUL_*``)."""
    parser.add_argument(
        "--consul", metavar="ADDR", default=None,
        help="read configuration from Consul at host:port or http[s]://host:port ('' = CONSUL_HTTP_ADDR)",
    )
    parser.add_argument("--consul-token", default=None, help="Consul ACL token (default CONSUL_HTTP_TOKEN)")
    parser.add_argument("--consul-dc", default=None, help="Consul datacenter (default: the agent's)")


def _address(args: argparse.Namespace) -> str | None:
    return str(args.consul) or None


def validate_command(args: argparse.Namespace) -> int:
    # Imported here, not at the top: building the parser must not need the consul extra (base install).
    with require_extra("consul", "meshlib validate --consul"):
        from meshlib.discovery.consul.client import ConsulError
        from meshlib.discovery.consul.oneshot import validate_consul

    try:
        state, problems = asyncio.run(validate_consul(_address(args), token=args.consul_token, dc=args.consul_dc))
    except (ConsulError, ValueError) as exc:
        print(f"meshlib validate: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(problem)
    errors = sum(1 for p in problems if not p.is_warning)
    warnings = len(problems) - errors
    if errors or (warnings and getattr(args, "strict", False)):
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
        return 1
    entries = sum(len(items) for items in state.config_entries.values())
    suffix = f" ({warnings} warning(s))" if warnings else ""
    print(f"ok: consul {state.datacenter}: {len(state.services)} service(s), {entries} config entr(y/ies){suffix}")
    return 0


def explain_command(args: argparse.Namespace, headers: dict[str, str]) -> int:
    with require_extra("consul", "meshlib explain --consul"):
        from meshlib.discovery.consul.client import ConsulError
        from meshlib.discovery.consul.oneshot import explain_consul

    try:
        result = asyncio.run(
            explain_consul(
                args.method, args.url, headers, address=_address(args), token=args.consul_token, dc=args.consul_dc,
                namespace=args.namespace, overlay=args.config,
            )
        )
    except ConfigInvalid as exc:  # the --config overlay does not validate
        print(exc, file=sys.stderr)
        return 1
    except (ConsulError, ValueError) as exc:
        print(f"meshlib explain: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def control_plane_source(args: argparse.Namespace, overlay: list[str]) -> ConsulSnapshotSource:
    """The control plane's Consul source; ``--config`` paths become the Istio overlay."""
    with require_extra("consul", "meshlib control-plane --consul"):
        from meshlib.controlplane.consul_source import ConsulSnapshotSource

    try:
        return ConsulSnapshotSource(
            _address(args), token=args.consul_token, dc=args.consul_dc, overlay=overlay or None,
            bind_address=args.bind_address,
        )
    except ConfigInvalid as exc:  # the overlay does not validate: every problem, no traceback
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    except ValueError as exc:  # a malformed address
        print(f"meshlib control-plane: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
