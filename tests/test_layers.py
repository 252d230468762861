"""Every module and package of arbitrage sits in a layer of the import-linter contract
(pyproject.toml): a new one left out would be unconstrained, and `lint-imports` would not say so."""

from pathlib import Path

import pytest

import arbitrage

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).parent.parent
PACKAGE = Path(arbitrage.__file__).parent


def test_every_top_level_module_is_in_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    here = {f"arbitrage.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    here |= {f"arbitrage.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert sorted(here - named) == []
