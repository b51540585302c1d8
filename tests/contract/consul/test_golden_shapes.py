"""The emulator's answers carry every key of Consul's documented sample responses."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from tests.contract.consul.conftest import ConsulTarget
from tests.contract.consul.shapes import shape_problems

DOCS = Path(__file__).parent / "golden" / "docs"


def test_shape_comparison_finds_missing_keys_and_wrong_types() -> None:
    expected = {"A": 1, "B": {"C": "x"}, "Meta": {"user": "v"}, "Namespace": "default", "L": [{"D": True}]}
    assert shape_problems(expected, {"A": 2, "B": {"C": "y"}, "Meta": {}, "L": [{"D": False}]}) == []
    assert shape_problems(expected, {"A": "2", "B": {}, "Meta": {}, "L": [{"D": 1}]}) == [
        "$.A: expected a number, got '2'", "$.B.C: missing", "$.L[0].D: expected a bool"]


@pytest.mark.asyncio
async def test_health_service_matches_the_documented_sample(consul_target: ConsulTarget, unique: str) -> None:
    sample = json.loads((DOCS / "health_service.json").read_text())
    body = {"Name": unique, "ID": unique, "Tags": ["primary"], "Address": "10.1.10.12", "Port": 8000,
            "Meta": {"redis_version": "4.0"}, "Weights": {"Passing": 10, "Warning": 1},
            "TaggedAddresses": {"lan": {"Address": "10.1.10.12", "Port": 8000},
                                "wan": {"Address": "198.18.1.2", "Port": 80}},
            "Check": {"TTL": "30s", "Status": "passing"}}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, body, unique)
        async with http.get(f"{consul_target.url}/v1/health/service/{unique}") as resp:
            actual = await resp.json()
    checks = actual[0]["Checks"]
    actual[0]["Checks"] = sorted(checks, key=lambda c: c["CheckID"] == "serfHealth")  # the sample's order
    assert shape_problems(sample, actual) == []


@pytest.mark.asyncio
async def test_catalog_service_matches_the_documented_sample(consul_target: ConsulTarget, unique: str) -> None:
    sample = json.loads((DOCS / "catalog_service.json").read_text())
    body = {"Name": unique, "ID": unique, "Tags": ["prod"], "Address": "172.17.0.3", "Port": 5000,
            "Meta": {"web_meta_value": "baz"},
            "TaggedAddresses": {"lan": {"Address": "172.17.0.3", "Port": 5000}}}
    async with aiohttp.ClientSession(headers=consul_target.headers) as http:
        await consul_target.register_service(http, body, unique)
        async with http.get(f"{consul_target.url}/v1/catalog/service/{unique}") as resp:
            actual = await resp.json()
    assert shape_problems(sample, actual) == []
