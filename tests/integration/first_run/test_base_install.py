"""After a base install (no ``grpc``/``xds`` extra), every command works or says in one line which extra it needs.

The subprocesses run with ``no_xds_extra/`` on ``PYTHONPATH``: its ``sitecustomize``
makes grpc, protobuf and the xDS proto packages unimportable, as on a machine
where only ``pip install meshlib`` ran. The control plane that ``meshlib status``
reads is a real one, started (with the extras) by this test process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

pytestmark = pytest.mark.asyncio

BLOCKER = Path(__file__).parent / "no_xds_extra"
XDS_HINT = "pip install 'meshlib[xds]'"
READY = re.compile(r"ADS on (?P<ads>\S+), status on http://(?P<status>[^/\s]+)/status")


async def run_base(*args: str, code: str | None = None) -> tuple[int, str, str]:
    """``meshlib ARGS`` (or ``python -c CODE``) as after a base install."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BLOCKER), os.environ.get("PYTHONPATH")]))}
    argv = ["-c", code] if code is not None else ["-m", "meshlib.cli", *args]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_blocker_really_blocks_the_extras() -> None:
    code, out, _ = await run_base(code=(
        "import importlib\n"
        "for name in ('grpc', 'google.protobuf', 'envoy.config.core.v3.base_pb2'):\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n        print('blocked', name)\n"
    ))
    assert code == 0
    assert out.split("\n")[:3] == ["blocked grpc", "blocked google.protobuf", "blocked envoy.config.core.v3.base_pb2"]


async def test_bootstrap_needs_no_protobuf() -> None:
    code, out, err = await run_base("bootstrap", "--xds", "127.0.0.1:15010", "--node-id", "app-1")
    assert (code, err) == (0, "")
    bootstrap = json.loads(out)
    assert bootstrap["xds_servers"][0]["server_uri"] == "127.0.0.1:15010"
    assert bootstrap["node"]["id"] == "app-1"


@pytest_asyncio.fixture
async def control_plane_status() -> AsyncIterator[str]:
    """A real ``meshlib control-plane`` (with the extras) on free ports; yields its status address."""
    from meshlib.mesh import default_config_path

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshlib.cli", "control-plane", "--config", str(default_config_path()),
        "--port", "0", "--status-port", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        match = READY.search(line)
        assert match, line
        yield match["status"]
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await process.wait()


async def test_status_reads_a_control_plane_without_protobuf(control_plane_status: str) -> None:
    code, out, err = await run_base("status", "--control-plane", control_plane_status)
    assert (code, err) == (0, "")
    assert out.split()[:6] == ["NODE", "CLIENT", "CDS", "LDS", "EDS", "RDS"], out  # the table, no client yet


async def test_control_plane_names_the_extra_in_one_line() -> None:
    from meshlib.mesh import default_config_path

    code, out, err = await run_base("control-plane", "--config", str(default_config_path()), "--port", "0")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("meshlib control-plane: ") and XDS_HINT in err


@pytest.mark.parametrize(
    ("call", "extra"),
    [
        ("meshlib.Mesh.from_xds('127.0.0.1:15010', node_id='a')", "xds"),
        ("meshlib.Mesh.from_files().grpc_channel('reviews:9080')", "grpc"),
        ("meshlib.Mesh.from_files().grpc_server_interceptor()", "grpc"),
        ("__import__('meshlib.grpc').grpc.xds_channel", "xds"),
        ("meshlib.Mesh.from_consul('127.0.0.1:8500')", "consul"),
    ],
)
async def test_api_raises_missing_extra_naming_it(call: str, extra: str) -> None:
    code, out, err = await run_base(code=(
        "import meshlib\nfrom meshlib.extras import MissingExtra\n"
        f"try:\n    {call}\nexcept MissingExtra as exc:\n    print(exc)\n"
    ))
    assert (code, err) == (0, "")
    assert f"needs the '{extra}' extra" in out and f"pip install 'meshlib[{extra}]'" in out


async def test_routing_explain_and_the_demo_work_from_the_base_install() -> None:
    code, out, err = await run_base("explain", "-H", "end-user:jason", "GET", "http://reviews:9080/reviews/1")
    assert code == 0, err
    assert json.loads(out)["destinations"][0]["subset"] == "v2"
    code, out, err = await run_base("demo", "--fast", "--scenes", "headers,trace")
    assert code == 0, err
    assert "all 3 claims held across 2 scenes" in out


async def test_consul_options_name_the_consul_extra() -> None:
    code, out, err = await run_base("validate", "--consul", "127.0.0.1:8500")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("meshlib validate: ") and "pip install 'meshlib[consul]'" in err
