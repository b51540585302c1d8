"""``/v1/health``, ``/v1/catalog``, ``/v1/config``, ``/v1/discovery-chain`` and ``/v1/status`` handlers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshlib.testing.consul.config_entries import KNOWN_KINDS, ConfigEntryError, decode_entry, validate_entry
from meshlib.testing.consul.http_query import HttpProblem, json_response, text_response
from meshlib.testing.consul.registration import SERVICE_SCHEMA, RegistrationError, decode_registration
from meshlib.testing.consul.render import catalog_service_json, node_json
from meshlib.testing.consul.schema import ANY, BOOL, STR, STRMAP, DecodeError, ListOf, Obj, decode
from meshlib.testing.consul.state import STATUS_ORDER, CheckRecord

if TYPE_CHECKING:
    from meshlib.testing.consul.emulator import ConsulEmulator

_CATALOG_CHECK = Obj({"Node": STR, "CheckID": STR, "Name": STR, "Status": STR, "Notes": STR, "Output": STR,
                      "ServiceID": STR, "Definition": ANY, "Type": STR}, aliases={"ID": "CheckID"})
_CATALOG_REGISTER = Obj({
    "ID": STR, "Node": STR, "Address": STR, "Datacenter": STR, "TaggedAddresses": STRMAP, "NodeMeta": STRMAP,
    "Locality": Obj({"Region": STR, "Zone": STR}), "Service": SERVICE_SCHEMA, "Check": _CATALOG_CHECK,
    "Checks": ListOf(_CATALOG_CHECK), "SkipNodeUpdate": BOOL,
})
_CATALOG_DEREGISTER = Obj({"Node": STR, "Datacenter": STR, "CheckID": STR, "ServiceID": STR})
MAX_BODY = 1 << 20
CHAIN_TOPICS = [f"config.{kind}" for kind in (
    "service-router", "service-splitter", "service-resolver", "service-defaults", "proxy-defaults")]


async def read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise HttpProblem(413, "Request body too large")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpProblem(413, "Request body too large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise HttpProblem(400, f"Request decode failed: {exc}") from None


def apply_filter(expression: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``?filter=`` with meshlib's go-bexpr evaluator (Consul: 500 on a bad expression)."""
    if not expression:
        return items
    from meshlib.discovery.consul.bexpr import BexprError, parse

    try:
        return parse(expression).select(items)
    except BexprError as exc:
        raise HttpProblem(500, f"Failed to create boolean expression evaluator: {exc}") from None


class CatalogRoutes:
    def __init__(self, emulator: ConsulEmulator) -> None:
        self.emu = emulator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/catalog/services", self.catalog_services),
            web.get("/v1/catalog/service/{service}", self.catalog_service),
            web.get("/v1/catalog/nodes", self.catalog_nodes),
            web.get("/v1/catalog/datacenters", self.catalog_datacenters),
            web.put("/v1/catalog/register", self.catalog_register),
            web.put("/v1/catalog/deregister", self.catalog_deregister),
            web.put("/v1/config", self.config_apply),
            web.get("/v1/config/{kind}", self.config_list),
            web.get("/v1/config/{kind}/{name}", self.config_get),
            web.delete("/v1/config/{kind}/{name}", self.config_delete),
            web.get("/v1/discovery-chain/{service}", self.discovery_chain),
            web.post("/v1/discovery-chain/{service}", self.discovery_chain),
            web.get("/v1/status/leader", self.status_leader),
            web.get("/v1/status/peers", self.status_peers),
        ]

    # -- catalog ---------------------------------------------------------------------------------------

    async def catalog_services(self, request: web.Request) -> web.Response:
        options, store = self.emu.query_context(request)
        token = self.emu.acl.resolve(options.token)

        node_meta = [item.partition(":") for item in request.query.getall("node-meta", [])]

        def compute() -> tuple[int, Any]:
            names: dict[str, list[str]] = {}
            kept = [s for s in store.services.values() if self.emu.acl.allows(token, "service", s.name, "read")]
            if node_meta:
                kept = [s for s in kept if s.node in store.nodes
                        and all(store.nodes[s.node].meta.get(k) == v for k, _, v in node_meta)]
            if options.filter:  # Consul filters the ServiceNodes, then groups them by name
                rows = [(s, catalog_service_json(store.nodes[s.node], s)) for s in kept if s.node in store.nodes]
                selected = {id(row) for row in apply_filter(options.filter, [row for _, row in rows])}
                kept = [s for s, row in rows if id(row) in selected]
            for service in kept:
                tags = names.setdefault(service.name, [])
                tags.extend(t for t in service.tags if t not in tags)
            return store.table_index("services"), dict(sorted(names.items()))

        index, body = await self.emu.run_query(store, options, ["services"], compute)
        return self.emu.query_response(body, index, options)

    async def catalog_service(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        options, store = self.emu.query_context(request)
        token = self.emu.acl.resolve(options.token)
        tags = request.query.getall("tag", [])

        def compute() -> tuple[int, Any]:
            out = []
            if self.emu.acl.allows(token, "service", name, "read"):
                for service in store.instances(name):
                    node = store.nodes.get(service.node)
                    if node is not None and all(t in service.tags for t in tags):
                        out.append(catalog_service_json(node, service))
            return store.service_index(name), apply_filter(options.filter, out)

        index, body = await self.emu.run_query(store, options, [f"service.{name}"], compute)
        return self.emu.query_response(body, index, options)

    async def catalog_nodes(self, request: web.Request) -> web.Response:
        options, store = self.emu.query_context(request)
        token = self.emu.acl.resolve(options.token)

        def compute() -> tuple[int, Any]:
            nodes = [node_json(n) for _, n in sorted(store.nodes.items())
                     if self.emu.acl.allows(token, "node", n.name, "read")]
            return store.table_index("nodes"), apply_filter(options.filter, nodes)

        index, body = await self.emu.run_query(store, options, ["nodes"], compute)
        return self.emu.query_response(body, index, options)

    async def catalog_datacenters(self, request: web.Request) -> web.Response:
        self.emu.check_leader(None)
        return json_response(sorted(self.emu.stores))

    async def catalog_register(self, request: web.Request) -> web.Response:
        self.emu.check_leader(None)
        try:
            data = decode(await read_json(request), _CATALOG_REGISTER, strict=False) or {}
        except DecodeError as exc:
            raise HttpProblem(400, f"Request decode failed: {exc}") from None
        store = self.emu.store(data.get("Datacenter") or request.query.get("dc") or self.emu.local_dc)
        token = self.emu.acl.resolve(self.emu.token_of(request))
        node_name, address = data.get("Node") or "", data.get("Address") or ""
        if not node_name:
            raise HttpProblem(400, "Missing node name")
        if not address and not data.get("SkipNodeUpdate"):
            raise HttpProblem(400, "Missing node address")
        self.emu.acl.require(token, "node", node_name, "write")
        service = None
        if data.get("Service"):
            try:
                service = decode_registration(data["Service"], node=node_name).service
            except RegistrationError as exc:
                raise HttpProblem(exc.status, str(exc)) from None
            self.emu.acl.require(token, "service", service.name, "write")
        if not data.get("SkipNodeUpdate") or node_name not in store.nodes:
            store.ensure_node(node_name, address, node_id=data.get("ID") or None,
                              meta=data.get("NodeMeta"), tagged_addresses=data.get("TaggedAddresses"),
                              locality=data.get("Locality") or None)
        if service is not None:
            store.set_service(service)
        for check in ([data["Check"]] if data.get("Check") else []) + list(data.get("Checks") or []):
            status = check.get("Status") or "critical"
            if status not in STATUS_ORDER:
                raise HttpProblem(400, "Status for checks must 'passing', 'warning', 'critical'")
            service_id = check.get("ServiceID") or ""
            if service_id and (node_name, service_id) not in store.services:
                raise HttpProblem(500, f'Unknown service ID "{service_id}" for check ID "{check.get("CheckID")}"')
            store.set_check(CheckRecord(
                node=node_name, check_id=check.get("CheckID") or "", name=check.get("Name") or "",
                status=status, notes=check.get("Notes") or "", output=check.get("Output") or "",
                service_id=service_id, type=check.get("Type") or "",
                definition=dict(check.get("Definition") or {}),
            ))
        return json_response(True)

    async def catalog_deregister(self, request: web.Request) -> web.Response:
        self.emu.check_leader(None)
        try:
            data = decode(await read_json(request), _CATALOG_DEREGISTER, strict=False) or {}
        except DecodeError as exc:
            raise HttpProblem(400, f"Request decode failed: {exc}") from None
        store = self.emu.store(data.get("Datacenter") or request.query.get("dc") or self.emu.local_dc)
        node_name = data.get("Node") or ""
        if not node_name:
            raise HttpProblem(400, "Missing node name")
        token = self.emu.acl.resolve(self.emu.token_of(request))
        self.emu.acl.require(token, "node", node_name, "write")
        if data.get("ServiceID"):
            store.delete_service(node_name, data["ServiceID"])
        elif data.get("CheckID"):
            store.delete_check(node_name, data["CheckID"])
        else:
            store.delete_node(node_name)
        return json_response(True)

    # -- config entries --------------------------------------------------------------------------------

    def _can(self, token: Any, entry_kind: str, name: str, access: str) -> bool:
        if entry_kind == "proxy-defaults":
            return access == "read" or self.emu.acl.allows(token, "operator", "", "write")
        return self.emu.acl.allows(token, "service", name, access)

    async def config_apply(self, request: web.Request) -> web.Response:
        self.emu.check_leader(None)
        store = self.emu.store(request.query.get("dc") or self.emu.local_dc)
        body = await read_json(request)
        try:
            entry = decode_entry(body)
        except ConfigEntryError as exc:
            raise HttpProblem(exc.status, str(exc)) from None
        token = self.emu.acl.resolve(self.emu.token_of(request))
        if not self._can(token, entry["Kind"], entry["Name"], "write"):
            self.emu.acl.require(token, "operator" if entry["Kind"] == "proxy-defaults" else "service",
                                 entry["Name"], "write")
        problem = validate_entry(entry) or self.emu.chain_problem(store, entry)
        if problem is not None:
            raise HttpProblem(500, problem)
        cas = None
        if "cas" in request.query:
            text = request.query["cas"]
            if not text.isdigit():
                raise HttpProblem(400, f'strconv.ParseUint: parsing "{text}": invalid syntax')
            cas = int(text)
        return json_response(store.set_config_entry(entry, cas=cas))

    async def config_list(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        options, store = self.emu.query_context(request)
        if kind not in KNOWN_KINDS:
            raise HttpProblem(500, f"invalid config entry kind: {kind}")
        token = self.emu.acl.resolve(options.token)

        def compute() -> tuple[int, Any]:
            entries = [dict(e) for (k, _), e in sorted(store.config_entries.items())
                       if k == kind and self._can(token, kind, e["Name"], "read")]
            return store.table_index("config-entries"), apply_filter(options.filter, entries)

        index, body = await self.emu.run_query(store, options, [f"config.{kind}"], compute)
        return self.emu.query_response(body, index, options)

    async def config_get(self, request: web.Request) -> web.Response:
        kind, name = request.match_info["kind"], request.match_info["name"]
        options, store = self.emu.query_context(request)
        if kind not in KNOWN_KINDS:
            raise HttpProblem(500, f"invalid config entry kind: {kind}")
        token = self.emu.acl.resolve(options.token)
        if not self._can(token, kind, name, "read"):
            self.emu.acl.require(token, "service", name, "read")

        def compute() -> tuple[int, Any]:
            entry = store.config_entries.get((kind, name))
            return store.table_index("config-entries"), dict(entry) if entry else None

        index, body = await self.emu.run_query(store, options, [f"config.{kind}"], compute)
        if body is None:
            response = text_response(404, f'Config entry not found for "{kind}" / "{name}"')
            response.headers["X-Consul-Index"] = str(max(1, index))
            return response
        return self.emu.query_response(body, index, options)

    async def config_delete(self, request: web.Request) -> web.Response:
        self.emu.check_leader(None)
        kind, name = request.match_info["kind"], request.match_info["name"]
        if kind not in KNOWN_KINDS:
            raise HttpProblem(400, f"invalid config entry kind: {kind}")
        store = self.emu.store(request.query.get("dc") or self.emu.local_dc)
        token = self.emu.acl.resolve(self.emu.token_of(request))
        if not self._can(token, kind, name, "write"):
            self.emu.acl.require(token, "service", name, "write")
        if "cas" in request.query:
            text = request.query["cas"]
            if not text.isdigit():
                raise HttpProblem(400, f'strconv.ParseUint: parsing "{text}": invalid syntax')
            return json_response(store.delete_config_entry(kind, name, cas=int(text)))
        store.delete_config_entry(kind, name)
        return json_response({})

    # -- discovery chain and status ------------------------------------------------------------------------

    async def discovery_chain(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        options, store = self.emu.query_context(request)
        token = self.emu.acl.resolve(options.token)
        self.emu.acl.require(token, "service", name, "read")
        compile_dc = request.query.get("compile-dc") or store.datacenter
        overrides: dict[str, Any] = {}
        if request.method == "POST":
            overrides = await read_json(request) or {}

        def compute() -> tuple[int, Any]:
            return store.table_index("config-entries"), self.emu.render_chain(store, name, compile_dc, overrides)

        index, body = await self.emu.run_query(store, options, CHAIN_TOPICS, compute)
        return self.emu.query_response(body, index, options)

    async def status_leader(self, request: web.Request) -> web.Response:
        return json_response(self.emu.leader_address if self.emu.faults.leader else "")

    async def status_peers(self, request: web.Request) -> web.Response:
        return json_response([self.emu.leader_address] if self.emu.faults.leader else [])
