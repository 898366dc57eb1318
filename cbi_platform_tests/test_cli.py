"""`cbi` prints short messages naming the file and problem, never a bare traceback."""

import subprocess
import sys

import pytest

from cbi_platform.cli import main


def test_validate_passes_on_a_good_manifest(small_manifest, capsys):
    assert main(["validate", str(small_manifest)]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_shared_data_manifest(shared_manifest, capsys):
    assert main(["validate", str(shared_manifest)]) == 0
    out = capsys.readouterr().out
    assert "warn" in out and "FAIL" not in out


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda d: (d / "zl.csv").unlink(), "zl.csv"),
        (lambda d: (d / "zl.csv").write_text("Date,Prise\n2020-01-02,40\n"), "Price"),
        (lambda d: (d / "zl.csv").write_text("Date,Price\n"), "zl.csv"),
    ],
    ids=["missing-file", "misspelled-column", "empty-file"],
)
def test_validate_bad_input_exits_1_with_message(small_manifest, breakage, expected):
    breakage(small_manifest.parent)
    proc = subprocess.run(
        [sys.executable, "-m", "cbi_platform.cli", "validate", str(small_manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert expected in proc.stderr and proc.stderr.startswith("error:")


def test_validate_reports_non_positive_target(small_manifest, capsys):
    zl = small_manifest.parent / "zl.csv"
    lines = zl.read_text().splitlines()
    date = lines[50].split(",")[0]
    lines[50] = f"{date},-1.0"
    zl.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(small_manifest)]) == 1
    out = capsys.readouterr().out
    assert "target_positive" in out and date in out


def test_validate_gives_the_as_of_gate_the_manifest_target(small_manifest, monkeypatch, capsys):
    from cbi_platform.features import leakage

    manifest = small_manifest.read_text()
    manifest = manifest.replace("target: ZL", "target: ZS")
    manifest = manifest.replace("symbol: ZL,", "symbol: ZS,").replace("COT_ZL", "COT_ZS")
    small_manifest.write_text(manifest)
    seen = {}
    asof_gate = leakage.asof_gate

    def spy(frame, prices, target=leakage.TARGET_SYMBOL, **kwargs):
        seen["target"] = target
        seen["result"] = asof_gate(frame, prices, target=target, **kwargs)
        return seen["result"]

    monkeypatch.setattr(leakage, "asof_gate", spy)
    assert main(["validate", str(small_manifest), "--horizon", "1w"]) == 0
    assert "target ZS" in capsys.readouterr().out
    assert seen["target"] == "ZS"
    # the ZS target's own COT joins are the ones checked
    assert {"f_cot_zs_net", "f_cot_zs_chg4"} <= set(seen["result"].evidence["columns_checked"])
