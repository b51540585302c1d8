"""aiohttp's per-request total timeout, kept by meshlib's timeout queue instead of aiohttp's own timer.

aiohttp arms a total timeout for every request (``ClientTimeout.total``,
300 s by default): a ``TimeoutHandle``, a loop ``call_at``, a
``TimerContext`` entered and left around the request and every body read,
and a release callback — about 21 µs per request even straight to a server.
``mesh.session()`` keeps the same protection with one mechanism:

- its default ``ClientTimeout`` is :data:`SESSION_TIMEOUT` — aiohttp's
  default with ``total`` left to meshlib, so aiohttp arms nothing;
- the middleware arms an entry in a :class:`~meshlib.resilience.timer.TimeoutQueue`
  of :data:`TOTAL_S` seconds (an append) for each request it sees;
- while the request is on its way (connect, send, response headers, mesh
  retries) expiry cancels the request's task and the caller gets
  ``asyncio.TimeoutError``, as from aiohttp;
- once the response is handed back the entry covers its body: expiry fails
  the next read with :class:`aiohttp.ServerTimeoutError` (a
  ``TimeoutError``) and closes the connection; the entry is disarmed when the
  response releases its connection (read to the end, ``release()``,
  ``close()``), as aiohttp disarms its timer.

A ``timeout=`` given to ``mesh.session()`` or to one request is aiohttp's
business as before (aiohttp's own timer; meshlib arms nothing). One
difference: on a session with meshlib's default, a request given
``timeout=ClientTimeout(total=None)`` still gets meshlib's 300 s total —
aiohttp does not tell a middleware which timeout a request carries
(docs/differences.md).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import attr
from aiohttp import ClientRequest, ClientResponse, ClientTimeout, ServerTimeoutError
from aiohttp.helpers import TimerNoop

from meshlib.resilience.timer import QueuedTimer, TimeoutQueue

TOTAL_S = 300.0  # aiohttp's default ClientTimeout.total
# aiohttp's default timeout with the total taken over by meshlib (identity marks a mesh session's default).
SESSION_TIMEOUT = ClientTimeout(total=None, sock_connect=30)
# What a new connection of such a session is given: aiohttp bounds the TLS handshake by ``total``.
SESSION_CONNECT_TIMEOUT = attr.evolve(SESSION_TIMEOUT, total=TOTAL_S)


class _BodyExpiry:
    """Stands in for the task in a body-phase entry: the queue "cancels" it when the total expires."""

    __slots__ = ("response",)

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    def cancel(self, msg: Any = None) -> bool:
        response = self.response
        content = response.content
        if content.is_eof() or response.closed:
            return False
        error = ServerTimeoutError(f"meshlib: the total timeout ({TOTAL_S:g} s) expired while the body was read")
        content.set_exception(error)
        response.close()
        content.set_exception(error)  # closing failed the body with "Connection closed": the timeout wins
        return True

    def uncancel(self) -> int:  # the queue's contract; nobody asks a body-phase entry whether it expired
        return 0


class TotalTimeouts:
    """The total-timeout entries of one middleware: one queue per event loop."""

    __slots__ = ("_loop", "_queue")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: TimeoutQueue | None = None

    def arm(self, req: ClientRequest) -> QueuedTimer | None:
        """An entry for ``req`` when its session left the total to meshlib (else None: aiohttp times it)."""
        session = req._session
        if session is None or session._timeout is not SESSION_TIMEOUT or type(req._timer) is not TimerNoop:
            return None
        loop = req.loop
        task = asyncio.current_task(loop)
        if task is None:
            return None
        queue = self._queue
        if queue is None or self._loop is not loop:
            queue = self._queue = TimeoutQueue(loop, TOTAL_S)
            self._loop = loop
        return queue.arm(task)


def settle(entry: QueuedTimer, response: ClientResponse | None) -> None:
    """The request phase is over: disarm ``entry``, or have it cover ``response``'s body until release."""
    if response is None or entry.task is None:
        entry.task = None
        return
    connection = response.connection
    if connection is None:  # already released (the body came with the headers) or a local reply
        entry.task = None
        return
    # The same queue entry (same deadline, same place in the queue) now closes the body instead.
    entry.task = cast("asyncio.Task[Any]", _BodyExpiry(response))
    connection.add_callback(entry.cancel)
