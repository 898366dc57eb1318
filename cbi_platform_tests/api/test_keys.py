"""`cbi keys create|list|revoke` round trip, and what the key file holds (hashes only)."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from fastapi.testclient import TestClient

from cbi_platform import cli
from cbi_platform.api import create_app
from cbi_platform.api.keys import ApiKeyError, create_key, keys_path, read_keys, verify_key


def test_cli_round_trip(tmp_path, shared_home, capsys, monkeypatch):
    home = tmp_path
    (home / "forecasts.snapshots").mkdir()
    src = shared_home.path / "forecasts.snapshots" / "cbi.forecast_history.parquet"
    (home / "forecasts.snapshots" / src.name).write_bytes(src.read_bytes())
    monkeypatch.setenv("CBI_HOME", str(home))

    assert cli.main(["keys", "create", "--name", "buyer-desk"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("cbi_") and len(key) >= 40 and "\n" not in key
    assert "shown only now" in out.err

    stored = keys_path(home).read_text()
    assert key not in stored  # only the hash
    record = json.loads(stored)["keys"][0]
    assert record["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert stat.S_IMODE(keys_path(home).stat().st_mode) == 0o600

    client = TestClient(create_app(home, max_business_days_behind=2))
    assert client.get("/forecast/1m", headers={"X-API-Key": key}).status_code == 200

    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "buyer-desk" in listed and record["prefix"] in listed and "active" in listed
    assert key not in listed

    assert cli.main(["keys", "create", "--name", "buyer-desk"]) == 1  # one active per name
    assert "revoke it first" in capsys.readouterr().err

    assert cli.main(["keys", "revoke", record["prefix"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert client.get("/forecast/1m", headers={"X-API-Key": key}).status_code == 403
    assert cli.main(["keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli.main(["keys", "revoke", "buyer-desk"]) == 1  # nothing active left
    assert "no active key" in capsys.readouterr().err


def test_keys_are_random_and_verified_by_hash(tmp_path):
    first, a = create_key(tmp_path, "a")
    second, b = create_key(tmp_path, "b")
    assert first != second and a.sha256 != b.sha256
    keys = read_keys(tmp_path)
    assert verify_key(keys, first) == a and verify_key(keys, second) == b
    assert verify_key(keys, first[:-2]) is None and verify_key(keys, "") is None


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "../etc", "name;rm"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ApiKeyError):
        create_key(tmp_path, name)


def test_short_prefixes_do_not_revoke(tmp_path):
    from cbi_platform.api.keys import revoke_key

    create_key(tmp_path, "a")
    with pytest.raises(ApiKeyError, match="no active key"):
        revoke_key(tmp_path, "cbi_")
