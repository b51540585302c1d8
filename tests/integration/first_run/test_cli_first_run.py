"""The command line as a new user meets it: --version, help, defaults, and pipes closed early."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import meshlib
from meshlib.cli import build_parser, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"meshlib {meshlib.__version__}"


def test_every_positional_argument_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():  # type: ignore[attr-defined]
        for action in sub._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"meshlib {name}: positional {action.dest!r} has no help"


def test_validate_defaults_to_the_embedded_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    from meshlib.mesh import default_config_path

    assert main(["validate"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {default_config_path()}")


def test_explain_into_a_closed_pipe_is_quiet() -> None:
    # `meshlib explain ... | head -1`: head exits after one line while explain still writes.
    pipeline = subprocess.run(
        f"{sys.executable} -m meshlib.cli explain GET http://reviews:9080/reviews/1 | head -1",
        shell=True, capture_output=True, text=True, timeout=60, check=False,
    )
    assert pipeline.stdout == "{\n"
    assert "Traceback" not in pipeline.stderr and "BrokenPipeError" not in pipeline.stderr
    assert pipeline.stderr == ""


def test_broken_pipe_exit_status(tmp_path: object) -> None:
    # Without `head` racing: a reader that closes at once; explain exits 141 (128 + SIGPIPE), silently.
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlib.cli", "explain", "GET", "http://reviews:9080/reviews/1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141)  # 0 only if the whole JSON fit the pipe before it closed
    assert err == ""
