"""`cbi run` builds its resources from its arguments; it never edits the process environment."""

import os

from cbi_platform import cli


def test_run_with_a_manifest_leaves_the_environment_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CBI_MANIFEST", raising=False)
    monkeypatch.delenv("CBI_SOURCE", raising=False)
    monkeypatch.setenv("CBI_HOME", str(tmp_path / "home"))
    seen = {}

    def fake_run_pipeline(horizons, stream, resources, force=False):
        seen["source"] = resources["market_source"]
        seen["protocol"] = resources["protocol"]
        return 0

    monkeypatch.setattr("cbi_platform.runner.run_pipeline", fake_run_pipeline)
    before = dict(os.environ)
    manifest = tmp_path / "m.yaml"
    protocol = tmp_path / "p.yaml"
    assert cli.main(["run", "--manifest", str(manifest), "--protocol", str(protocol)]) == 0
    assert dict(os.environ) == before
    assert seen["source"].kind == "files" and seen["source"].manifest == str(manifest.resolve())
    assert seen["protocol"].protocol_file == str(protocol.resolve())


def test_run_with_a_bad_protocol_file_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CBI_HOME", str(tmp_path / "home"))
    bad = tmp_path / "protocol.yaml"
    bad.write_text("grid: {}\n")

    def fake_run_pipeline(horizons, stream, resources, force=False):
        resources["protocol"].config()  # what the first asset does
        return 0

    monkeypatch.setattr("cbi_platform.runner.run_pipeline", fake_run_pipeline)
    assert cli.main(["run", "--protocol", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "protocol.yaml" in err


def test_an_older_warehouse_is_kept_aside_not_overwritten(tmp_path):
    import io

    from cbi_platform.runner import WAREHOUSE_LAYOUT, keep_older_warehouse

    (tmp_path / "warehouse.duckdb").write_bytes(b"old tables")
    out = io.StringIO()
    moved = keep_older_warehouse(tmp_path, out)
    assert moved is not None and moved.read_bytes() == b"old tables"
    assert not (tmp_path / "warehouse.duckdb").exists() and "kept as" in out.getvalue()
    assert (tmp_path / "warehouse.layout").read_text().strip() == WAREHOUSE_LAYOUT
    (tmp_path / "warehouse.duckdb").write_bytes(b"new tables")
    assert keep_older_warehouse(tmp_path, out) is None  # same layout: left alone
    assert (tmp_path / "warehouse.duckdb").read_bytes() == b"new tables"


def test_the_platform_warehouse_is_recognised_as_the_duckdb_one(tmp_path):
    """`cbi run` moves an older layout aside only for the DuckDB warehouse: the platform's own IO
    manager must be recognised as one (a class-name test had missed it), BigQuery's not."""
    from dagster_polars import PolarsBigQueryIOManager

    from cbi_platform.defs.resources import build_resources
    from cbi_platform.runner import is_duckdb_warehouse

    io_manager = build_resources({"CBI_HOME": str(tmp_path)})["io_manager"]
    assert is_duckdb_warehouse(io_manager)
    assert not is_duckdb_warehouse(PolarsBigQueryIOManager(project="p", dataset="d"))
