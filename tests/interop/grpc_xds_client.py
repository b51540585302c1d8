"""grpcio's native xDS client in a subprocess, driven over stdin/stdout.

The bootstrap (``GRPC_XDS_BOOTSTRAP_CONFIG``) is process-wide in grpcio, so
the client lives in its own interpreter. Each request line is
``{"n": N, "metadata": [[key, value], ...]}``; the answer line is the list of
results, each the backend's reply (its version) or ``"ERR:<status code>"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any

SCRIPT = """
import json, sys
import grpc

target, method = sys.argv[1], sys.argv[2]
with grpc.insecure_channel(target) as channel:
    call = channel.unary_unary(method)
    first = True
    for line in sys.stdin:
        request = json.loads(line)
        results = []
        for _ in range(request["n"]):
            try:
                reply = call(b"hi", metadata=[tuple(m) for m in request["metadata"]], timeout=20 if first else 5,
                             wait_for_ready=first)
                results.append(reply.decode())
            except grpc.RpcError as exc:
                results.append("ERR:" + exc.code().name)
            first = False
        print(json.dumps(results), flush=True)
"""


class GrpcXdsClient:
    """``async with GrpcXdsClient(target, method, bootstrap) as client: await client.calls(10)``."""

    def __init__(self, target: str, method: str, bootstrap: Mapping[str, Any]) -> None:
        self.target = target
        self.method = method
        self.bootstrap = bootstrap
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> GrpcXdsClient:
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(self.bootstrap)}
        env.pop("GRPC_XDS_BOOTSTRAP", None)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRIPT, self.target, self.method, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def calls(self, n: int, metadata: Mapping[str, str] | None = None, *, limit_s: float = 30.0) -> list[str]:
        """Make ``n`` unary calls (the first call of the process waits for the xDS config)."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps({"n": n, "metadata": sorted((metadata or {}).items())}).encode() + b"\n")
        await process.stdin.drain()
        async with asyncio.timeout(limit_s):
            line = await process.stdout.readline()
        if not line:
            raise AssertionError(f"the grpcio xDS client exited:\n{await self.stderr_tail()}")
        results: list[str] = json.loads(line)
        return results

    async def stderr_tail(self) -> str:
        process = self._process
        if process is None or process.stderr is None:
            return ""
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(10):
            return (await process.stderr.read()).decode(errors="replace")[-4000:]

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
