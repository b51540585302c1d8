"""``meshlib consul-dev``: the emulator as a foreground process, preloaded from a file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from meshlib.testing.consul import ConsulEmulator
from meshlib.testing.consul.loader import LoadError, load_file

PRELOAD = """
services:
  - {name: reviews, port: 9081, id: reviews-v1, tags: [v1], meta: {version: v1}}
  - {name: reviews, port: 9082, id: reviews-v2, tags: [v2], meta: {version: v2}, status: warning}
config_entries:
  - {Kind: service-defaults, Name: reviews, Protocol: http}
  - Kind: service-resolver
    Name: reviews
    Subsets: {v1: {Filter: "Service.Meta.version == v1"}, v2: {Filter: "Service.Meta.version == v2"}}
  - Kind: service-splitter
    Name: reviews
    Splits: [{Weight: 90, ServiceSubset: v1}, {Weight: 10, ServiceSubset: v2}]
"""


def test_consul_dev_serves_the_preloaded_state_until_sigterm(tmp_path: Path) -> None:
    preload = tmp_path / "consul.yaml"
    preload.write_text(PRELOAD)
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from meshlib.cli import main; sys.exit(main())",
         "consul-dev", "--port", "0", "--load", str(preload)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watchdog = threading.Timer(60, process.kill)  # a hung child ends the reads below instead of the run
    watchdog.start()
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "2 services, 3 config entries loaded" in banner
        export = process.stdout.readline().strip()
        assert export.startswith("export CONSUL_HTTP_ADDR=127.0.0.1:")
        address = export.split("=", 1)[1]
        with urllib.request.urlopen(f"http://{address}/v1/health/service/reviews?passing", timeout=10) as resp:
            passing = json.loads(resp.read())
        assert [e["Service"]["ID"] for e in passing] == ["reviews-v1"]
        with urllib.request.urlopen(f"http://{address}/v1/config/service-splitter/reviews", timeout=10) as resp:
            splitter = json.loads(resp.read())
        assert [s["Weight"] for s in splitter["Splits"]] == [90, 10]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services:\n  - {name: x, port: '80'}\n", "services[0].port: an integer port"),
        ("services:\n  - {name: x, port: 80, colour: red}\n", "services[0]: unknown field(s): colour"),
        ("services:\n  - {name: x, port: 80, status: sideways}\n", "services[0].status"),
        ("config_entries:\n  - {Kind: service-splitter, Name: x, Splits: [{Weight: 50}]}\n",
         "config_entries[0]: service-splitter 'x': the sum of all split weights must be 100"),
        ("config_entries: [1]\n", "config_entries[0]: must be a mapping"),
        ("servics: []\n", "unknown top-level key(s): servics"),
        ("services: [\n", ":2: not valid JSON/YAML"),
    ],
)
def test_load_errors_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LoadError) as caught:
        load_file(ConsulEmulator(), path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_consul_dev_reports_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"services": [{"name": "x"}]}')
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from meshlib.cli import main; sys.exit(main())",
         "consul-dev", "--port", "0", "--load", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"meshlib consul-dev: {path}: services[0].port: an integer port (1-65535)"
