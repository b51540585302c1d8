"""A gRPC server for upstream faults that need a real gRPC answer: a status, a stalled or slow reply.

It answers every method of every service (a generic handler on raw bytes),
runs on grpcio's own threads (no event loop needed), listens on 127.0.0.1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from meshlib.grpc.channel import http_to_grpc_status

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def start_grpc_fault_server(
    behaviour: str, status: int, grpc_status: int | None, seconds: float, stop: threading.Event
) -> tuple[int, Callable[[], None]]:
    """Start a server misbehaving as ``behaviour``; returns its port and a function that stops it."""
    code = _CODES.get(grpc_status, grpc.StatusCode.UNKNOWN) if grpc_status is not None else http_to_grpc_status(status)

    def answer(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        if behaviour == "status":
            context.abort(code, f"meshlib fault: {code.name}")
        context.send_initial_metadata((("x-meshlib-fault", behaviour),))
        if behaviour == "stall_body":
            while not stop.wait(0.1) and context.is_active():
                pass
            return
        if not stop.wait(seconds):  # slow_body: the reply comes after ``seconds``
            yield b""

    class AnyMethod(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
            return grpc.stream_stream_rpc_method_handler(answer)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="meshlib-fault-grpc"))
    server.add_generic_rpc_handlers((AnyMethod(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    def close() -> None:
        server.stop(None)

    return port, close
