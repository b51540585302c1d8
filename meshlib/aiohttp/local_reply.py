"""Local replies: responses the mesh answers itself, without dialling anyone.

An Envoy sidecar answers some requests locally — 404 when no route matches,
502 for a host outside the registry under REGISTRY_ONLY, 503 when no healthy
upstream is left, redirects and direct responses. A client middleware must
hand back an ``aiohttp.ClientResponse``, so :func:`local_response` builds one
whose body is already complete: ``read()``, ``text()``, ``json()`` and
``content`` all work, and ``release()`` has no connection to return.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import ClientRequest, ClientResponse, HttpVersion11
from aiohttp.helpers import TimerNoop
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy

# Marks a reply as made by the mesh (Envoy marks its own with response flags in logs).
LOCAL_REPLY_HEADER = "x-meshlib-local-reply"


class _NoProtocol:
    """The StreamReader's protocol: nothing to pause, nothing is being read."""

    _reading_paused = False

    def pause_reading(self) -> None:
        return None

    def resume_reading(self, resume_parser: bool = True) -> None:
        return None


class _SentNothing:
    """Stands in for the stream writer of a request that never left the process."""

    output_size = 0


def local_response(
    req: ClientRequest,
    status: int,
    body: bytes = b"",
    *,
    reason: str = "",
    headers: Iterable[tuple[str, str]] = (),
    flag: str = "",
) -> ClientResponse:
    """Build a complete ``ClientResponse`` for ``req`` without any network I/O.

    ``flag`` (e.g. ``NR`` for no route, Envoy's response-flag vocabulary) is
    carried in the ``x-meshlib-local-reply`` header so callers and logs can
    tell a mesh answer from a server answer.
    """
    response = req.response_class(
        req.method,
        req.original_url,
        writer=None,
        continue100=None,
        timer=TimerNoop(),
        request_info=req.request_info,
        traces=[],
        loop=req.loop,
        session=req.session,
        stream_writer=_SentNothing(),  # type: ignore[arg-type]
    )
    reply_headers: CIMultiDict[str] = CIMultiDict(headers)
    reply_headers.setdefault("content-type", "text/plain; charset=utf-8")
    reply_headers["content-length"] = str(len(body))
    if flag:
        reply_headers[LOCAL_REPLY_HEADER] = flag
    response.version = HttpVersion11
    response.status = status
    response.reason = reason or _REASONS.get(status, "")
    response._headers = CIMultiDictProxy(reply_headers)
    response._raw_headers = tuple((k.encode(), v.encode()) for k, v in reply_headers.items())
    content = StreamReader(_NoProtocol(), 2**16, loop=req.loop)  # type: ignore[arg-type]
    if body:
        content.feed_data(body)
    content.feed_eof()
    response.content = content
    response._body = body
    return response


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    404: "Not Found",
    429: "Too Many Requests",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
