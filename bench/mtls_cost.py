"""mTLS cost for aiohttp with mesh SVIDs: handshake cost and steady-state overhead vs plaintext, same run.

    python bench/mtls_cost.py [--requests 300] [--rounds 10] [--handshakes 200] [--quick]

A backend process (pinned to the other CPU where possible) serves the same handler in plaintext
and over mTLS (client certificate required, EC P-256 SVIDs from ``MeshCA``, TLS 1.3). Measured:

1. **handshake** — ``asyncio.open_connection`` to the mTLS port and back, alone: the median
   time a new mTLS connection costs (both sides, plus the SPIFFE ID check a client does);
2. **new connection per request** — ``force_close`` sessions: plaintext vs mTLS;
3. **steady state** — keep-alive sessions (connection reuse): plaintext vs mTLS.

Contexts come from ``meshlib.security.tls_contexts`` (the mesh's own client/server contexts).
Printed: p50/p99, throughput and per-round ratios against plaintext.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _harness import Send, can_pin, free_port, pin_client, pin_server, report, wait_port

from meshlib.security import MeshCA, SpiffeId
from meshlib.security.tls_contexts import client_context, peer_spiffe_id, server_context

SERVER = SpiffeId.for_workload("default", "reviews")
CLIENT = SpiffeId.for_workload("default", "productpage")


def serve(plain_port: int, tls_port: int, cert_dir: Path) -> None:
    """The backend process: one handler on a plaintext and an mTLS port."""
    from aiohttp import web

    pin_server()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        ctx = server_context(
            (cert_dir / "server-chain.pem").read_bytes(),
            (cert_dir / "server-key.pem").read_bytes(),
            (cert_dir / "root.pem").read_bytes(),
            require_client_certificate=True,
        )
        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", plain_port).start()
        await web.TCPSite(runner, "127.0.0.1", tls_port, ssl_context=ctx).start()
        await asyncio.Event().wait()

    asyncio.run(main())


async def handshake_us(port: int, ctx: ssl.SSLContext, count: int) -> list[float]:
    """Microseconds per complete mTLS handshake (+ reading the peer's SPIFFE ID), one at a time."""
    times: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
        assert peer_spiffe_id(writer.get_extra_info("peercert")) == SERVER
        times.append((time.perf_counter() - start) * 1e6)
        writer.close()
        await writer.wait_closed()
    return times


async def run(args: argparse.Namespace) -> None:
    pin_client()
    ca = MeshCA.create_root()
    server = ca.issue_bundle(SERVER, ip_addresses=["127.0.0.1"])
    client = ca.issue_bundle(CLIENT)
    with tempfile.TemporaryDirectory() as tmp:
        cert_dir = Path(tmp)
        (cert_dir / "server-chain.pem").write_bytes(server.cert_chain_pem)
        (cert_dir / "server-key.pem").write_bytes(server.private_key_pem)
        (cert_dir / "root.pem").write_bytes(ca.trust_bundle_pem)
        plain_port, tls_port = free_port(), free_port()
        backend = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(plain_port), str(tls_port), str(cert_dir),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            await wait_port(plain_port)
            await wait_port(tls_port)
            # The mesh checks the URI SAN itself after the handshake (Python's ssl has no SPIFFE check).
            ctx = client_context(
                trust_pem=ca.trust_bundle_pem, chain_pem=client.cert_chain_pem, key_pem=client.private_key_pem,
                check_hostname=False,
            )
            await handshake_us(tls_port, ctx, 20)  # warm up
            times = await handshake_us(tls_port, ctx, args.handshakes)
            times.sort()
            print(f"mTLS handshake (TLS {ssl.OPENSSL_VERSION}; EC P-256 SVIDs, client cert required): "
                  f"p50 {statistics.median(times):.0f} µs, p99 {times[int(len(times) * 0.99) - 1]:.0f} µs "
                  f"over {args.handshakes} connections, pinned={can_pin()}")

            sessions: list[aiohttp.ClientSession] = []

            def session(tls: bool, reuse: bool) -> Send:
                connector = aiohttp.TCPConnector(ssl=ctx if tls else False, force_close=not reuse, limit=64)
                http = aiohttp.ClientSession(connector=connector)
                sessions.append(http)
                url = f"https://127.0.0.1:{tls_port}/" if tls else f"http://127.0.0.1:{plain_port}/"

                async def send() -> None:
                    async with http.get(url) as resp:
                        await resp.read()

                return send

            print("\n== new connection per request (handshake on every request) ==")
            await report(
                {"plaintext": session(False, False), "mtls": session(True, False)},
                args.requests, args.rounds, baseline="plaintext",
            )
            print("\n== steady state: keep-alive connections reused ==")
            await report(
                {"plaintext": session(False, True), "mtls": session(True, True)},
                args.requests, args.rounds, baseline="plaintext",
            )
            for http in sessions:
                await http.close()
        finally:
            backend.terminate()
            await backend.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="100 requests × 3 rounds, 50 handshakes")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds, args.handshakes = 100, 3, 50
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
