"""The README's snippets run as written.

- Every ```python block runs as a program in a fresh interpreter (one that
  defines ``test_`` functions runs under pytest instead). The "Use" block runs
  as the README says: against ``meshlib demo --serve`` in another process.
- The "Command line" block's one-shot commands (validate, explain, bootstrap,
  --version) run verbatim in a directory whose ``mesh/`` holds the embedded
  bookinfo YAML; the commands that serve until Ctrl-C are exercised by their
  own tests (tests/integration/test_demo.py, controlplane_cli, admin).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ONE_SHOT = ("meshlib validate", "meshlib explain", "meshlib bootstrap", "meshlib --version")


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def python_blocks() -> Iterator[tuple[str, str]]:
    for index, body in enumerate(blocks("python")):
        kind = "use" if "Mesh.from_files()" in body and "reviews:9080" in body else "program"
        if re.search(r"^(async )?def test_", body, re.MULTILINE):
            kind = "pytest"
        yield f"python-{index}-{kind}", body


def run_python(body: str, tmp_path: Path, kind: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / ("test_readme_snippet.py" if kind == "pytest" else "snippet.py")
    script.write_text(body)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)] if kind == "pytest" else [
        sys.executable, str(script)]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


@pytest_asyncio.fixture
async def demo_serving() -> AsyncIterator[None]:
    """``meshlib demo --serve`` in another process, as the README's "Use" section says."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshlib.cli", "demo", "--serve", "--admin-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while not (line := (await proc.stdout.readline()).decode()).lstrip().startswith("admin"):
                assert line, "meshlib demo --serve ended early"
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()


def test_readme_has_the_snippets_this_test_runs() -> None:
    kinds = [name.rsplit("-", 1)[1] for name, _ in python_blocks()]
    assert kinds.count("use") == 1
    assert len(kinds) >= 2
    assert any(line.startswith(ONE_SHOT) for body in blocks("bash") for line in body.splitlines())


@pytest.mark.asyncio
async def test_use_snippet_runs_against_the_serving_demo(demo_serving: None, tmp_path: Path) -> None:
    [body] = [body for name, body in python_blocks() if name.endswith("-use")]
    result = await asyncio.to_thread(run_python, body, tmp_path, "use")
    assert result.returncode == 0, result.stderr
    status, _, text = result.stdout.partition(" ")
    assert status == "200"
    reviews = json.loads(text)
    assert reviews["version"] == "v2"  # end-user: jason → reviews v2, which calls ratings
    assert reviews["ratings"]["stars"] == 5


@pytest.mark.parametrize(("name", "body"), [p for p in python_blocks() if not p[0].endswith("-use")])
def test_python_snippet_runs_as_written(name: str, body: str, tmp_path: Path) -> None:
    if "import grpc" in body:
        pytest.importorskip("grpc")
    result = run_python(body, tmp_path, name.rsplit("-", 1)[1])
    assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
    if "demo.Greeter" in body:
        assert result.stdout.strip() == "hello, mesh"


def one_shot_commands() -> list[str]:
    commands = []
    for body in blocks("bash"):
        for line in body.splitlines():
            if line.startswith(ONE_SHOT):
                commands.append(line.split("  #", 1)[0].strip())
    return commands


@pytest.mark.parametrize("command", one_shot_commands())
def test_command_line_snippet_runs_as_written(command: str, tmp_path: Path) -> None:
    from meshlib.mesh import default_config_path

    shutil.copytree(default_config_path(), tmp_path / "mesh")  # the user's config directory, `mesh/`
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    program = shlex.split(command)[1]
    if program == "explain":
        assert json.loads(result.stdout)["destinations"][0]["subset"] == "v2"
    elif program == "bootstrap":
        assert json.loads((tmp_path / "bootstrap.json").read_text())["node"]["id"] == "app-1"
    elif program == "validate":
        assert result.stdout.startswith("ok: mesh/")
