"""Every feature the builder makes has words in the catalogue; a new one without them fails."""

import polars as pl
import pytest

from cbi_platform.features.build import build_features
from cbi_platform.features.catalogue import (
    FEATURE_CATALOGUE,
    VALUE_UNITS,
    describe_feature,
    format_feature_value,
    uncatalogued,
)
from cbi_platform.features.contract import feature_columns


@pytest.fixture(scope="module")
def built_features(prices: pl.DataFrame) -> list[str]:
    result = build_features(prices, "1m")
    assert result.dropped == ()  # every driver present: the whole feature set is checked
    return feature_columns(result.frame)


def test_every_built_feature_has_a_catalogue_description(built_features):
    assert len(built_features) >= 45
    assert uncatalogued(built_features) == []
    for name in built_features:
        phrase, unit = describe_feature(name)
        assert phrase == FEATURE_CATALOGUE[name][0]
        bare = name.removeprefix("f_")
        assert phrase not in {name, bare, bare.replace("_", " ")}, name
        assert unit in VALUE_UNITS, (name, unit)
        assert format_feature_value(0.5, unit) != "missing"


def test_a_feature_without_an_entry_is_reported(built_features):
    assert uncatalogued([*built_features, "f_zl_new_thing", "price"]) == ["f_zl_new_thing"]
    # without an entry the words fall back to the raw name: what the test above forbids
    assert describe_feature("f_zl_new_thing")[0] == "zl new thing"


def test_every_catalogued_unit_can_be_written():
    assert {unit for _, unit in FEATURE_CATALOGUE.values()} <= VALUE_UNITS
    assert format_feature_value(3.0, "weekday") == "Wednesday"
    assert format_feature_value(float("nan"), "vol") == "missing"
