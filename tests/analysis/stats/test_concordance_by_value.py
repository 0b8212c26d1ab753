"""Concordance of counterfactual and observational effects per swept value, by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cfx.analysis.stats.observational import concordance_by_value, scale_effects


def _observed(level, estimate, low, high, naive=(3.0, 2.0, 4.0)) -> pd.DataFrame:
    return pd.DataFrame([{"level": level, "region": "lung", "metric": "mean", "unit": "HU",
                          "estimate": estimate, "ci_low": low, "ci_high": high,
                          "naive_estimate": naive[0], "naive_ci_low": naive[1],
                          "naive_ci_high": naive[2], "p_holm": 0.01}])


def _effects(rows) -> pd.DataFrame:
    return pd.DataFrame([{"value": value, "reference": reference, "region": "lung",
                          "metric": "mean", "unit": "HU", "estimate": estimate,
                          "ci_low": low, "ci_high": high}
                         for value, reference, estimate, low, high in rows])


def test_scale_effects_multiplies_and_keeps_each_interval_ordered():
    observed = _observed(np.nan, 2.0, 1.0, 3.0)
    up = scale_effects(observed, 20.0).iloc[0]
    assert (up["estimate"], up["ci_low"], up["ci_high"]) == (40.0, 20.0, 60.0)
    assert (up["naive_estimate"], up["naive_ci_low"], up["naive_ci_high"]) == (60.0, 40.0, 80.0)
    down = scale_effects(observed, -10.0).iloc[0]  # a negative contrast swaps the ends
    assert (down["estimate"], down["ci_low"], down["ci_high"]) == (-20.0, -30.0, -10.0)
    assert (down["naive_ci_low"], down["naive_ci_high"]) == (-40.0, -20.0)
    assert observed["estimate"].iloc[0] == 2.0  # the input is left alone
    assert up["p_holm"] == 0.01


def test_numeric_attribute_slope_is_scaled_to_each_contrast():
    # 2 HU per year [1, 3] against age 60 - 40 = 20 years: 40 HU [20, 60]
    effects = _effects([(60, 40, 30.0, 25.0, 35.0), (30, 40, -25.0, -27.0, -23.0)])
    table = concordance_by_value(effects, _observed(np.nan, 2.0, 1.0, 3.0)).set_index("value")
    older, younger = table.loc[60], table.loc[30]
    assert (older["obs_estimate"], older["obs_ci_low"], older["obs_ci_high"]) == (40, 20, 60)
    assert older["difference"] == -10.0
    # independent normal CIs: half-widths 5 and 20 combine as sqrt(5^2 + 20^2)
    assert older["difference_ci_high"] - older["difference"] == pytest.approx(math.hypot(5, 20))
    assert older["ratio"] == pytest.approx(0.75) and bool(older["cis_overlap"])
    assert (older["naive_estimate"], older["naive_ci_low"], older["naive_ci_high"]) == (60, 40, 80)
    # -10 years: -20 HU [-30, -10]; the CF CI [-27, -23] lies inside it
    assert (younger["obs_estimate"], younger["obs_ci_low"], younger["obs_ci_high"]) == (
        -20, -30, -10)
    assert younger["difference"] == -5.0 and bool(younger["cis_overlap"])
    assert list(table.columns[:4]) == ["reference", "region", "metric", "unit"]
    assert (table["unit"] == "HU").all() and list(table["reference"]) == [40, 40]


def test_categorical_levels_match_as_text_and_unmatched_values_are_left_out():
    observed = pd.concat([_observed("yes", 20.0, 10.0, 30.0),
                          _observed("ex", 5.0, 0.0, 10.0)], ignore_index=True)
    effects = _effects([("yes", "no", 50.0, 45.0, 55.0), ("never", "no", 1.0, 0.0, 2.0)])
    table = concordance_by_value(effects, observed)
    assert list(table["value"]) == ["yes"]
    row = table.iloc[0]
    assert row["obs_estimate"] == 20.0 and row["difference"] == 30.0
    assert not row["cis_overlap"]  # [45, 55] vs [10, 30]
    assert row["ratio"] == 2.5


def test_no_matching_value_is_an_error_naming_both_sides():
    effects = _effects([("maybe", "no", 1.0, 0.0, 2.0)])
    with pytest.raises(ValueError, match=r"none of the run's values \['maybe'\] is a level of "
                                         r"the cohort's attribute \['ex', 'yes'\]"):
        concordance_by_value(effects, pd.concat([_observed("yes", 2.0, 1.0, 3.0),
                                                 _observed("ex", 2.0, 1.0, 3.0)]))
