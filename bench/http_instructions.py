"""Client-side instructions per HTTP request (callgrind), direct aiohttp vs the mesh paths; never asserted.

    python bench/http_instructions.py [--requests 1500] [--paths direct meshlib ...]

Timings on a shared machine drift; instruction counts repeat to well under 1%.
For each path a client process makes ``--requests`` sequential requests (and,
separately, none) under ``valgrind --tool=callgrind`` against the "ok" backend
(its own process, not measured); the difference divided by the request count is
the client's instructions per request, start-up cancelled out. Paths as in
``bench/http_overhead.py``: direct aiohttp, ``mesh.session()``, + OpenTelemetry
tracing with every request sampled (batch processor, exporter dropping spans),
+ tracing sampled out. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATHS = ("direct", "meshlib", "+tracing", "+tracing, sampled out")


async def client(path: str, port: int, requests: int) -> None:
    """The measured process: warm up, then ``requests`` sequential GETs."""
    import aiohttp
    from http_overhead import MESH_YAML, _enable_sdk_tracing

    import meshlib

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mesh.yaml"
        config.write_text(MESH_YAML.format(port=port))
        mesh = meshlib.Mesh.from_files(config)
        if path not in {"direct", "meshlib"}:
            _enable_sdk_tracing(mesh, sampled=path == "+tracing")
        async with mesh:
            if path == "direct":
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
                url = f"http://127.0.0.1:{port}/r"
            else:
                session = mesh.session(connector=mesh.connector(limit=100))
                url = "http://reviews:9080/r"
            async with session:
                for _ in range(50 + requests):  # 50 warm-up requests in every run, measured or not
                    async with session.get(url) as resp:
                        await resp.read()
            mesh.flush_telemetry()


def instructions(path: str, port: int, requests: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable, __file__,
             "--client", path, str(port), str(requests)],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    found = re.search(r"Collected : (\d+)", result.stderr)
    assert found, result.stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), metavar="PATH",
                        help=f"paths to measure (default: all of {', '.join(map(repr, PATHS))})")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        sys.path.insert(0, str(HERE))
        path, port, requests = args.client
        asyncio.run(client(path, int(port), int(requests)))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install -y valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "backend.port"
        backend = subprocess.Popen([sys.executable, str(HERE / "_backend.py"), str(port_file)])
        try:
            while not (port_file.exists() and port_file.read_text()):
                if backend.poll() is not None:
                    raise SystemExit("backend did not start")
                subprocess.run(["sleep", "0.05"], check=True)
            port = int(port_file.read_text())
            print(f"client instructions per request, {args.requests} sequential requests (callgrind)")
            base = None
            for path in [p for p in PATHS if p in args.paths]:
                per = (instructions(path, port, args.requests) - instructions(path, port, 0)) / args.requests
                base = per if base is None and path == "direct" else base
                extra = "" if base is None or path == "direct" else f"   (+{(per - base) / 1000:.1f}k over direct)"
                print(f"  {path:24s} {per / 1000:8.1f}k{extra}", flush=True)
        finally:
            backend.terminate()
            backend.wait(timeout=10)


if __name__ == "__main__":
    main()
