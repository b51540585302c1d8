"""The Consul contract suite: the same tests against the emulator or a real agent.

By default every test runs against ``meshlib.testing.consul.ConsulEmulator``
(started in a background thread, so py-consul's blocking client and aiohttp
both work). With ``CONSUL_HTTP_ADDR`` set (and ``CONSUL_HTTP_TOKEN`` when the
agent has ACLs on) the same tests run against that agent instead; tests that
need an emulator-only control are skipped with that reason. A real agent for
this is e.g. ``consul agent -dev`` (``CONSUL_HTTP_ADDR=127.0.0.1:8500``).

With ``CONSUL_RECORD_GOLDEN=1`` as well, tests save what the real agent
answered under ``tests/contract/consul/golden/`` (``target.record(name, body)``);
on every later run against the emulator, the same ``record`` call checks the
emulator's answer against that recording key by key (``shapes.py``).
``test_golden_shapes.py`` does the same with Consul's documented samples.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import consul as pyconsul
import pytest

from meshlib.testing.consul import consul_emulator_in_thread
from meshlib.testing.consul.fixtures import ThreadedEmulator
from tests.contract.consul.shapes import shape_problems

GOLDEN_DIR = Path(__file__).parent / "golden"
REAL_AGENT = os.environ.get("CONSUL_HTTP_ADDR", "")
SKIP_REAL = "needs an emulator-only control; running against the real agent at CONSUL_HTTP_ADDR"


@dataclass
class ConsulTarget:
    """What a contract test talks to: ``address`` plus, for the emulator, its controls."""

    address: str
    token: str = ""
    emulator: ThreadedEmulator | None = None
    cleanups: list[tuple[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.address if "://" in self.address else f"http://{self.address}"

    @property
    def is_real(self) -> bool:
        return self.emulator is None

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.token} if self.token else {}

    def client(self) -> pyconsul.Consul:
        host, _, port = self.address.rpartition(":")
        return pyconsul.Consul(host=host.split("://")[-1], port=int(port), token=self.token or None)

    def emu(self) -> ThreadedEmulator:
        if self.emulator is None:
            pytest.skip(SKIP_REAL)
        return self.emulator

    def record(self, name: str, body: Any) -> None:
        """Real agent + CONSUL_RECORD_GOLDEN=1: save ``body`` as ``golden/<name>.json``.

        Emulator: when that recording exists, the emulator's ``body`` must have every key it has.
        """
        golden = GOLDEN_DIR / f"{name}.json"
        if self.is_real:
            if os.environ.get("CONSUL_RECORD_GOLDEN") == "1":
                GOLDEN_DIR.mkdir(exist_ok=True)
                golden.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        elif golden.exists():
            problems = shape_problems(json.loads(golden.read_text()), body)
            assert problems == [], f"emulator answer differs from the real agent's ({golden.name}): {problems}"

    def deregister_later(self, kind: str, name: str) -> None:
        self.cleanups.append((kind, name))

    async def register_service(
        self, http: aiohttp.ClientSession, body: dict[str, Any], service_id: str | None = None
    ) -> None:
        """``PUT /v1/agent/service/register`` (it must answer 200); the service is deregistered
        after the test (by ``service_id``, else the body's ``ID``, else its ``Name``)."""
        async with http.put(f"{self.url}/v1/agent/service/register", json=body) as resp:
            assert resp.status == 200, await resp.text()
        self.deregister_later("service", service_id or str(body.get("ID", body["Name"])))


@pytest.fixture
def consul_target() -> Iterator[ConsulTarget]:
    if REAL_AGENT:
        target = ConsulTarget(REAL_AGENT, token=os.environ.get("CONSUL_HTTP_TOKEN", ""))
        yield target
        client = target.client()
        for kind, name in reversed(target.cleanups):
            if kind == "service":
                client.agent.service.deregister(name)
            else:
                client.config.delete(kind, name)
        return
    with consul_emulator_in_thread(set_env=False) as emulator:
        yield ConsulTarget(emulator.address, emulator=emulator)


@pytest.fixture
def consul_http_addr(consul_target: ConsulTarget) -> str:
    """``host:port`` of the Consul HTTP API under test (emulator unless CONSUL_HTTP_ADDR is set)."""
    return consul_target.address


@pytest.fixture
def unique() -> str:
    """A name no other test (or earlier run against a real agent) uses."""
    return f"ct-{uuid.uuid4().hex[:10]}"
