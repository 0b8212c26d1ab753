"""Mixed model against subject fixed-effects OLS (balanced data) and statsmodels' formula fit."""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from analysis.stats.grid import SweepGrid
from analysis.stats.mixed import mixed_effect, mixed_effects


def _hand_data(rng, n_subjects=10, n_seeds=3):
    subject = np.repeat(np.arange(n_subjects), 2 * n_seeds)
    treated = np.tile(np.repeat([0, 1], n_seeds), n_subjects)
    y = rng.normal(0, 6, n_subjects)[subject] + 4.0 * treated + rng.normal(0, 2, subject.size)
    return y, subject, treated


def test_balanced_effect_equals_subject_fixed_effects_ols(rng):
    y, subject, treated = _hand_data(rng)
    got = mixed_effect(y, subject, treated)
    frame = pd.DataFrame({"y": y, "s": subject, "x": treated})
    ols = smf.ols("y ~ C(s) + x", frame).fit()
    assert got.estimate == pytest.approx(ols.params["x"], rel=1e-8)
    se = ols.bse["x"]
    assert (got.ci_low, got.ci_high) == pytest.approx(
        (got.estimate - 1.959964 * se, got.estimate + 1.959964 * se), rel=1e-5)
    assert got.p == pytest.approx(2 * stats.norm.sf(abs(got.estimate) / se), rel=1e-4)
    assert got.residual_var == pytest.approx(ols.scale, rel=1e-5)
    direct = smf.mixedlm("y ~ x", frame, groups=frame["s"]).fit(reml=True)
    assert got.subject_var == pytest.approx(float(direct.cov_re.iloc[0, 0]), rel=1e-5)
    assert got.note == ""


def test_mixed_effects_on_a_grid_match_the_single_fit(rng, sweep):
    table = sweep(rng, n_subjects=6, n_seeds=3)
    grid = SweepGrid.from_table(table, ["no", "yes"])
    frame = mixed_effects(grid, "yes", "no", confidence=0.9)
    rows = table[(table.region == "lung") & (table.metric == "mean")]
    single = mixed_effect(rows["estimate"], rows["subject"], rows["value"] == "yes",
                          confidence=0.9)
    assert frame.loc[("lung", "mean"), "estimate"] == pytest.approx(single.estimate)
    assert frame.loc[("lung", "mean"), "ci_low"] == pytest.approx(single.ci_low, rel=1e-6)
    assert frame.loc[("lung", "mean"), "estimate"] == pytest.approx(
        grid.deltas("yes", "no")[("lung", "mean")].mean())


def test_oracle_at_one_seed_is_singular_with_a_note():
    subject = np.tile(np.arange(5), 2)
    y = np.r_[np.zeros(5), np.full(5, 20.0)] + subject * 7.0
    got = mixed_effect(y, subject, np.repeat([0, 1], 5))
    assert (got.estimate, got.ci_low, got.ci_high) == pytest.approx((20.0, 20.0, 20.0))
    assert np.isnan(got.p) and "mixed model is singular" in got.note


def test_mixed_errors(rng, sweep):
    y, subject, treated = _hand_data(rng, n_subjects=3, n_seeds=1)
    with pytest.raises(ValueError, match=r"expected three 1-D arrays of one length, got shapes "
                                         r"\(6,\), \(5,\), \(6,\)"):
        mixed_effect(y, subject[:5], treated)
    with pytest.raises(ValueError, match="estimate: holds non-finite values"):
        mixed_effect(np.r_[np.nan, y[1:]], subject, treated)
    with pytest.raises(ValueError, match=r"treated: expected 0/1 with both levels present, got "
                                         r"levels \[0\]"):
        mixed_effect(y, subject, np.zeros_like(treated))
    with pytest.raises(ValueError, match="subject: got 1 subject"):
        mixed_effect(y, np.zeros_like(subject), treated)
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\), got 1.5"):
        mixed_effect(y, subject, treated, confidence=1.5)
    grid = SweepGrid.from_table(sweep(rng, n_subjects=3, n_seeds=2), ["no", "yes"])
    with pytest.raises(ValueError, match=r"value, reference: \['maybe'\] not in the grid's values"):
        mixed_effects(grid, "maybe", "no")
    one = SweepGrid.from_table(sweep(rng, n_subjects=1, n_seeds=2), ["no", "yes"])
    with pytest.raises(ValueError, match="subject: got 1 subject"):
        mixed_effects(one, "yes", "no")
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\), got 0"):
        mixed_effects(grid, "yes", "no", confidence=0)


def test_statsmodels_warnings_go_into_the_note_not_the_terminal():
    # 4 subjects x 4 volumes with no subject variance: the random-effects covariance is singular
    rng = np.random.default_rng(1)
    subject = np.repeat(np.arange(4), 4)
    treated = np.tile([0, 0, 1, 1], 4)
    y = rng.normal(size=subject.size) + 2.0 * treated
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        fitted = mixed_effect(y, subject, treated)
    assert "Random effects covariance is singular" in fitted.note
    assert np.isfinite(fitted.estimate)
