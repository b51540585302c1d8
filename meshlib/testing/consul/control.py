"""``/_emulator/*``: the test controls over HTTP, for a ``meshlib consul-dev`` in another process.

================================================  =====================================================
``GET  /_emulator/requests``                      request counts per ``"METHOD /v1/route"``
``POST /_emulator/requests/reset``                zero the counts
``PUT  /_emulator/service``                       body ``{"name", "port", "address"?, "id"?, "tags"?,
                                                  "meta"?, "node"?, "dc"?, "status"?, "locality"?}``
``DELETE /_emulator/service/{id}``                remove an instance (``?dc=``)
``PUT  /_emulator/check/{id}?status=&output=``    a check (CheckID) or all checks of a ServiceID
``PUT  /_emulator/node/{node}?status=``           the node's ``serfHealth``
``PUT  /_emulator/locality/{node}?region=&zone=`` the node's ``Locality``
``PUT  /_emulator/outage?mode=&status=&body=``    ``no-leader``, ``hang`` or ``error`` (``refuse`` needs
                                                  ``seconds=``: the listener comes back by itself)
``DELETE /_emulator/outage``                      end the outage
``PUT  /_emulator/snapshot-restore?index=&dc=``   move indexes back, release blocked queries
``PUT  /_emulator/latency?seconds=``              delay every ``/v1`` answer
``PUT  /_emulator/datacenter/{dc}?reachable=``    cut or restore the path to a remote datacenter
================================================  =====================================================
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshlib.testing.consul.http_query import HttpProblem, json_response
from meshlib.testing.consul.routes_catalog import read_json

if TYPE_CHECKING:
    from meshlib.testing.consul.emulator import ConsulEmulator


def _float(request: web.Request, name: str, default: float | None = None) -> float:
    text = request.query.get(name)
    if text is None:
        if default is None:
            raise HttpProblem(400, f"missing ?{name}=")
        return default
    try:
        value = float(text)
    except ValueError:
        raise HttpProblem(400, f"?{name}= wants a number") from None
    if not 0 <= value <= 3600:
        raise HttpProblem(400, f"?{name}= must be between 0 and 3600")
    return value


class ControlRoutes:
    def __init__(self, emulator: ConsulEmulator) -> None:
        self.emu = emulator
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_emulator/requests", self.requests),
            web.post("/_emulator/requests/reset", self.reset_requests),
            web.put("/_emulator/service", self.add_service),
            web.delete("/_emulator/service/{id}", self.remove_service),
            web.put("/_emulator/check/{id}", self.set_check),
            web.put("/_emulator/node/{node}", self.set_node),
            web.put("/_emulator/locality/{node}", self.set_locality),
            web.put("/_emulator/outage", self.outage),
            web.delete("/_emulator/outage", self.end_outage),
            web.put("/_emulator/snapshot-restore", self.snapshot_restore),
            web.put("/_emulator/latency", self.latency),
            web.put("/_emulator/datacenter/{dc}", self.datacenter),
        ]

    async def requests(self, request: web.Request) -> web.Response:
        return json_response(dict(sorted(self.emu.request_counts.items())))

    async def reset_requests(self, request: web.Request) -> web.Response:
        self.emu.reset_counts()
        return json_response(True)

    async def add_service(self, request: web.Request) -> web.Response:
        body: Any = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(body.get("port"), int):
            raise HttpProblem(400, 'body wants {"name": str, "port": int, ...}')
        try:
            sid = self.emu.add_service(
                body["name"], body["port"], address=str(body.get("address", "127.0.0.1")),
                service_id=body.get("id"), node=body.get("node"), datacenter=body.get("dc"),
                tags=list(body.get("tags") or []), meta=dict(body.get("meta") or {}),
                weights=body.get("weights"), status=str(body.get("status", "passing")),
                node_locality=body.get("locality"),
            )
        except (TypeError, ValueError) as exc:
            raise HttpProblem(400, str(exc)) from None
        return json_response({"ID": sid})

    async def remove_service(self, request: web.Request) -> web.Response:
        self.emu.remove_service(request.match_info["id"], datacenter=request.query.get("dc"))
        return json_response(True)

    async def set_check(self, request: web.Request) -> web.Response:
        try:
            changed = self.emu.set_check_status(request.match_info["id"], request.query.get("status", ""),
                                                output=request.query.get("output", ""),
                                                datacenter=request.query.get("dc"))
        except ValueError as exc:
            raise HttpProblem(400, str(exc)) from None
        if not changed:
            raise HttpProblem(404, f"no check or service {request.match_info['id']!r}")
        return json_response({"Changed": changed})

    async def set_node(self, request: web.Request) -> web.Response:
        try:
            self.emu.set_node_status(request.match_info["node"], request.query.get("status", ""),
                                     datacenter=request.query.get("dc"))
        except KeyError:
            raise HttpProblem(404, "unknown node") from None
        return json_response(True)

    async def set_locality(self, request: web.Request) -> web.Response:
        try:
            self.emu.set_node_locality(request.match_info["node"], request.query.get("region", ""),
                                       request.query.get("zone", ""), datacenter=request.query.get("dc"))
        except KeyError:
            raise HttpProblem(404, "unknown node") from None
        return json_response(True)

    async def outage(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode", "no-leader")
        if mode == "refuse":
            seconds = _float(request, "seconds")

            async def refuse_then_recover() -> None:
                await self.emu.go_down("refuse")
                await asyncio.sleep(seconds)
                await self.emu.come_back()

            task = asyncio.get_running_loop().create_task(refuse_then_recover())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return json_response(True)
        try:
            status = int(request.query.get("status", "500"))
            await self.emu.go_down(mode, status=status, body=request.query.get("body", ""))
        except ValueError as exc:
            raise HttpProblem(400, str(exc)) from None
        return json_response(True)

    async def end_outage(self, request: web.Request) -> web.Response:
        await self.emu.come_back()
        return json_response(True)

    async def snapshot_restore(self, request: web.Request) -> web.Response:
        self.emu.restore_snapshot(int(_float(request, "index", 1)), datacenter=request.query.get("dc"))
        return json_response(True)

    async def latency(self, request: web.Request) -> web.Response:
        self.emu.set_latency(_float(request, "seconds"))
        return json_response(True)

    async def datacenter(self, request: web.Request) -> web.Response:
        reachable = request.query.get("reachable", "").lower()
        if reachable not in ("true", "false"):
            raise HttpProblem(400, "?reachable= wants true or false")
        try:
            self.emu.set_datacenter_reachable(request.match_info["dc"], reachable == "true")
        except ValueError as exc:
            raise HttpProblem(400, str(exc)) from None
        return json_response(True)
