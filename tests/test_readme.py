"""The README's snippets run as written.

- The one-shot commands of every ```bash block (validate, explain, bootstrap,
  ``ca``, --version) run verbatim, in README order, in one directory whose
  ``mesh/`` holds the embedded bookinfo YAML — a reader following the README,
  so ``bootstrap --certs certs/reviews/`` finds what ``ca issue`` wrote. The
  commands that serve until Ctrl-C are exercised by their own tests
  (tests/integration/test_demo.py, controlplane_cli, admin); the ``--consul``
  ones need an agent and are the Consul tests' (tests/integration/consul).
- Every ```python block runs as a program in a fresh interpreter, in that
  directory (one that defines ``test_`` functions runs under pytest). The
  "Use" block runs as the README says: against ``meshlib demo --serve`` in
  another process. A block the README marks ``<!-- not run: reason -->`` is
  reported as skipped with that reason; at most two may be.
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
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")
ONE_SHOT = ("meshlib validate", "meshlib explain", "meshlib bootstrap", "meshlib --version", "meshlib ca ")


def readme_blocks() -> list[tuple[str, str, str | None]]:
    """``(language, body, reason)`` per fenced block; ``reason`` from a ``<!-- not run: … -->`` line just above."""
    text = README.read_text()
    found = []
    for match in BLOCK.finditer(text):
        above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(above)
        found.append((match[1], match[2], marker[1] if marker else None))
    return found


def blocks(language: str) -> list[str]:
    return [body for lang, body, _ in readme_blocks() if lang == language]


def python_blocks() -> Iterator[tuple[str, str, str | None]]:
    python = [(body, reason) for lang, body, reason in readme_blocks() if lang == "python"]
    for index, (body, reason) in enumerate(python):
        kind = "use" if "Mesh.from_files()" in body and "reviews:9080" in body else "program"
        if re.search(r"^(async )?def test_", body, re.MULTILINE):
            kind = "pytest"
        yield f"python-{index}-{kind}", body, reason


def run_python(body: str, cwd: Path, kind: str) -> subprocess.CompletedProcess[str]:
    script = cwd / ("test_readme_snippet.py" if kind == "pytest" else "readme_snippet.py")
    script.write_text(body)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)] if kind == "pytest" else [
        sys.executable, str(script)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def one_shot_commands() -> list[str]:
    """The README's commands that run and return (not servers), in README order; Consul ones need an agent."""
    commands = []
    for body in blocks("bash"):
        for line in body.splitlines():
            if line.startswith(ONE_SHOT) and "--consul" not in line:
                commands.append(line.split("  #", 1)[0].strip())
    return commands


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, subprocess.CompletedProcess[str]]]:
    """A directory where a reader followed the README: ``mesh/`` holds their (the bookinfo) YAML and every
    one-shot command ran in README order, so later ones find what earlier ones wrote (``ca/``, ``certs/``)."""
    from meshlib.mesh import default_config_path

    directory = tmp_path_factory.mktemp("readme")
    shutil.copytree(default_config_path(), directory / "mesh")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    results = {
        command: subprocess.run(command, shell=True, cwd=directory, env=env, capture_output=True, text=True,
                                timeout=60, check=False)
        for command in one_shot_commands()
    }
    return directory, results


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
    kinds = [name.rsplit("-", 1)[1] for name, _, reason in python_blocks() if reason is None]
    assert kinds.count("use") == 1
    assert len(kinds) >= 2
    assert len(one_shot_commands()) >= 5
    not_run = [reason for _, _, reason in readme_blocks() if reason is not None]
    assert len(not_run) <= 2, f"most snippets must run as written; marked not run: {not_run}"


@pytest.mark.asyncio
async def test_use_snippet_runs_against_the_serving_demo(demo_serving: None, tmp_path: Path) -> None:
    [body] = [body for name, body, _ in python_blocks() if name.endswith("-use")]
    result = await asyncio.to_thread(run_python, body, tmp_path, "use")
    assert result.returncode == 0, result.stderr
    status, _, text = result.stdout.partition(" ")
    assert status == "200"
    reviews = json.loads(text)
    assert reviews["version"] == "v2"  # end-user: jason → reviews v2, which calls ratings
    assert reviews["ratings"]["stars"] == 5


@pytest.mark.parametrize(("name", "body", "not_run"), [p for p in python_blocks() if not p[0].endswith("-use")])
def test_python_snippet_runs_as_written(
    name: str, body: str, not_run: str | None,
    walkthrough: tuple[Path, dict[str, subprocess.CompletedProcess[str]]],
) -> None:
    if not_run is not None:
        pytest.skip(f"marked in the README as not run: {not_run}")
    if "import grpc" in body:
        pytest.importorskip("grpc")
    result = run_python(body, walkthrough[0], name.rsplit("-", 1)[1])
    assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
    if "demo.Greeter" in body:
        assert result.stdout.strip() == "hello, mesh"


@pytest.mark.parametrize("command", one_shot_commands())
def test_command_line_snippet_runs_as_written(
    command: str, walkthrough: tuple[Path, dict[str, subprocess.CompletedProcess[str]]],
) -> None:
    directory, results = walkthrough
    result = results[command]
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    program = shlex.split(command)[1]
    if program == "explain" and "--inbound" in command:
        # The walkthrough's mesh/ is the embedded bookinfo, which has no AuthorizationPolicy.
        decision = json.loads(result.stdout)
        assert (decision["allowed"], decision["reason"]) == (True, "no AuthorizationPolicy applies to this workload")
    elif program == "explain":
        assert json.loads(result.stdout)["destinations"][0]["subset"] == "v2"
    elif program == "bootstrap":
        assert json.loads((directory / "bootstrap.json").read_text())["node"]["id"]
    elif program == "validate":
        assert result.stdout.startswith("ok: mesh/")
