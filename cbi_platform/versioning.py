"""Versions for Dagster's staleness machinery, computed without Dagster.

A code version is a hash of the source of every module a computation can reach (the static
import closure inside the package, function-level imports included), the YAML files beside
those modules (the configuration they read), the versions of the numerical libraries, and
anything the caller adds (a model group's specs, `fit_code_version()`). Reaching too much only
costs a recompute; reaching too little would serve stale tables, so the closure is the whole
static import graph, not a hand-kept list.
A data version is a hash of what an asset read from outside the platform (a frame's content),
so the same delivery makes nothing downstream stale.
"""

from __future__ import annotations

import ast
import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import polars as pl

PACKAGE = "cbi_platform"
# Configuration files beside a module count as its source; these are versioned by the caller
# at a finer grain (each model group's own specs) and left out of the file set.
PER_ASSET_FILES = frozenset({"models/specs.yaml"})
DATA_SUFFIXES = (".yaml", ".yml")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml")
# Libraries whose versions can change what an asset computes.
LIBRARIES = (
    "numpy",
    "polars",
    "scipy",
    "scikit-learn",
    "statsmodels",
    "arch",
    "lightgbm",
    "xgboost",
    "duckdb",
)


@cache
def module_file(name: str) -> Path | None:
    """The source file of a module of the package, found on disk without importing anything
    (None if absent). `importlib.util.find_spec` would import every parent package, and a
    dotted name such as `pkg.module.CONSTANT` would import `pkg.module` itself: seconds at
    every start of the definitions."""
    parts = name.split(".")
    if parts[0] != PACKAGE or not all(p.isidentifier() for p in parts):
        return None
    path = Path(__file__).resolve().parent.joinpath(*parts[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    source = path.with_name(path.name + ".py")
    return source if len(parts) > 1 and source.is_file() else None


@cache
def _imports(name: str) -> frozenset[str]:
    """Modules of the package that `name` imports anywhere in its source."""
    path = module_file(name)
    if path is None:
        return frozenset()
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from package import submodule` imports the submodule.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is not None)


def module_closure(names: Iterable[str]) -> list[str]:
    """Every module of the package reachable from `names` by imports, sorted."""
    seen: set[str] = set()
    todo = [n for n in names if module_file(n) is not None]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parent = name.rpartition(".")[0]
        todo.extend(m for m in _imports(name) if m not in seen)
        if parent and parent not in seen and module_file(parent) is not None:
            todo.append(parent)  # importing a submodule runs its package's __init__
    return sorted(seen)


def _package_root() -> Path:
    return Path(__file__).resolve().parent


def data_files(modules: Iterable[str]) -> list[Path]:
    """The YAML files beside the modules (what they read by default), less PER_ASSET_FILES."""
    root = _package_root()
    folders = {module_file(m).parent for m in modules if module_file(m) is not None}
    files = {
        f
        for folder in folders
        for f in folder.iterdir()
        if f.suffix in DATA_SUFFIXES and f.is_file()
    }
    return sorted(
        f for f in files if f.resolve().relative_to(root).as_posix() not in PER_ASSET_FILES
    )


@cache
def _library_versions() -> tuple[tuple[str, str], ...]:
    versions = []
    for name in LIBRARIES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, "absent"))
    versions.append(("python", platform.python_version()))
    return tuple(versions)


def library_versions() -> dict[str, str]:
    return dict(_library_versions())


def source_version(modules: Iterable[str], extra: Mapping[str, object] | None = None) -> str:
    """sha256 (first 16 hex digits) of the import closure of `modules`: each module's name and
    source, the YAML files beside them, the library versions, and `extra` (JSON)."""
    closure = module_closure(modules)
    root = _package_root()
    digest = hashlib.sha256()
    for name in closure:
        digest.update(name.encode() + b"\0")
        digest.update(module_file(name).read_bytes())
    for path in data_files(closure):
        digest.update(path.resolve().relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    digest.update(json.dumps(library_versions(), sort_keys=True).encode())
    digest.update(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def frame_version(frame: pl.DataFrame) -> str:
    """sha256 (first 16 hex digits) of a frame's schema and content, row order included."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[n, str(t)] for n, t in frame.schema.items()]).encode())
    digest.update(str(frame.height).encode())
    if frame.height and frame.width:
        hashes = frame.hash_rows(seed=0, seed_1=1, seed_2=2, seed_3=3)
        digest.update(hashes.to_numpy().tobytes())
    return digest.hexdigest()[:16]


def config_fingerprint(configs: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Per named configuration, a hash of its values and of the content of every value that
    names an existing configuration file (a protocol or specs YAML; not a database): what a
    run was configured with."""
    out = {}
    for name, config in sorted(configs.items()):
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        for value in config.values():
            if isinstance(value, str) and value.endswith(CONFIG_SUFFIXES) and Path(value).is_file():
                digest.update(Path(value).read_bytes())
        out[name] = digest.hexdigest()[:16]
    return out
