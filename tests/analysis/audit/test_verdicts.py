"""Audit verdicts on hand-computed numbers: every verdict of every criterion is reached, and the
boundaries fall on the side the module docstring states."""

import math

import numpy as np
import pytest

from cfx.analysis.audit import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    WARN,
    Threshold,
    classification_verdict,
    composition_verdict,
    minimality_verdict,
    not_applicable,
    not_measured,
    off_lung_ratios,
    oracle_verdict,
    overall_verdict,
    regression_verdict,
    reversibility_verdict,
)


@pytest.mark.parametrize(("value", "expected"), [
    (0.75, PASS), (0.9, PASS), (0.74, WARN), (0.6, WARN), (0.599, FAIL), (None, WARN),
    (math.nan, WARN)])
def test_a_higher_is_better_threshold_passes_at_and_fails_strictly_below(value, expected):
    assert Threshold("auc", "higher", 0.75, 0.6).judge(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (0.25, PASS), (0.0, PASS), (0.26, WARN), (1.0, WARN), (1.01, FAIL), (math.inf, FAIL)])
def test_a_lower_is_better_threshold_passes_at_and_fails_strictly_above(value, expected):
    assert Threshold("ratio", "lower", 0.25, 1.0).judge(value) == expected


def test_a_threshold_without_fail_only_warns_and_round_trips_through_json():
    bar = Threshold("off", "lower", 5.0, None, "HU")
    assert bar.judge(1e6) == WARN and bar.judge(5.0) == PASS
    assert bar.text() == "pass ≤ 5 HU, else warn"
    assert Threshold("auc", "higher", 0.75, 0.6).text() == "pass ≥ 0.75, fail < 0.6"
    assert Threshold.from_json(bar.to_json()) == bar
    assert bar.to_json() == {"metric": "off", "better": "lower", "pass": 5.0, "fail": None,
                             "unit": "HU"}


@pytest.mark.parametrize(("verdicts", "expected"), [
    ({"a": PASS, "b": NOT_APPLICABLE}, (PASS, "all 1 applicable criteria pass")),
    ({"a": PASS, "b": WARN, "c": NOT_APPLICABLE}, (WARN, "warn: b")),
    ({"a": FAIL, "b": WARN, "c": FAIL}, (FAIL, "fail: a, c; warn: b")),
    ({"a": NOT_APPLICABLE}, (PASS, "all 0 applicable criteria pass")),
])
def test_overall_verdict_is_the_worst_and_ignores_not_applicable(verdicts, expected):
    assert overall_verdict(verdicts) == expected


def test_overall_verdict_refuses_an_unknown_verdict():
    with pytest.raises(ValueError, match=r"verdicts: \{'a': 'ok'\} is not one of pass"):
        overall_verdict({"a": "ok"})


def test_skipped_warns_and_not_applicable_is_not_judged():
    assert not_measured("no CTs").verdict == WARN
    assert not_measured("no CTs").reason == "not measured: no CTs"
    assert not_applicable("no source CT").verdict == NOT_APPLICABLE


@pytest.mark.parametrize(("null", "scale", "verdict", "ratio"), [
    (0.0, 20.0, PASS, 0.0),
    (1.0, 20.0, PASS, 0.05),    # exactly at the pass threshold
    (2.0, 20.0, WARN, 0.1),
    (5.0, 20.0, WARN, 0.25),    # at the fail threshold: not strictly worse
    (6.0, 20.0, FAIL, 0.3),
])
def test_composition_is_the_null_distance_over_the_seed_scale(null, scale, verdict, ratio):
    result = composition_verdict(null, scale)
    assert (result.verdict, result.key_metric) == (verdict, "null_to_seed_ratio")
    assert result.value == pytest.approx(ratio)
    assert [t.metric for t in result.thresholds] == ["null_to_seed_ratio"]


@pytest.mark.parametrize(("null", "verdict"), [(0.0, PASS), (0.5, PASS), (3.0, WARN)])
def test_composition_with_one_seed_judges_rounding_and_never_fails(null, verdict):
    result = composition_verdict(null, None)
    assert (result.verdict, result.key_metric) == (verdict, "null_mean_abs")
    assert ("--seeds 0,1" in result.reason) == (verdict == WARN)
    assert composition_verdict(null, 0.0).verdict == verdict  # a zero scale is no scale


@pytest.mark.parametrize(("auc", "real", "verdict"), [
    (1.0, 0.9, PASS), (0.75, 0.9, PASS), (0.7, 0.9, WARN), (0.6, 0.9, WARN), (0.5, 0.9, FAIL),
    (1.0, 0.5, WARN),    # a predictor blind on the real CTs cannot judge
    (1.0, None, WARN), (None, 0.9, WARN)])
def test_categorical_effectiveness_by_auc(auc, real, verdict):
    result = classification_verdict(auc, real)
    assert (result.verdict, result.key_metric) == (verdict, "auc")
    if real == 0.5:
        assert "cannot be judged" in result.reason


@pytest.mark.parametrize(("mae", "chance", "real", "verdict", "ratio"), [
    (2.0, 10.0, 4.0, PASS, 0.2), (5.0, 10.0, 4.0, PASS, 0.5), (7.0, 10.0, 4.0, WARN, 0.7),
    (9.5, 10.0, 4.0, FAIL, 0.95),
    (2.0, 10.0, 10.0, WARN, 0.2),    # real MAE at chance: blind
    (2.0, 0.0, 4.0, WARN, None)])    # no chance error to scale by
def test_numeric_effectiveness_by_error_over_chance(mae, chance, real, verdict, ratio):
    result = regression_verdict(mae, chance, real, 10.0)
    assert (result.verdict, result.key_metric) == (verdict, "mae_to_chance_ratio")
    assert result.value == (None if ratio is None else pytest.approx(ratio))


@pytest.mark.parametrize(("trip", "floor", "verdict", "ratio"), [
    (10.0, 10.0, PASS, 1.0), (15.0, 10.0, PASS, 1.5), (18.0, 10.0, WARN, 1.8),
    (20.0, 10.0, WARN, 2.0), (25.0, 10.0, FAIL, 2.5), (0.0, 0.0, PASS, None),
    (3.0, 0.0, WARN, None)])
def test_reversibility_by_round_trip_over_one_edit(trip, floor, verdict, ratio):
    result = reversibility_verdict(trip, floor)
    assert (result.verdict, result.key_metric) == (verdict, "round_trip_to_own_edit_ratio")
    assert result.value == (None if ratio is None else pytest.approx(ratio))


def test_off_lung_ratio_by_hand():
    ratios = off_lung_ratios(np.array([2.0, 0.0, 3.0, 0.0]), np.array([-8.0, 5.0, 0.0, 0.0]))
    assert ratios.tolist() == [0.25, 0.0, math.inf, 0.0]


@pytest.mark.parametrize(("outside", "inside", "verdict", "ratio"), [
    ([2.0], [-8.0], PASS, 0.25),           # 2 / |-8|: at the specificity ratio
    ([3.0], [10.0], WARN, 0.3),
    ([10.0], [10.0], WARN, 1.0),           # at the fail threshold
    ([13.1], [-11.1], FAIL, 13.1 / 11.1),  # the bundled GAN's age edit: a global shift
    ([1.0, 6.0], [20.0, -12.0], WARN, 0.5),  # the worst contrast decides
    ([0.0, 0.0], [16.0, 0.0], PASS, 0.0),
    ([0.0], [0.0], PASS, 0.0),             # nothing changed anywhere
    ([4.0], [0.0], FAIL, None),            # only the outside changed
])
def test_minimality_is_off_lung_change_over_the_lung_effect(outside, inside, verdict, ratio):
    labels = [f"v{i} vs r" for i in range(len(outside))]
    result = minimality_verdict(labels, outside, inside)
    assert (result.verdict, result.key_metric) == (verdict, "off_lung_to_effect_ratio")
    assert result.value == (None if ratio is None else pytest.approx(ratio))
    assert [t.metric for t in result.thresholds] == ["off_lung_to_effect_ratio",
                                                     "worst_contrast_mean_abs_outside_lung"]


def test_minimality_names_the_worst_contrast_and_takes_the_stats_ratio():
    result = minimality_verdict(["40 vs 60", "80 vs 60"], [1.0, 6.0], [20.0, -12.0])
    assert result.reason.startswith("80 vs 60: off-lung 6 HU is 0.50 of the lung effect -12 HU")
    assert minimality_verdict(["a"], [3.0], [10.0], specificity_ratio=0.5).verdict == PASS
    assert minimality_verdict(["a"], [3.0], [10.0], specificity_ratio=0.5).thresholds[0] \
        .pass_at == 0.5


def test_a_large_effect_does_not_excuse_off_lung_change_above_the_bar():
    result = minimality_verdict(["yes vs no"], [8.0], [60.0])  # ratio 0.13 passes, 8 HU > 5
    assert result.verdict == WARN and result.value == pytest.approx(8 / 60)
    assert "reaches 8 HU (> 5 HU)" in result.reason


@pytest.mark.parametrize(("args", "message"), [
    ((["a"], [1.0], [1.0], 0.0), r"specificity_ratio: must be in \(0, 1\], got 0.0"),
    ((["a"], [1.0], [1.0], 1.5), r"specificity_ratio: must be in \(0, 1\], got 1.5"),
    ((["a", "b"], [1.0], [1.0]), r"expected equal non-zero lengths, got 2, 1, 1"),
    (([], [], []), r"expected equal non-zero lengths, got 0, 0, 0"),
])
def test_minimality_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        minimality_verdict(*args)


@pytest.mark.parametrize(("error", "planted", "r", "verdict", "relative"), [
    (0.0, 16.0, 1.0, PASS, 0.0),
    (4.0, 16.0, 0.5, PASS, 0.25),      # both at their pass thresholds
    (6.0, 16.0, 0.9, WARN, 0.375),
    (2.0, 16.0, 0.3, WARN, 0.125),     # the correlation alone warns
    (9.0, 16.0, 0.9, FAIL, 0.5625),
    (1.0, 16.0, 0.1, FAIL, 0.0625),    # the correlation alone fails
    (16.0, 16.0, None, FAIL, 1.0),     # a model that changes nothing
    (1.0, 16.0, None, PASS, 0.0625),   # undefined correlation: the region error alone
])
def test_oracle_agreement_is_the_worse_of_relative_error_and_correlation(error, planted, r,
                                                                         verdict, relative):
    result = oracle_verdict(error, planted, r)
    assert (result.verdict, result.key_metric) == (verdict, "relative_region_error")
    assert result.value == pytest.approx(relative)
    assert [t.metric for t in result.thresholds] == ["relative_region_error", "correlation"]


@pytest.mark.parametrize(("error", "verdict"), [(0.0, PASS), (0.5, PASS), (3.0, WARN),
                                                (5.5, FAIL)])
def test_oracle_agreement_on_a_planted_null_judges_the_error_in_hu(error, verdict):
    result = oracle_verdict(error, 0.0, None)
    assert (result.verdict, result.key_metric) == (verdict, "region_mean_abs_error")
    assert result.thresholds[0].unit == "HU"
