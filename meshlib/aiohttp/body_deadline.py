"""The route and per-try timeouts keep covering a response body the caller reads later.

Envoy's route timeout (and its per-try timeout) runs until the *whole*
response has arrived. In aiohttp the client middleware returns once the
response headers are in; the caller reads the body afterwards, outside the
mesh's reach. So when the runner hands a response back, :func:`guard_body`
looks at its body:

- already complete (the common case: small bodies arrive with the headers) —
  nothing to do, one ``is_eof()`` check;
- still streaming — one ``loop.call_at`` at the remaining deadline, disarmed
  by the body's end of stream (``StreamReader.on_eof``). If it fires first,
  the connection is closed (Envoy resets the upstream stream) and the caller's
  next read raises :class:`aiohttp.ServerTimeoutError` (an
  :class:`asyncio.TimeoutError`) saying which timeout expired; the cluster's
  ``upstream_rq_timeout`` / ``upstream_rq_per_try_timeout`` counts it.

Envoy answers 504 ``UT`` only when nothing has been sent downstream yet; here
the caller already holds the response headers, which corresponds to Envoy's
"response already started" case, where it resets the downstream stream —
hence an error on read rather than a 504 (docs/differences.md).
"""

from __future__ import annotations

import asyncio

from aiohttp import ClientResponse, ServerTimeoutError


def guard_body(response: ClientResponse, when: float, counters: dict[str, int], counter: str) -> None:
    """Time the rest of ``response``'s body out at loop time ``when`` (see the module docstring)."""
    content = response.content
    if content.is_eof():
        return
    _BodyDeadline(response, when, counters, counter)


class _BodyDeadline:
    __slots__ = ("counter", "counters", "response")

    def __init__(self, response: ClientResponse, when: float, counters: dict[str, int], counter: str) -> None:
        self.response = response
        self.counters = counters
        self.counter = counter
        handle = asyncio.get_running_loop().call_at(when, self._expire)
        response.content.on_eof(handle.cancel)

    def _expire(self) -> None:
        response = self.response
        content = response.content
        if content.is_eof() or response.closed:
            return  # read to the end, or released by the caller: nothing is waiting on it
        self.counters[self.counter] += 1
        which = "per-try" if self.counter == "upstream_rq_per_try_timeout" else "route"
        error = ServerTimeoutError(
            f"meshlib: upstream request timeout: the {which} timeout expired while the response body was read "
            f"(Envoy resets such a stream)"
        )
        content.set_exception(error)  # wakes a read in progress with the timeout
        # The connection is not reusable mid-body: drop it. Closing fails the body with a generic
        # "Connection closed"; set again, the timeout is also what any later read raises.
        response.close()
        content.set_exception(error)
