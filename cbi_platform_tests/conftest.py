"""Shared fixtures: small manifests on disk and resources pointing at a temporary home."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "shared_data.yaml"


def pytest_collection_modifyitems(config, items):
    """Longest work units first (xdist_order.py): with -n 2 the slow tests start at once."""
    from cbi_platform_tests.xdist_order import ordered

    by_id = {item.nodeid: item for item in items}
    if len(by_id) == len(items):
        items[:] = [by_id[nodeid] for nodeid in ordered(by_id)]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`-n 2` (xdist's `load`): files as units, longest first; an explicit other --dist wins."""
    if config.getvalue("dist") != "load":
        return None
    from cbi_platform_tests.xdist_order import make_scheduler

    return make_scheduler(config, log)


# The small walk-forward the asset tests run on a small manifest (ProtocolResource fields):
# 12 scored, 20 development and 20 calibration origins over 240 rows, one worker.
SMALL_PROTOCOL = dict(
    n_scored=12,
    span=240,
    end_offset=5,
    n_development=20,
    n_calibration=20,
    min_first_origin_row=100,
    n_workers=1,
    min_history=5,
    regime_folds=2,
)


def _business_days(start: dt.date, n: int) -> list[dt.date]:
    out, day = [], start
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += dt.timedelta(days=1)
    return out


def write_small_manifest(folder: Path, n_days: int = 900, seed: int = 1) -> Path:
    """ZL, WTI and weekly COT as CSV files plus the manifest that describes them."""
    rng = np.random.default_rng(seed)
    days = _business_days(dt.date(2019, 1, 7), n_days)
    zl = 40 * np.exp(np.cumsum(0.015 * rng.standard_normal(n_days)))
    wti = 60 * np.exp(np.cumsum(0.02 * rng.standard_normal(n_days)))
    pl.DataFrame({"Date": days, "Price": zl}).write_csv(folder / "zl.csv")
    pl.DataFrame({"Date": days, "Price": wti}).write_csv(folder / "wti.csv")
    tuesdays = [d for d in days if d.weekday() == 1]
    cot = np.clip(np.cumsum(rng.standard_normal(len(tuesdays))), -50, 50)
    pl.DataFrame({"Date": tuesdays, "net": cot}).write_csv(folder / "cot.csv")
    manifest = folder / "manifest.yaml"
    manifest.write_text(
        f"""version: 1
name: small
target: ZL
as_of: {days[-1]}
series:
  - {{symbol: ZL, path: zl.csv, date_column: Date, value_column: Price, frequency: daily, unit: c/lb}}
  - {{symbol: WTI, path: wti.csv, date_column: Date, value_column: Price, frequency: daily, unit: USD/bbl}}
  - {{symbol: COT_ZL, path: cot.csv, date_column: Date, value_column: net, frequency: weekly, unit: pct_oi, publication_lag: 4}}
"""
    )
    return manifest


@pytest.fixture
def small_manifest(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return write_small_manifest(data)


@pytest.fixture
def shared_manifest() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_MANIFEST


def file_resources(manifest: Path, home: Path) -> dict:
    from cbi_platform.defs.resources import build_resources

    return build_resources(
        {"CBI_SOURCE": "files", "CBI_MANIFEST": str(manifest), "CBI_HOME": str(home)}
    )


@pytest.fixture
def redis_broker(monkeypatch) -> tuple[int, str]:
    """A free port and the Redis broker URL on it for a test's own Redis and Celery workers
    (CBI_TEST_CELERY_BROKER, which the workers inherit); skips without redis-server."""
    import socket

    from cbi_platform import workers

    if not workers.redis_available():
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker = workers.broker_url(port)
    monkeypatch.setenv("CBI_TEST_CELERY_BROKER", broker)
    return port, broker
