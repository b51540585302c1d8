"""Consul client settings (Consul's CLI precedence) and the source's rules for rejected entries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshlib.config.model import MeshSnapshot, WorkloadIdentity
from meshlib.discovery.consul.client import ConsulClient, ConsulError, ConsulSettings, _wait_seconds
from meshlib.discovery.consul.source import ConsulConfigSource, _remote_targets, entry_of
from meshlib.discovery.consul.state import ConsulState
from meshlib.errors import ConfigProblem
from tests.ports import free_port


def test_address_token_and_tls_follow_consul_cli_precedence(tmp_path: Any) -> None:
    env = {"CONSUL_HTTP_ADDR": "consul.internal:8501", "CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_SSL": "true"}
    settings = ConsulSettings.resolve(env=env)
    assert settings.base_url == "https://consul.internal:8501"
    assert settings.token == "from-env"
    explicit = ConsulSettings.resolve("127.0.0.1:8500", token="explicit", env=env)
    assert explicit.token == "explicit"  # an argument beats the environment (py-consul does the opposite)
    assert explicit.scheme == "https"  # CONSUL_HTTP_SSL still applies to a bare host:port
    assert ConsulSettings.resolve("http://10.0.0.1", env={}).port == 8500
    assert ConsulSettings.resolve("https://10.0.0.1", env={}).port == 8501
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert ConsulSettings.resolve(env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)}).token == "from-file"
    unverified = ConsulSettings.resolve("https://c:8501", env={"CONSUL_HTTP_SSL_VERIFY": "false"})
    context = unverified.ssl_context()
    assert context is not None
    assert context.check_hostname is False
    assert ConsulSettings.resolve("c:8500", env={}).ssl_context() is None
    unix = ConsulSettings.resolve(env={"CONSUL_HTTP_ADDR": "unix:///var/run/consul.sock"})
    assert (unix.unix_socket, unix.base_url) == ("/var/run/consul.sock", "unix:///var/run/consul.sock")
    with pytest.raises(ValueError, match="unix"):
        ConsulSettings.resolve("unix://", env={})
    with pytest.raises(ValueError, match="scheme"):
        ConsulSettings.resolve("ftp://c:8500", env={})
    with pytest.raises(ValueError, match="port"):
        ConsulSettings.resolve("c:99999", env={})


def test_blocking_timeout_covers_wait_plus_server_jitter() -> None:
    assert _wait_seconds([("index", "5"), ("wait", "57000ms")]) == pytest.approx(57.0)
    assert _wait_seconds([("wait", "57s")]) == 0.0  # no index: Consul does not block
    assert _wait_seconds([("index", "5"), ("wait", "1m")]) == pytest.approx(60.0)


@pytest.mark.asyncio
async def test_transport_failure_is_one_meshlib_error() -> None:
    client = ConsulClient(ConsulSettings.resolve(f"127.0.0.1:{free_port()}", env={}, connect_timeout_s=1.0))
    try:
        with pytest.raises(ConsulError, match="cannot reach Consul") as caught:
            await client.get("/v1/catalog/services")
        assert caught.value.status is None
    finally:
        await client.close()


def test_remote_targets_from_redirects_and_failover() -> None:
    resolvers = [
        {"Kind": "service-resolver", "Name": "web", "Failover": {"*": {"Datacenters": ["dc2", "dc1", "dc3"]}}},
        {"Kind": "service-resolver", "Name": "api", "Redirect": {"Service": "api-v2", "Datacenter": "dc2"}},
        {"Kind": "service-resolver", "Name": "db", "Failover": {"v1": {"Targets": [{"Datacenter": "dc4"},
                                                                                   {"Service": "db2"}]}}},
    ]
    assert _remote_targets(resolvers, "dc1") == {("dc2", "web"), ("dc3", "web"), ("dc2", "api-v2"), ("dc4", "db")}


class RejectingCompiler:
    """Rejects any service-router whose first route has ``"bad": true``; records what it compiled."""

    def __init__(self) -> None:
        self.seen: list[ConsulState] = []

    def __call__(self, state: ConsulState, workload: WorkloadIdentity, *, overlay: Any = ()) -> Any:
        self.seen.append(state)
        problems = [
            ConfigProblem("consul", 0, "service-router", entry["Name"], "Routes[0]", "bad route")
            for entry in state.config_entries.get("service-router", [])
            if entry.get("Routes", [{}])[0].get("bad")
        ]
        return MeshSnapshot(version=state.version(), workload=workload), problems


def _router(name: str, *, bad: bool, marker: int) -> dict[str, Any]:
    return {"Kind": "service-router", "Name": name, "Routes": [{"bad": bad, "marker": marker}]}


@pytest.mark.asyncio
async def test_a_rejected_entry_keeps_its_last_accepted_version_and_the_rest_applies() -> None:
    compiler = RejectingCompiler()
    source = ConsulConfigSource(
        ConsulClient(ConsulSettings.resolve("127.0.0.1:1", env={})), WorkloadIdentity(), lambda s: None,
        services=[], compiler=compiler,
    )
    good_web = _router("web", bad=False, marker=1)
    first = ConsulState("dc1", {"web": []}, {"service-router": [good_web, _router("api", bad=False, marker=1)]})
    _, problems = source.compile(first)
    assert problems == []
    # web's router is edited into something invalid while api's changes validly and health moves
    second = ConsulState(
        "dc1",
        {"web": [{"Service": {"ID": "w1"}}]},
        {"service-router": [_router("web", bad=True, marker=2), _router("api", bad=False, marker=2)]},
    )
    _, problems = source.compile(second)
    assert [(p.kind, p.name, p.field) for p in problems] == [("service-router", "web", "Routes[0]")]
    used = compiler.seen[-1]
    assert used.config_entries["service-router"] == [good_web, _router("api", bad=False, marker=2)]
    assert used.services == second.services
    # later rebuilds (a health change) while the bad edit is still in Consul keep the good version
    later = ConsulState("dc1", {"web": []}, second.config_entries)
    _, problems = source.compile(later)
    assert [p.name for p in problems] == ["web"]
    assert compiler.seen[-1].config_entries["service-router"] == [good_web, _router("api", bad=False, marker=2)]
    # the compiler's other way of naming the entry ("consul KIND/NAME" as the file) is understood too
    assert entry_of(ConfigProblem("consul service-splitter/web", 0, "", "", "Splits", "x")) == (
        "service-splitter", "web")
    # a new invalid entry that was never accepted is left out
    third = ConsulState("dc1", {}, {"service-router": [_router("new", bad=True, marker=1)]})
    _, problems = source.compile(third)
    assert compiler.seen[-1].config_entries["service-router"] == []
    assert problems[0].name == "new"
    await source.close()
    await asyncio.sleep(0)


def test_docstring_examples() -> None:
    import doctest

    import meshlib.discovery.consul.client as client_module
    import meshlib.discovery.consul.watch as watch_module

    for module in (client_module, watch_module):
        result = doctest.testmod(module)
        assert result.attempted >= 2 and result.failed == 0, module.__name__
