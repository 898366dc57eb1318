"""versioning: code versions follow the source (and YAML) a module reaches; data versions and
configuration fingerprints follow content."""

from pathlib import Path

import polars as pl
import pytest

from cbi_platform import versioning


@pytest.fixture
def fake_modules(tmp_path, monkeypatch):
    """Three modules of the package on disk: a imports b; c stands alone; a YAML beside b."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    files = {
        "cbi_platform.fake_a": tmp_path / "a" / "mod.py",
        "cbi_platform.fake_b": tmp_path / "b" / "mod.py",
        "cbi_platform.fake_c": tmp_path / "c" / "mod.py",
    }
    files["cbi_platform.fake_a"].write_text("def f():\n    from cbi_platform import fake_b\n")
    files["cbi_platform.fake_b"].write_text("X = 1\n")
    files["cbi_platform.fake_c"].write_text("Y = 1\n")
    (tmp_path / "b" / "settings.yaml").write_text("k: 1\n")
    monkeypatch.setattr(versioning, "module_file", lambda name: files.get(name))
    monkeypatch.setattr(versioning, "_package_root", lambda: tmp_path)
    versioning._imports.cache_clear()
    yield files
    versioning._imports.cache_clear()


def test_the_closure_follows_imports_inside_functions(fake_modules):
    assert versioning.module_closure(["cbi_platform.fake_a"]) == [
        "cbi_platform.fake_a",
        "cbi_platform.fake_b",
    ]


def test_the_code_version_changes_with_the_source_of_an_imported_module(fake_modules):
    before = versioning.source_version(["cbi_platform.fake_a"])
    assert versioning.source_version(["cbi_platform.fake_a"]) == before
    fake_modules["cbi_platform.fake_c"].write_text("Y = 2\n")  # not reached from a
    assert versioning.source_version(["cbi_platform.fake_a"]) == before
    fake_modules["cbi_platform.fake_b"].write_text("X = 2\n")
    after = versioning.source_version(["cbi_platform.fake_a"])
    assert after != before
    settings = fake_modules["cbi_platform.fake_b"].parent / "settings.yaml"
    settings.write_text("k: 2\n")  # configuration beside a reached module counts too
    assert versioning.source_version(["cbi_platform.fake_a"]) != after


def test_the_code_version_changes_with_extra():
    module = ["cbi_platform.reporting"]
    assert versioning.source_version(module, {"specs": [1]}) != versioning.source_version(
        module, {"specs": [2]}
    )


def test_specs_yaml_is_left_to_the_assets():
    closure = versioning.module_closure(["cbi_platform.models.registry"])
    names = [p.name for p in versioning.data_files(closure)]
    assert "specs.yaml" not in names
    assert "neural_tuned.yaml" in names


def test_frame_version_follows_content():
    frame = pl.DataFrame({"date": ["2024-01-02", "2024-01-03"], "value": [1.0, 2.0]})
    assert versioning.frame_version(frame) == versioning.frame_version(frame.clone())
    assert versioning.frame_version(frame) != versioning.frame_version(
        frame.with_columns(value=pl.Series([1.0, 2.5]))
    )
    assert versioning.frame_version(frame) != versioning.frame_version(frame.reverse())
    assert versioning.frame_version(frame.clear()) != versioning.frame_version(frame)


def test_config_fingerprint_reads_config_files_not_databases(tmp_path: Path):
    protocol = tmp_path / "protocol.yaml"
    database = tmp_path / "warehouse.duckdb"
    protocol.write_text("step: 5\n")
    database.write_bytes(b"one")
    config = {"protocol": {"file": str(protocol)}, "io": {"database": str(database)}}
    before = versioning.config_fingerprint(config)
    database.write_bytes(b"two")
    assert versioning.config_fingerprint(config) == before
    protocol.write_text("step: 10\n")
    after = versioning.config_fingerprint(config)
    assert after["protocol"] != before["protocol"] and after["io"] == before["io"]
