"""The release room owns the champion: one module reads or moves the alias, and the pipeline
registers and serves in two steps."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg

import cbi_platform
from cbi_platform.release import versions

PACKAGE = Path(cbi_platform.__file__).parent
ALIAS_CALLS = {"alias_version", "set_alias", "delete_registered_model_alias"}
# The tracker defines the generic alias calls; versions.py is the one place that uses them.
ALLOWED = {PACKAGE / "tracking.py", PACKAGE / "release" / "versions.py"}


def _alias_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ALIAS_CALLS
    ]


def test_the_champion_alias_is_read_and_moved_only_in_release_versions():
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in ALLOWED and (lines := _alias_calls(path))
    }
    assert offenders == {}, f"champion alias touched outside release/versions.py: {offenders}"
    assert _alias_calls(PACKAGE / "release" / "versions.py"), "the scan found nothing to find"


def test_the_alias_name_is_defined_once():
    defined = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "CHAMPION" for t in node.targets)
    ]
    assert defined == ["release/versions.py"] and versions.CHAMPION == "champion"


def test_registration_and_serving_are_two_steps_of_the_forecast_stage():
    from cbi_platform.definitions import defs

    graph = defs.resolve_asset_graph()
    forecasts = dg.AssetKey("forecasts")
    registered = dg.AssetKey("registered_version")
    assert registered in graph.get(forecasts).parent_keys
    # Serving reads the release room's decision, not the walk-forward tables it was made from.
    assert dg.AssetKey("oof_predictions") not in graph.get(forecasts).parent_keys
    assert graph.get(registered).group_name == graph.get(forecasts).group_name == "forecasts"
    assert graph.get(registered).partitions_def == graph.get(forecasts).partitions_def
