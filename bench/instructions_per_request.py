"""Client instructions per request under valgrind/callgrind: direct aiohttp vs ``mesh.session()``.

    python bench/instructions_per_request.py [--small 300] [--large 1500] [--repeat 2]

Instruction counts do not depend on what else the machine runs, so they show
the request path's cost where timings on a shared machine cannot. For each
path the client runs twice under ``valgrind --tool=callgrind`` (the backend,
``_backend.py``, runs natively in its own process), once with ``--small``
and once with ``--large`` sequential requests after the same warm-up; the
difference divided by the difference in requests is the cost of one request,
start-up and imports cancelled out. ``--repeat`` runs the whole comparison
again to show the spread. Needs valgrind (``apt-get install -y valgrind``);
this is a benchmark, never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from http_overhead import MESH_YAML, _enable_sdk_tracing  # noqa: E402 - the same routing as the timing bench

import meshlib  # noqa: E402

PATHS = ("direct", "meshlib", "meshlib, tracing sampled out", "meshlib, every request traced")
WARMUP = 200


async def _client(path: str, requests: int, port: int, config: Path) -> None:
    """The measured process: WARMUP + ``requests`` sequential GETs on ``path``."""
    mesh = meshlib.Mesh.from_files(config)
    if path == "meshlib, tracing sampled out":
        _enable_sdk_tracing(mesh, sampled=False)
    elif path == "meshlib, every request traced":
        _enable_sdk_tracing(mesh)
    async with mesh:
        if path == "direct":
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            url = f"http://127.0.0.1:{port}/r"
        else:
            session = mesh.session(connector=mesh.connector(limit=100))
            url = "http://reviews:9080/r"
        async with session:
            for _ in range(WARMUP + requests):
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{path}: HTTP {resp.status}")
            mesh.flush_telemetry()


def _instructions(path: str, requests: int, port: int, config: Path, tmp: Path) -> int:
    out = tmp / "callgrind.out"
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--trace-children=no",
         sys.executable, __file__, "--inner", path, str(requests), str(port), str(config)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    match = re.search(r"^summary:\s*(\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("no summary line in the callgrind output")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--paths", default="direct,meshlib", help=f"comma-separated, of: {', '.join(PATHS)}")
    parser.add_argument("--inner", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        path, requests, port, config = args.inner
        asyncio.run(_client(path, int(requests), int(port), Path(config)))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (apt-get install -y valgrind)")
    paths = [p.strip() for p in args.paths.split(",")]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port_file = tmp / "backend.port"
        backend = subprocess.Popen([sys.executable, str(HERE / "_backend.py"), str(port_file)])
        try:
            deadline = time.monotonic() + 15
            while not (port_file.exists() and port_file.read_text()):
                if backend.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("backend did not start")
                time.sleep(0.02)
            port = int(port_file.read_text())
            config = tmp / "mesh.yaml"
            config.write_text(MESH_YAML.format(port=port))
            per_request: dict[str, list[float]] = {p: [] for p in paths}
            for _ in range(args.repeat):
                for path in paths:
                    small = _instructions(path, args.small, port, config, tmp)
                    large = _instructions(path, args.large, port, config, tmp)
                    per_request[path].append((large - small) / (args.large - args.small))
            print(f"client instructions per request (callgrind; {args.large} - {args.small} requests, "
                  f"{args.repeat} repeat(s), Python {sys.version.split()[0]})")
            base = per_request.get("direct")
            for path, values in per_request.items():
                spread = ", ".join(f"{v / 1000:.1f}k" for v in values)
                line = f"  {path:<32} {min(values) / 1000:8.1f}k – {max(values) / 1000:.1f}k   ({spread})"
                if base and path != "direct":
                    line += f"   +{(min(values) - max(base)) / 1000:.1f}k – +{(max(values) - min(base)) / 1000:.1f}k"
                print(line)
        finally:
            backend.terminate()
            backend.wait(timeout=10)


if __name__ == "__main__":
    main()
