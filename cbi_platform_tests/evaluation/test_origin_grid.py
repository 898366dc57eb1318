"""The origin grid: anchored, stable under new data, the protocol as data, short histories."""

import datetime as dt
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cbi_platform.evaluation.origins import (
    CALIBRATION,
    DEVELOPMENT,
    SCORED,
    protocol_origins,
    with_live_origin,
)
from cbi_platform.evaluation.walk_forward import run_walk_forward
from cbi_platform.settings import Protocol, load_protocol
from cbi_platform_tests.evaluation.test_walk_forward import build_test_model, make_frame, spec

ZL_FILE = Path(__file__).resolve().parents[3] / "shared/data/cbot_soy_complex/ZL_1D.parquet"


def business_days(n: int, start: dt.date = dt.date(2000, 1, 3)) -> list[dt.date]:
    days = np.busday_offset(np.datetime64(start), np.arange(n), roll="forward")
    return days.astype(dt.date).tolist()


def test_new_days_add_origins_and_never_move_one():
    dates = business_days(6800)
    protocol = Protocol(anchor=dates[5000])
    before = protocol_origins(dates[:6000], 21, protocol)
    for extra in (1, 7, 26, 300):
        after = protocol_origins(dates[: 6000 + extra], 21, protocol)
        # every origin both plans can hold is the same date with the same grid index
        common = set(before.dates) & set(after.dates)
        assert len(common) >= before.n_origins - 12
        pos_b = {d: j for d, j in zip(before.dates, before.grid_index, strict=True)}
        pos_a = {d: j for d, j in zip(after.dates, after.grid_index, strict=True)}
        assert all(pos_b[d] == pos_a[d] for d in common)
        # the newest origins are new grid points, not shifted old ones
        assert set(after.grid_index) - set(before.grid_index) == {
            j for j in after.grid_index if j > max(before.grid_index)
        }


def test_grid_rows_follow_the_documented_rule_around_the_anchor():
    dates = business_days(5000)
    protocol = Protocol(anchor=dates[4000], min_first_origin_row=0)
    plan = protocol_origins(dates, 5, protocol)
    step = Fraction(1511, 59)
    for j, row in zip(plan.grid_index, plan.index, strict=True):
        assert row == 4000 - int(np.floor(-j * step + Fraction(1, 2)))  # a - round_half_up(-j s)
    assert 4000 in plan.index and plan.grid_index[plan.index.index(4000)] == 0
    assert plan.role.count(SCORED) == 60
    assert plan.role.count(DEVELOPMENT) == 60 and plan.role.count(CALIBRATION) == 40
    # windows in order: calibration, then development, then scored
    assert list(plan.role) == sorted(plan.role, key=[CALIBRATION, DEVELOPMENT, SCORED].index)
    assert plan.index[-1] <= len(dates) - 1 - protocol.end_offset


def test_an_anchor_after_the_data_extends_the_grid_by_business_days():
    dates = business_days(5000)
    far = protocol_origins(dates[:4500], 5, Protocol(anchor=dates[4800]))
    near = protocol_origins(dates, 5, Protocol(anchor=dates[4800]))
    assert set(far.dates) <= set(near.dates) | set(dates[:4500][:1000])
    assert set(far.dates[-30:]) <= set(near.dates)


def test_the_protocol_hash_names_every_setting():
    base = load_protocol()
    assert base.hash() == load_protocol().hash() and len(base.hash()) == 12
    changed = {base.replace(**{k: v}).hash() for k, v in _one_change_each(base).items()}
    assert base.hash() not in changed and len(changed) == len(_one_change_each(base))


def _one_change_each(p: Protocol) -> dict:
    return {
        "anchor": p.anchor + dt.timedelta(days=1),
        "span": p.span + 1,
        "n_scored": p.n_scored + 1,
        "end_offset": p.end_offset + 1,
        "n_development": p.n_development + 1,
        "n_calibration": p.n_calibration + 1,
        "min_first_origin_row": p.min_first_origin_row + 1,
        "min_history": p.min_history + 1,
        "zone_method": p.zone_method + "_x",
    }


def test_protocol_file_and_overrides_are_validated(tmp_path):
    with pytest.raises(ValueError, match="unknown protocol setting"):
        load_protocol(n_origins=3)
    bad = tmp_path / "p.yaml"
    bad.write_text("grid: {anchor: 2024-06-13}\n")
    with pytest.raises(ValueError, match="p.yaml"):
        load_protocol(bad)
    assert load_protocol(span=600).span == 600


def test_short_history_scales_every_window_by_one_rule_with_a_notice():
    dates = business_days(3000)
    protocol = load_protocol(anchor=dates[2994])
    plan = protocol_origins(dates, 21, protocol)
    assert plan.notice is not None and "scaled" in plan.notice
    g = plan.n_origins
    factor = g / 160
    assert plan.role.count(SCORED) == int(factor * 60)
    assert plan.role.count(DEVELOPMENT) == int(factor * 60)
    assert plan.role.count(CALIBRATION) == g - 2 * int(factor * 60)
    assert plan.index[0] >= protocol.min_first_origin_row
    # the same grid as a long history's: the short plan's origins are grid points of it
    long = protocol_origins(business_days(6000), 21, protocol)
    assert set(plan.dates[-20:]) <= set(long.dates) | set(business_days(6000)[-40:])
    with pytest.raises(ValueError, match="too few"):
        protocol_origins(dates[:900], 21, load_protocol(anchor=dates[894]))


def test_long_histories_keep_the_protocol_counts_without_a_notice():
    dates = business_days(6800)
    plan = protocol_origins(dates, 5, load_protocol())
    assert plan.notice is None
    assert (plan.role.count(CALIBRATION), plan.role.count(DEVELOPMENT)) == (40, 60)
    assert plan.role.count(SCORED) == 60


@pytest.mark.skipif(not ZL_FILE.exists(), reason="shared ZL data absent")
def test_on_the_shared_zl_the_scored_origins_are_the_issue_3_origins():
    raw = pl.read_parquet(ZL_FILE)
    dates = raw.select((pl.col("datetime") + pl.duration(hours=6)).dt.date())["datetime"]
    plan = protocol_origins(dates, 21, load_protocol())
    end = len(dates) - 1 - 5  # issue 3: 60 origins over 1,512 rows ending 5 before the last
    expected = [end - int(Fraction(1511 * m, 59) + Fraction(1, 2)) for m in range(159, -1, -1)]
    assert list(plan.index) == expected
    assert plan.notice is None
    short = protocol_origins(dates.tail(3000), 21, load_protocol())
    assert short.notice is not None and set(short.dates) <= set(plan.dates)


def test_refits_sit_on_the_grid_so_a_longer_history_refits_on_the_same_dates():
    frame = make_frame(horizons=("1w",))
    dates = frame["date"].unique().sort().to_list()
    protocol = Protocol(
        anchor=dates[-40],
        span=240,
        n_scored=12,
        end_offset=5,
        n_development=6,
        n_calibration=0,
        min_first_origin_row=0,
    )
    specs = [spec("recorder", refit_every=3)]

    def fits(last: int) -> dict:
        sub = frame.filter(pl.col("date") <= dates[last])
        plan = with_live_origin(protocol_origins(sub["date"], 5, protocol), sub["date"][-1])
        oof = run_walk_forward(sub, specs, build_test_model, plan)
        keep = oof.filter(pl.col("role") != "live")
        return dict(zip(keep["origin"].to_list(), keep["fitted_at"].to_list(), strict=True))

    a, b = fits(len(dates) - 31), fits(len(dates) - 1)
    common = sorted(set(a) & set(b))
    assert len(common) >= 8
    # after the first refit both share, every origin uses a fit from the same date
    first_shared = min(o for o in common if a[o] == o and b[o] == o)
    assert all(a[o] == b[o] for o in common if o >= first_shared)


def test_refit_phase_shifts_the_schedule_and_nothing_else():
    frame = make_frame(horizons=("1w",))
    dates = frame["date"].unique().sort()
    protocol = Protocol(
        anchor=dates[-6],
        span=240,
        n_scored=12,
        end_offset=5,
        n_development=6,
        n_calibration=0,
        min_first_origin_row=0,
    )
    plan = protocol_origins(dates, 5, protocol)
    specs = [spec("recorder", refit_every=3)]
    by_phase = [
        run_walk_forward(frame, specs, build_test_model, plan, refit_phase=p) for p in range(3)
    ]
    refit_dates = [
        {f for f, o in zip(x["fitted_at"], x["origin"], strict=True) if f == o} for x in by_phase
    ]
    assert refit_dates[0] != refit_dates[1] != refit_dates[2]
    union = set().union(*refit_dates)
    first = min(plan.dates)
    assert union - {first} == set(plan.dates) - {first}
    for oof in by_phase:
        assert oof["origin"].to_list() == by_phase[0]["origin"].to_list()


def test_the_frozen_protocol_file_and_the_defaults_agree():
    # Protocol() is what code gets without the file; the YAML is the record. They must not drift.
    assert load_protocol() == Protocol()
