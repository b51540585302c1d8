"""``/v1/health/*`` handlers: service instances with their checks, checks by service, node or state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshlib.testing.consul.http_query import HttpProblem, QueryOptions, parse_go_bool
from meshlib.testing.consul.render import check_json, health_entry_json
from meshlib.testing.consul.routes_catalog import apply_filter
from meshlib.testing.consul.state import PASSING, STATUS_ORDER, CatalogStore, CheckRecord

if TYPE_CHECKING:
    from meshlib.testing.consul.emulator import ConsulEmulator


class HealthRoutes:
    def __init__(self, emulator: ConsulEmulator) -> None:
        self.emu = emulator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/health/service/{service}", self.health_service),
            web.get("/v1/health/checks/{service}", self.health_checks),
            web.get("/v1/health/node/{node}", self.health_node),
            web.get("/v1/health/state/{state}", self.health_state),
        ]

    @staticmethod
    def _passing(request: web.Request) -> bool:
        if "passing" not in request.query:
            return False
        raw = request.query["passing"]
        value = True if raw == "" else parse_go_bool(raw)  # present and empty means true
        if value is None:
            raise HttpProblem(400, "Invalid value for ?passing")
        return value

    def _health_entries(self, store: CatalogStore, name: str, request: web.Request,
                        options: QueryOptions) -> tuple[list[dict[str, Any]], bool]:
        passing = self._passing(request)
        tags = request.query.getall("tag", [])
        node_meta = [item.partition(":") for item in request.query.getall("node-meta", [])]
        token = self.emu.acl.resolve(options.token)
        entries, hidden = [], False
        for service in store.instances(name):
            if any(t not in service.tags for t in tags):
                continue
            node = store.nodes.get(service.node)
            if node is None or any(node.meta.get(k) != v for k, _, v in node_meta):
                continue
            checks = store.checks_for(service.node, service.service_id)
            if passing and any(c.status != PASSING for c in checks):
                continue
            if not (self.emu.acl.allows(token, "service", name, "read")
                    and self.emu.acl.allows(token, "node", service.node, "read")):
                hidden = True
                continue
            entries.append(health_entry_json(node, service, checks))
        return apply_filter(options.filter, entries), hidden

    async def health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        options, store = self.emu.query_context(request)
        hidden = False

        def compute() -> tuple[int, Any]:
            nonlocal hidden
            body, hidden = self._health_entries(store, name, request, options)
            return store.service_index(name), body

        index, body = await self.emu.run_query(store, options, [f"service.{name}"], compute)
        extra = {"X-Consul-Results-Filtered-By-ACLs": "true"} if hidden else None
        return self.emu.query_response(body, index, options, headers=extra)

    def _readable(self, options: QueryOptions, checks: list[CheckRecord]) -> list[dict[str, Any]]:
        token = self.emu.acl.resolve(options.token)
        kept = [c for c in checks if self.emu.acl.allows(token, "node", c.node, "read")
                and (not c.service_id or self.emu.acl.allows(token, "service", c.service_name, "read"))]
        return apply_filter(options.filter, [check_json(c) for c in kept])

    async def health_checks(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        options, store = self.emu.query_context(request)

        def compute() -> tuple[int, Any]:
            checks = [c for s in store.instances(name) for c in store.checks_for(s.node, s.service_id)
                      if c.service_id == s.service_id]
            return store.service_index(name), self._readable(options, checks)

        index, body = await self.emu.run_query(store, options, [f"service.{name}"], compute)
        return self.emu.query_response(body, index, options)

    async def health_node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        options, store = self.emu.query_context(request)

        def compute() -> tuple[int, Any]:
            checks = [c for (n, _), c in sorted(store.checks.items()) if n == node]
            return store.table_index("checks", "nodes"), self._readable(options, checks)

        index, body = await self.emu.run_query(store, options, ["checks"], compute)
        return self.emu.query_response(body, index, options)

    async def health_state(self, request: web.Request) -> web.Response:
        state = request.match_info["state"]
        if state != "any" and state not in STATUS_ORDER:
            raise HttpProblem(400, "Invalid check state")
        options, store = self.emu.query_context(request)

        def compute() -> tuple[int, Any]:
            checks = [c for _, c in sorted(store.checks.items()) if state in ("any", c.status)]
            return store.table_index("checks"), self._readable(options, checks)

        index, body = await self.emu.run_query(store, options, ["checks"], compute)
        return self.emu.query_response(body, index, options)
