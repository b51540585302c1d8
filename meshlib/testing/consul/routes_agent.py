"""``/v1/agent/*`` handlers: the local agent's services, checks and maintenance."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshlib.testing.consul.agent import AgentError
from meshlib.testing.consul.http_query import HttpProblem, json_response, parse_go_bool, parse_query, text_response
from meshlib.testing.consul.registration import CHECK_SCHEMA, RegistrationError, build_check, decode_registration
from meshlib.testing.consul.render import agent_check_json, agent_service_json, aggregated_status, check_json
from meshlib.testing.consul.routes_catalog import apply_filter, read_json
from meshlib.testing.consul.schema import STR, DecodeError, Obj, decode
from meshlib.testing.consul.state import CRITICAL, PASSING, STATUS_ORDER, WARNING, CheckRecord

if TYPE_CHECKING:
    from meshlib.testing.consul.emulator import ConsulEmulator

_CHECK_REGISTER = Obj({**CHECK_SCHEMA.fields, "ServiceID": STR}, aliases=dict(CHECK_SCHEMA.aliases))
_CHECK_UPDATE = Obj({"Status": STR, "Output": STR})


class AgentRoutes:
    def __init__(self, emulator: ConsulEmulator) -> None:
        self.emu = emulator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/agent/self", self.self_info),
            web.get("/v1/agent/services", self.services),
            web.get("/v1/agent/service/{service_id}", self.service),
            web.get("/v1/agent/checks", self.checks),
            web.put("/v1/agent/service/register", self.register),
            web.put("/v1/agent/service/deregister/{service_id}", self.deregister),
            web.put("/v1/agent/service/maintenance/{service_id}", self.service_maintenance),
            web.put("/v1/agent/maintenance", self.node_maintenance),
            web.put("/v1/agent/check/register", self.check_register),
            web.put("/v1/agent/check/deregister/{check_id}", self.check_deregister),
            web.put("/v1/agent/check/pass/{check_id}", self.check_pass),
            web.put("/v1/agent/check/warn/{check_id}", self.check_warn),
            web.put("/v1/agent/check/fail/{check_id}", self.check_fail),
            web.put("/v1/agent/check/update/{check_id}", self.check_update),
            web.get("/v1/agent/health/service/id/{service_id}", self.local_health_by_id),
            web.get("/v1/agent/health/service/name/{name}", self.local_health_by_name),
        ]

    def _token(self, request: web.Request) -> Any:
        return self.emu.acl.resolve(self.emu.token_of(request))

    async def self_info(self, request: web.Request) -> web.Response:
        token = self._token(request)
        self.emu.acl.require(token, "agent", self.emu.agent.node, "read")
        agent = self.emu.agent
        node = self.emu.local_store.nodes.get(agent.node)
        return json_response({
            "Config": {
                "Datacenter": self.emu.local_dc, "PrimaryDatacenter": self.emu.local_dc, "NodeName": agent.node,
                "NodeID": node.node_id if node else "", "Revision": "emulator", "Server": True,
                "Version": self.emu.version, "BuildDate": "2024-01-01T00:00:00Z",
            },
            "DebugConfig": {"Datacenter": self.emu.local_dc, "NodeName": agent.node},
            "Coord": None,
            "Member": {"Name": agent.node, "Addr": agent.address, "Port": 8301, "Tags": {"dc": self.emu.local_dc},
                       "Status": 1},
            "Stats": {},
            "Meta": {"consul-network-segment": ""},
        })

    async def services(self, request: web.Request) -> web.Response:
        token = self._token(request)
        services = {s.service_id: agent_service_json(s, self.emu.local_dc) for s in self.emu.agent.services()
                    if self.emu.acl.allows(token, "service", s.name, "read")}
        expression = request.query.get("filter", "")
        if expression:
            kept = apply_filter(expression, list(services.values()))
            services = {s["ID"]: s for s in kept}
        return json_response(services)

    async def service(self, request: web.Request) -> web.Response:
        """One local service, with Consul's hash-based blocking (``?hash=`` + ``wait``)."""
        service_id = request.match_info["service_id"]
        record = self.emu.agent.service(service_id)
        if record is None:
            raise HttpProblem(404, f"unknown service ID: {service_id}")
        self.emu.acl.require(self._token(request), "service", record.name, "read")
        options = parse_query(request, self.emu.local_dc)
        store, name = self.emu.local_store, record.name

        def current() -> dict[str, Any] | None:
            found = self.emu.agent.service(service_id)
            if found is None:
                return None
            body = agent_service_json(found, self.emu.local_dc)
            digest = hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=8).hexdigest()
            return {**body, "ContentHash": digest}

        body = current()
        wanted = request.query.get("hash", "")
        if wanted and body is not None and body["ContentHash"] == wanted:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + options.wait + self.emu.rng.random() * options.wait / 16
            while body is not None and body["ContentHash"] == wanted and loop.time() < deadline:
                await store.wait_for_change([f"service.{name}"], deadline - loop.time())
                if self.emu.stopping:
                    break
                body = current()
        if body is None:
            raise HttpProblem(404, f"unknown service ID: {service_id}")
        return json_response(body, headers={"X-Consul-ContentHash": body["ContentHash"]})

    async def checks(self, request: web.Request) -> web.Response:
        token = self._token(request)
        agent = self.emu.agent
        out = {}
        for (node, check_id), check in sorted(self.emu.local_store.checks.items()):
            if node != agent.node:
                continue
            resource, name = ("service", check.service_name) if check.service_id else ("node", node)
            if self.emu.acl.allows(token, resource, name, "read"):
                out[check_id] = agent_check_json(check)
        return json_response(out)

    async def register(self, request: web.Request) -> web.Response:
        # No leader check: an agent accepts registrations into its local state without one.
        body = await read_json(request)
        try:
            registration = decode_registration(body, node=self.emu.agent.node)
        except RegistrationError as exc:
            raise HttpProblem(exc.status, str(exc)) from None
        self.emu.acl.require(self._token(request), "service", registration.service.name, "write")
        replace = "replace-existing-checks" in request.query and request.query["replace-existing-checks"] in (
            "", "true")
        self.emu.agent.register(registration, replace_existing_checks=replace)
        return web.Response(status=200)

    async def deregister(self, request: web.Request) -> web.Response:
        service_id = request.match_info["service_id"]
        record = self.emu.agent.service(service_id)
        if record is not None:
            self.emu.acl.require(self._token(request), "service", record.name, "write")
        self._agent_call(lambda: self.emu.agent.deregister(service_id))
        return web.Response(status=200)

    async def service_maintenance(self, request: web.Request) -> web.Response:
        service_id = request.match_info["service_id"]
        enable = self._enable_flag(request)
        record = self.emu.agent.service(service_id)
        if record is not None:
            self.emu.acl.require(self._token(request), "service", record.name, "write")
        reason = request.query.get("reason", "")
        self._agent_call(lambda: self.emu.agent.service_maintenance(service_id, enable, reason))
        return web.Response(status=200)

    async def node_maintenance(self, request: web.Request) -> web.Response:
        enable = self._enable_flag(request)
        self.emu.acl.require(self._token(request), "node", self.emu.agent.node, "write")
        self.emu.agent.node_maintenance(enable, request.query.get("reason", ""))
        return web.Response(status=200)

    @staticmethod
    def _enable_flag(request: web.Request) -> bool:
        raw = request.query.get("enable", "")
        if not raw:
            raise HttpProblem(400, "Missing value for enable")
        value = parse_go_bool(raw)
        if value is None:
            raise HttpProblem(400, f'Invalid value for enable: "{raw}"')
        return value

    @staticmethod
    def _agent_call(call: Any) -> None:
        try:
            call()
        except AgentError as exc:
            raise HttpProblem(exc.status, str(exc)) from None

    async def check_register(self, request: web.Request) -> web.Response:
        try:
            data = decode(await read_json(request), _CHECK_REGISTER, strict=False) or {}
        except DecodeError as exc:
            raise HttpProblem(400, f"Request decode failed: {exc}") from None
        agent = self.emu.agent
        if not data.get("Name"):
            raise HttpProblem(400, "Missing check name")
        service_id = data.get("ServiceID") or ""
        service = agent.service(service_id) if service_id else None
        if service_id and service is None:
            raise HttpProblem(404, f'ServiceID "{service_id}" does not exist')
        token = self._token(request)
        if service is not None:
            self.emu.acl.require(token, "service", service.name, "write")
        else:
            self.emu.acl.require(token, "node", agent.node, "write")
        try:
            spec = build_check(data, default_id=data["Name"], default_name=data["Name"], service_id=service_id)
        except RegistrationError as exc:
            raise HttpProblem(exc.status, str(exc)) from None
        agent.ensure_node()
        existing = agent.check(spec.check_id)
        status = existing.status if existing is not None else spec.status
        self.emu.local_store.set_check(CheckRecord(
            node=agent.node, check_id=spec.check_id, name=spec.name, status=status, notes=spec.notes,
            service_id=service_id, type=spec.type, definition=spec.definition,
        ))
        agent.runner.add(spec, agent.node, status)
        return web.Response(status=200)

    async def check_deregister(self, request: web.Request) -> web.Response:
        check_id = request.match_info["check_id"]
        agent = self.emu.agent
        check = agent.check(check_id)
        if check is None:
            raise HttpProblem(404, f'Unknown check ID "{check_id}"')
        self.emu.acl.require(self._token(request), *self._check_resource(check), "write")
        agent.runner.remove(check_id)
        self.emu.local_store.delete_check(agent.node, check_id)
        return web.Response(status=200)

    def _check_resource(self, check: CheckRecord) -> tuple[str, str]:
        return ("service", check.service_name) if check.service_id else ("node", check.node)

    async def _ttl(self, request: web.Request, status: str, output: str) -> web.Response:
        check_id = request.match_info["check_id"]
        check = self.emu.agent.check(check_id)
        if check is not None:
            self.emu.acl.require(self._token(request), *self._check_resource(check), "write")
        self._agent_call(lambda: self.emu.agent.update_ttl(check_id, status, output))
        return web.Response(status=200)

    async def check_pass(self, request: web.Request) -> web.Response:
        return await self._ttl(request, PASSING, request.query.get("note", ""))

    async def check_warn(self, request: web.Request) -> web.Response:
        return await self._ttl(request, WARNING, request.query.get("note", ""))

    async def check_fail(self, request: web.Request) -> web.Response:
        return await self._ttl(request, CRITICAL, request.query.get("note", ""))

    async def check_update(self, request: web.Request) -> web.Response:
        try:
            data = decode(await read_json(request), _CHECK_UPDATE, strict=False) or {}
        except DecodeError as exc:
            raise HttpProblem(400, f"Request decode failed: {exc}") from None
        status = data.get("Status") or ""
        if status not in STATUS_ORDER:
            raise HttpProblem(400, f"Invalid check status: '{status}'")
        return await self._ttl(request, status, data.get("Output") or "")

    # -- local health (GET /v1/agent/health/service/{id,name}/…): 200 passing, 429 warning, 503 otherwise --

    def _local_health(self, service_id: str) -> tuple[int, str, dict[str, Any]]:
        agent = self.emu.agent
        record = agent.service(service_id)
        assert record is not None
        checks = agent.store.checks_for(agent.node, service_id)
        status = aggregated_status(checks)
        code = {"passing": 200, "warning": 429}.get(status, 503)
        info = {"AggregatedStatus": status, "Service": agent_service_json(record, self.emu.local_dc),
                "Checks": [check_json(c) for c in checks]}
        return code, status, info

    @staticmethod
    def _wants_text(request: web.Request) -> bool:
        if request.headers.get("Accept", "").startswith("text/plain"):
            return True
        return request.query.get("format", "") == "text"

    async def local_health_by_id(self, request: web.Request) -> web.Response:
        service_id = request.match_info["service_id"]
        record = self.emu.agent.service(service_id)
        if record is None:
            reason = f"ServiceId {service_id} not found"
            if self._wants_text(request):
                return text_response(404, reason)
            return json_response({"AggregatedStatus": "critical", "Service": None, "Checks": None}, status=404)
        self.emu.acl.require(self._token(request), "service", record.name, "read")
        code, status, info = self._local_health(service_id)
        if self._wants_text(request):
            return text_response(code, status)
        return json_response(info, status=code)

    async def local_health_by_name(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.emu.acl.require(self._token(request), "service", name, "read")
        code, status, results = 404, f"ServiceName {name} Not Found", []
        for record in self.emu.agent.services():
            if record.name != name:
                continue
            one_code, one_status, info = self._local_health(record.service_id)
            results.append(info)
            if code == 404 or one_code > code:
                code, status = one_code, one_status
        if self._wants_text(request):
            return text_response(code, status)
        return json_response(results, status=code)
