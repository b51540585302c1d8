"""Broken upstreams, Envoy as the reference (issue 13): a body that stalls after the headers is
timed out by the route / per-try timeout; a response that is not HTTP becomes 503 ``UPE``, retried."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest

import meshlib
from meshlib.aiohttp.local_reply import LOCAL_REPLY_HEADER
from tests.integration.misbehaving import Upstream, http_upstream, mesh_yaml

pytestmark = pytest.mark.asyncio
CLUSTER = "outbound|9080||svc.default.svc.cluster.local"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_upstream(name: str, answer: Handler) -> AsyncIterator[Upstream]:
    """A TCP server that reads each request head and then runs ``answer`` (for bytes no HTTP server sends)."""
    upstream = Upstream(name)
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            upstream.hits += 1
            upstream.arrived.set()
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def stall_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst bytes ")
    await writer.drain()
    await reader.read()  # until the client gives up and closes


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\r\n")
    await writer.drain()


def make_mesh(tmp_path: Path, yaml: str) -> meshlib.Mesh:
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml)
    return meshlib.Mesh.from_files(path, rng=random.Random(3))


@pytest.mark.parametrize(
    ("vs_rule", "counter"),
    [
        ("    timeout: 300ms", "upstream_rq_timeout"),
        ("    retries: {attempts: 1, perTryTimeout: 300ms, retryOn: 5xx}", "upstream_rq_per_try_timeout"),
    ],
    ids=["route-timeout", "per-try-timeout"],
)
async def test_a_body_that_stalls_after_the_headers_is_timed_out(tmp_path: Path, vs_rule: str, counter: str) -> None:
    async with raw_upstream("stall", stall_after_headers) as stall:
        mesh = make_mesh(tmp_path, mesh_yaml({"stall": stall.port}, vs_rule=vs_rule))
        async with mesh, mesh.session() as http:
            started = time.monotonic()
            async with http.get("http://svc:9080/") as resp:
                assert resp.status == 200  # the headers came in time
                with pytest.raises(aiohttp.ServerTimeoutError, match="timeout expired while the response body"):
                    await resp.read()
            elapsed = time.monotonic() - started
            stats = mesh.stats()["clusters"][CLUSTER]
    assert 0.25 <= elapsed < 3.0  # the deadline counted from the request, not a fresh one for the body
    assert stats[counter] == 1
    assert isinstance(aiohttp.ServerTimeoutError(), asyncio.TimeoutError)  # what callers catch


async def test_a_read_started_after_the_deadline_raises_the_timeout(tmp_path: Path) -> None:
    async with raw_upstream("stall", stall_after_headers) as stall:
        mesh = make_mesh(tmp_path, mesh_yaml({"stall": stall.port}, vs_rule="    timeout: 200ms"))
        async with mesh, mesh.session() as http, http.get("http://svc:9080/") as resp:
            await asyncio.sleep(0.4)  # the deadline passes while nobody reads
            with pytest.raises(aiohttp.ServerTimeoutError):
                await resp.read()


async def test_a_body_read_in_time_disarms_the_deadline(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with http_upstream("ok", "ok", release) as ok:
        mesh = make_mesh(tmp_path, mesh_yaml({"ok": ok.port}, vs_rule="    timeout: 200ms"))
        async with mesh, mesh.session() as http:
            async with http.get("http://svc:9080/") as resp:
                assert await resp.text() == "ok"
            await asyncio.sleep(0.3)  # past the deadline: nothing may fire on a finished response
            stats = mesh.stats()["clusters"][CLUSTER]
    assert stats["upstream_rq_timeout"] == 0


async def test_a_garbage_response_is_503_upe_and_retried_as_a_reset(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with raw_upstream("garbage", garbage) as bad, http_upstream("good", "ok", release) as good:
        mesh = make_mesh(tmp_path, mesh_yaml(
            {"garbage": bad.port, "good": good.port}, vs_rule="    retries: {attempts: 2, retryOn: reset}"
        ))
        async with mesh, mesh.session() as http:
            for _ in range(4):
                async with http.get("http://svc:9080/") as resp:
                    assert resp.status == 200
                    assert await resp.text() == "good"
            stats = mesh.stats()["clusters"][CLUSTER]
    assert bad.hits >= 1
    assert stats["upstream_rq_retry"] == bad.hits
    assert stats["upstream_cx_protocol_error"] == bad.hits  # each one counted, though retried away
    assert stats["upstream_rq_5xx"] == 0


async def test_a_garbage_response_without_retries_is_answered_503_upe(tmp_path: Path) -> None:
    async with raw_upstream("garbage", garbage) as bad:
        mesh = make_mesh(tmp_path, mesh_yaml({"garbage": bad.port}, vs_rule="    retries: {attempts: 0}"))
        async with mesh, mesh.session() as http:
            async with http.get("http://svc:9080/") as resp:
                assert resp.status == 503
                assert resp.headers[LOCAL_REPLY_HEADER] == "UPE"
                assert "protocol error" in await resp.text()
            stats = mesh.stats()["clusters"][CLUSTER]
    assert bad.hits == 1
    assert stats["upstream_cx_protocol_error"] == 1
    assert stats["upstream_rq_5xx"] == 1


async def test_grpc_deadline_covers_a_reply_stalled_after_its_headers(tmp_path: Path) -> None:
    """gRPC: the per-call deadline (route timeout) runs until the call ends, headers or not."""
    headers_sent = asyncio.Event()

    async def stall(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.send_initial_metadata((("x-stage", "headers"),))
        headers_sent.set()
        await asyncio.sleep(30)
        return b"never"

    handler = grpc.method_handlers_generic_handler(
        "test.Stall", {"Call": grpc.unary_unary_rpc_method_handler(stall)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yaml = mesh_yaml({"stall": port}, vs_rule="    timeout: 300ms").replace("protocol: HTTP", "protocol: GRPC")
        mesh = make_mesh(tmp_path, yaml)
        async with mesh, mesh.grpc_channel("svc.default.svc.cluster.local:9080") as channel:
            call = channel.unary_unary("/test.Stall/Call")
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call(b"x")
            elapsed = time.monotonic() - started
            stats = mesh.stats()["clusters"][CLUSTER]
    finally:
        await server.stop(None)
    assert headers_sent.is_set()
    assert failure.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= elapsed < 3.0
    assert stats["upstream_rq_timeout"] + stats["upstream_rq_per_try_timeout"] == 1


async def test_a_client_response_error_of_an_inner_middleware_is_the_callers(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def refuse_teapots(req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        resp = await handler(req)
        raise aiohttp.ClientResponseError(resp.request_info, (), status=418, message="no teapots")

    async with http_upstream("ok", "ok", release) as ok:
        mesh = make_mesh(tmp_path, mesh_yaml({"ok": ok.port}, vs_rule="    retries: {attempts: 2, retryOn: reset}"))
        async with mesh, mesh.session(middlewares=(refuse_teapots,)) as http:
            with pytest.raises(aiohttp.ClientResponseError, match="no teapots"):
                await http.get("http://svc:9080/")
            stats = mesh.stats()["clusters"][CLUSTER]
    assert ok.hits == 1  # not retried
    assert stats["upstream_cx_protocol_error"] == 0
