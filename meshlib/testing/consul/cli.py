"""``meshlib consul-dev``: the Consul emulator in the foreground, for trying meshlib without Consul.

.. code-block:: console

    $ meshlib consul-dev --port 8500 --load consul.yaml
    meshlib consul-dev: Consul HTTP API on http://127.0.0.1:8500 (dc1; 3 services, 2 config entries loaded)
    export CONSUL_HTTP_ADDR=127.0.0.1:8500

It answers Consul's HTTP API (see ``docs/consul-emulator.md``) until Ctrl-C or
SIGTERM; state lives in memory only. Test controls are under ``/_emulator/``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshlib.testing.consul.emulator import ConsulEmulator


def add_consul_dev_parser(sub: Any) -> None:
    """Register ``meshlib consul-dev`` on the ``meshlib`` command's subparsers."""
    parser = sub.add_parser("consul-dev", help="run the in-memory Consul emulator (HTTP API) in the foreground")
    parser.add_argument("--port", type=int, default=8500, help="HTTP port (default 8500, Consul's; 0 = any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; no auth)")
    parser.add_argument("--load", metavar="FILE", help="JSON/YAML with services and config_entries to preload")
    parser.add_argument("--datacenter", default="dc1", help="the local datacenter's name (default dc1)")
    parser.add_argument("--node", default="consul-dev", help="the agent's node name (default consul-dev)")
    parser.set_defaults(run=run_consul_dev)


def run_consul_dev(args: argparse.Namespace) -> int:
    from meshlib.testing.consul.emulator import ConsulEmulator
    from meshlib.testing.consul.loader import LoadError, load_file

    emulator = ConsulEmulator(datacenter=args.datacenter, node=args.node)
    loaded = ""
    if args.load:
        try:
            services, entries = load_file(emulator, args.load)
        except LoadError as exc:
            print(f"meshlib consul-dev: {exc}", file=sys.stderr)
            return 1
        loaded = f"; {services} services, {entries} config entries loaded"
    try:
        asyncio.run(_serve(emulator, args.host, args.port, loaded))
    except OSError as exc:
        print(f"meshlib consul-dev: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(emulator: ConsulEmulator, host: str, port: int, loaded: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await emulator.start(host, port)
    try:
        print(f"meshlib consul-dev: Consul HTTP API on {emulator.url} ({emulator.local_dc}{loaded})", flush=True)
        print(f"export CONSUL_HTTP_ADDR={emulator.address}", flush=True)
        await stop.wait()
    finally:
        await emulator.stop()
