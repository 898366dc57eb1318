"""The horizons are defined once (`settings`): keys, trading days and words agree everywhere."""

from __future__ import annotations

import json
import typing

import polars as pl
import pytest

from cbi_platform import settings
from cbi_platform.features import contract
from cbi_platform.procurement.programme import PipelineSettings


def test_one_table_of_keys_days_and_names():
    assert settings.HORIZON_KEYS == ("1w", "1m", "3m", "6m", "12m")
    assert settings.HORIZONS == {"1w": 5, "1m": 21, "3m": 63, "6m": 126, "12m": 252}
    assert [settings.horizon_name(h) for h in settings.HORIZON_KEYS] == [
        "1 week", "1 month", "3 months", "6 months", "12 months",
    ]  # fmt: skip
    assert typing.get_args(settings.Horizon) == settings.HORIZON_KEYS
    assert contract.HORIZONS is settings.HORIZONS  # re-exported, not copied


def test_keys_stay_plain_strings_in_frames_and_json():
    assert all(type(h) is str for h in (*settings.HORIZON_KEYS, *settings.HORIZONS))
    frame = pl.DataFrame({"horizon": list(settings.HORIZON_KEYS)})
    assert frame["horizon"].dtype == pl.Utf8
    assert json.loads(json.dumps(settings.HORIZON_KEYS)) == list(settings.HORIZON_KEYS)


@pytest.mark.parametrize("bad", ["2w", "1W", "", "12"])
def test_an_unknown_horizon_names_the_valid_ones(bad):
    with pytest.raises(ValueError, match=r"not one of \['1w', '1m', '3m', '6m', '12m'\]"):
        settings.horizon_days(bad)
    with pytest.raises(ValueError, match="not one of"):
        settings.horizon_name(bad)
    with pytest.raises(ValueError, match="not one of"):
        PipelineSettings(horizons=(bad,))


def test_order_puts_the_shortest_first_and_unknown_last():
    shuffled = ["12m", "zz", "1w", "6m", "1m", "3m"]
    assert sorted(shuffled, key=settings.horizon_order) == ["1w", "1m", "3m", "6m", "12m", "zz"]
