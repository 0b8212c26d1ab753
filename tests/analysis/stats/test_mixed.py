"""Mixed model of paired differences against statsmodels' formula fit and scipy's t-test, and its
exact (no variance) case."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from cfx.analysis.stats.effects import effect_table
from cfx.analysis.stats.grid import SweepGrid
from cfx.analysis.stats.mixed import EXACT_NOTE, mixed_effect, mixed_effects


def _deltas(rng, n_subjects=10, n_seeds=3, effect=4.0, subject_sd=3.0, seed_sd=2.0):
    subject = np.repeat(np.arange(n_subjects), n_seeds)
    delta = (effect + rng.normal(0, subject_sd, n_subjects)[subject]
             + rng.normal(0, seed_sd, subject.size))
    return delta, subject


def test_noisy_effect_agrees_with_a_direct_statsmodels_fit_and_the_t_test_of_subject_means(rng):
    delta, subject = _deltas(rng)
    got = mixed_effect(delta, subject, confidence=0.9)
    frame = pd.DataFrame({"d": delta, "s": subject})
    direct = smf.mixedlm("d ~ 1", frame, groups=frame["s"]).fit(reml=True)
    assert float(direct.cov_re.iloc[0, 0]) > 0  # off the boundary: REML's se is the exact one
    b, se = direct.fe_params["Intercept"], direct.bse_fe["Intercept"]
    assert got.estimate == pytest.approx(b, rel=1e-8)
    # REML's se agrees to the optimiser's tolerance (~1e-5 relative)
    assert got.p == pytest.approx(2 * stats.t.sf(abs(b) / se, 9), rel=1e-3)
    half = stats.t.ppf(0.95, 9) * se
    assert (got.ci_low, got.ci_high) == pytest.approx((b - half, b + half), rel=1e-4)
    assert got.subject_var == pytest.approx(float(direct.cov_re.iloc[0, 0]), rel=1e-5)
    assert got.residual_var == pytest.approx(direct.scale, rel=1e-5)
    means = frame.groupby("s")["d"].mean()
    assert got.p == pytest.approx(stats.ttest_1samp(means, 0.0).pvalue, rel=1e-9)
    assert np.isfinite(got.p) and got.note == ""


def test_at_the_boundary_the_test_is_still_the_t_test_of_subject_means():
    # equal effects: REML puts the subject variance at 0 and would pool the seed variance
    rng = np.random.default_rng(3)
    delta, subject = _deltas(rng, n_subjects=6, n_seeds=4, subject_sd=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mixed_effect(delta, subject)
    means = pd.Series(delta).groupby(subject).mean()
    assert got.p == pytest.approx(stats.ttest_1samp(means, 0.0).pvalue, rel=1e-6)
    assert got.subject_var < 1e-3 * got.residual_var
    assert "mixed model:" in got.note  # statsmodels' boundary warning, kept off the terminal


def test_mixed_effects_on_a_grid_match_the_single_fit(rng, sweep):
    table = sweep(rng, n_subjects=6, n_seeds=3)
    grid = SweepGrid.from_table(table, ["no", "yes"])
    frame = mixed_effects(grid, "yes", "no", confidence=0.9)
    wide = table[(table.region == "lung") & (table.metric == "mean")].pivot(
        index=["subject", "seed"], columns="value", values="estimate")
    single = mixed_effect(wide["yes"] - wide["no"], wide.index.get_level_values("subject"),
                          confidence=0.9)
    assert frame.loc[("lung", "mean"), "estimate"] == pytest.approx(single.estimate)
    assert frame.loc[("lung", "mean"), "ci_low"] == pytest.approx(single.ci_low, rel=1e-6)
    assert frame.loc[("lung", "mean"), "p"] == pytest.approx(single.p, rel=1e-6)
    assert frame.loc[("lung", "mean"), "estimate"] == pytest.approx(
        grid.deltas("yes", "no")[("lung", "mean")].mean())


def test_exact_delta_at_every_seed_gives_no_p_value_and_says_exact():
    # an oracle at 3 seeds: the effect differs between subjects, not between seeds
    subject = np.repeat(np.arange(8), 3)
    per_subject = np.array([7.2, 7.9, 7.5, 8.1, 7.0, 7.7, 8.3, 7.6])
    got = mixed_effect(per_subject[subject], subject)
    assert np.isnan(got.p) and np.isnan(got.ci_low) and np.isnan(got.ci_high)
    assert got.note.startswith(EXACT_NOTE) and EXACT_NOTE == "exact (no variance)"
    assert got.estimate == pytest.approx(per_subject.mean())
    assert got.subject_var == pytest.approx(per_subject.var(ddof=1))
    assert got.residual_var == 0.0


def test_exact_and_equal_delta_is_the_exact_difference():
    subject = np.repeat(np.arange(5), 2)
    got = mixed_effect(np.full(10, 20.0), subject)
    assert (got.estimate, got.ci_low, got.ci_high) == (20.0, 20.0, 20.0)
    assert np.isnan(got.p) and "the effect is the exact difference" in got.note


def test_oracle_sweep_at_several_seeds_reports_exact_not_a_tiny_p(rng):
    """What produced mixed_p = 1e-73 from 8 subjects: each seed moves both values alike (shared
    noise), the effect differs by subject, and Delta is the same at every seed."""
    effect = rng.normal(7.7, 0.4, 8)
    rows = []
    for s, k in itertools.product(range(8), range(3)):
        base = -820.0 + 10.0 * s + rng.normal(0, 0.8)  # the seed's noise, shared by both values
        for value, shift in (("alive", 0.0), ("dead", effect[s])):
            rows.append((f"P{s}", value, k, "lung", "mean", base + shift, "HU"))
    table = pd.DataFrame(rows, columns=["subject", "value", "seed", "region", "metric",
                                        "estimate", "unit"])
    (row,) = effect_table(table, "alive", n_bootstrap=200).to_dict("records")
    assert np.isnan(row["mixed_p"]) and EXACT_NOTE in row["note"]
    assert row["mixed_estimate"] == pytest.approx(effect.mean())
    assert row["p_t"] == pytest.approx(stats.ttest_1samp(effect, 0.0).pvalue, rel=1e-6)


def test_mixed_errors(rng, sweep):
    delta, subject = _deltas(rng, n_subjects=3, n_seeds=2)
    with pytest.raises(ValueError, match=r"expected two 1-D arrays of one length, got shapes "
                                         r"\(6,\), \(5,\)"):
        mixed_effect(delta, subject[:5])
    with pytest.raises(ValueError, match="delta: holds non-finite values"):
        mixed_effect(np.r_[np.nan, delta[1:]], subject)
    with pytest.raises(ValueError, match="subject: got 1 subject"):
        mixed_effect(delta, np.zeros_like(subject))
    with pytest.raises(ValueError, match="subject: subjects have 1 to 2 pairs"):
        mixed_effect(delta[1:], subject[1:])
    with pytest.raises(ValueError, match="subject: every subject has one pair"):
        mixed_effect(delta[:3], np.arange(3))
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\), got 1.5"):
        mixed_effect(delta, subject, confidence=1.5)
    grid = SweepGrid.from_table(sweep(rng, n_subjects=3, n_seeds=2), ["no", "yes"])
    with pytest.raises(ValueError, match=r"value, reference: \['maybe'\] not in the grid's values"):
        mixed_effects(grid, "maybe", "no")
    one = SweepGrid.from_table(sweep(rng, n_subjects=1, n_seeds=2), ["no", "yes"])
    with pytest.raises(ValueError, match="subject: got 1 subject"):
        mixed_effects(one, "yes", "no")
    single_seed = SweepGrid.from_table(sweep(rng, n_subjects=3, n_seeds=1), ["no", "yes"])
    with pytest.raises(ValueError, match="grid: has one seed"):
        mixed_effects(single_seed, "yes", "no")
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\), got 0"):
        mixed_effects(grid, "yes", "no", confidence=0)


def test_statsmodels_warnings_go_into_the_note_not_the_terminal():
    # 4 subjects x 4 seeds with no subject variance: the random-effects covariance is singular
    rng = np.random.default_rng(1)
    subject = np.repeat(np.arange(4), 4)
    delta = rng.normal(size=subject.size) + 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        fitted = mixed_effect(delta, subject)
    assert "mixed model:" in fitted.note
    assert np.isfinite(fitted.estimate) and np.isfinite(fitted.p)
