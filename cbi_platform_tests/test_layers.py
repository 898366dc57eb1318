"""The import-linter contracts in pyproject.toml hold, and a broken contract is reported."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(*config: Path) -> subprocess.CompletedProcess:
    args = [str(LINT_IMPORTS), "--no-cache", *map(str, config)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_are_kept():
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_cover_layers_dagster_and_circles():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    by_id = {c["id"]: c for c in contracts["contracts"]}
    assert by_id["layers"]["type"] == "layers" and by_id["layers"]["exhaustive"] is True
    assert by_id["no-dagster-below-defs"]["forbidden_modules"] == ["dagster"]
    assert by_id["no-circles"]["type"] == "acyclic_siblings"


def test_an_upward_import_breaks_a_contract(tmp_path):
    """explain imports models (legal); a contract that puts models above explain must fail."""
    config = tmp_path / "inverted.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_package = "cbi_platform"\n\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "models above explain (deliberately wrong)"\n'
        'type = "layers"\n'
        'layers = ["cbi_platform.models", "cbi_platform.explain"]\n'
    )
    result = _lint(config)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "cbi_platform.explain is not allowed to import cbi_platform.models" in result.stdout
