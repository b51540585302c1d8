"""Shared measurement for the overhead benchmarks: same run, interleaved rounds, ratios to a baseline."""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

Send = Callable[[], Awaitable[None]]

# Client on CPU 0, the servers it measures against on CPU 1. Left to the scheduler, the
# client and its server sometimes share a core and sometimes not, and the latency of every
# path jumps between those two modes in the middle of a run (±30% at p50 on 2 cores).
CLIENT_CPU, SERVER_CPU = 0, 1


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2


def pin_client() -> None:
    """Pin this process (the measuring client) to CLIENT_CPU, when the machine allows it."""
    if can_pin():
        os.sched_setaffinity(0, {CLIENT_CPU})


def pin_server() -> None:
    """``preexec_fn`` for a server process: it and every thread it starts run on SERVER_CPU."""
    if can_pin():
        os.sched_setaffinity(0, {SERVER_CPU})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, timeout_s: float = 15.0) -> None:
    """Wait until something accepts on 127.0.0.1:``port`` (a process started by the benchmark)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


async def measure(send: Send, requests: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies of ``requests`` calls made by ``concurrency`` workers, and the throughput."""
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - start)

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, requests / (time.perf_counter() - begin)


async def report(
    paths: dict[str, Send], requests: int, rounds: int, *, baseline: str, unit: str = "requests", extra: str = ""
) -> None:
    """Print p50/p99/throughput per path at concurrency 1 and 16, with ratios against ``baseline``."""
    print(f"machine: {os.cpu_count()} cpu(s), Python {platform.python_version()}, {platform.machine()}{extra}; "
          f"{rounds} interleaved round(s) of {requests} {unit} per path and concurrency")
    width = max(len(name) for name in paths) + 1
    for concurrency in (1, 16):
        latencies_of: dict[str, list[float]] = {name: [] for name in paths}
        round_p50: dict[str, list[float]] = {name: [] for name in paths}
        round_rps: dict[str, list[float]] = {name: [] for name in paths}
        for send in paths.values():  # warm up connections and code paths
            await measure(send, min(300, requests), concurrency)
        order = list(paths.items())
        for round_index in range(rounds):
            # Each round starts with the next path: whatever one path leaves behind (its garbage, an exporter
            # thread waking) falls on every path alike rather than always on the one after it.
            shift = round_index % len(order)
            for name, send in order[shift:] + order[:shift]:
                gc.collect()  # a collection owed by earlier work does not land in this path's window
                latencies, rps = await measure(send, requests, concurrency)
                latencies_of[name].extend(latencies)
                round_p50[name].append(statistics.median(latencies))
                round_rps[name].append(rps)
        # Ratios are taken round by round (paths of one round ran back to back) and their median
        # reported: the machine's drift between rounds cancels out; "range" shows what is left.
        label_p50, label_rps = f"p50 ×{baseline}", f"rps ×{baseline}"
        print(f"\nconcurrency {concurrency}")
        print(f"  {'path':<{width}} {'p50 µs':>9} {'p99 µs':>9} {'rps':>8}   {label_p50:>11} {'range':>13} "
              f"{label_rps:>11}")
        for name, latencies in latencies_of.items():
            latencies.sort()
            p50 = statistics.median(latencies)
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            rps = statistics.median(round_rps[name])
            p50_ratios = [a / b for a, b in zip(round_p50[name], round_p50[baseline], strict=True)]
            rps_ratios = [a / b for a, b in zip(round_rps[name], round_rps[baseline], strict=True)]
            spread = f"{min(p50_ratios):.2f}–{max(p50_ratios):.2f}"
            print(f"  {name:<{width}} {p50 * 1e6:9.0f} {p99 * 1e6:9.0f} {rps:8.0f}   "
                  f"{statistics.median(p50_ratios):11.3f} {spread:>13} {statistics.median(rps_ratios):11.3f}")
