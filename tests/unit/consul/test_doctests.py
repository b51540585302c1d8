"""The examples in the Consul modules' docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["bexpr", "fields", "entries", "chain", "compile", "state"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"meshlib.discovery.consul.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
