"""``python -m meshlib.cli …`` as a real subprocess: one-shot runs, and long-running commands stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator

MESHLIB_CLI = (sys.executable, "-m", "meshlib.cli")


async def run_cli(*args: str, timeout_s: float = 60.0) -> tuple[int, str, str]:
    """Run ``meshlib <args>`` to the end: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *MESHLIB_CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout_s):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def serving_cli(*args: str, stop_timeout_s: float = 30.0) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start ``meshlib <args>`` (stdout and stderr piped) and stop it on the way out: SIGTERM, then
    wait up to ``stop_timeout_s``; a process that ignores SIGTERM is killed and the test fails.
    The caller checks ``process.returncode`` afterwards (0 for a clean shutdown)."""
    process = await asyncio.create_subprocess_exec(
        *MESHLIB_CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    body_failed = True
    try:
        yield process
        body_failed = False
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(stop_timeout_s):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
                if not body_failed:  # else the body's own failure is the one to report
                    raise AssertionError(f"meshlib {args[0] if args else ''} ignored SIGTERM") from None
