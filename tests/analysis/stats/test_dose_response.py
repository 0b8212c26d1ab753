import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm

from cfx.analysis.stats.dose_response import (
    DOSE_RESPONSE_COLUMNS,
    EXACT_NOTE,
    PER_DECADE,
    dose_response,
    subject_slopes,
)

AGES = (40, 60, 80)
COLUMNS = ["subject", "value", "seed", "region", "metric", "estimate", "unit"]


def build(rng, effect, n_subjects=8, values=AGES, n_seeds=2, noise_sd=1.0, seed_sd=2.0,
          metrics=("mean",)):
    """Tidy table: subject offset + seed shift (shared across values) + effect(value) + noise."""
    rows = []
    for s in range(n_subjects):
        offset = rng.normal(0, 20)
        for seed in range(n_seeds):
            shift = rng.normal(0, seed_sd)
            for value in values:
                for metric in metrics:
                    estimate = -850 + offset + shift + effect(value) + rng.normal(0, noise_sd)
                    rows.append((f"sub{s:02d}", value, seed, "lung", metric, estimate, "HU"))
    return pd.DataFrame(rows, columns=COLUMNS)


def seed_averaged(table):
    """One row per subject x value: the seed mean (the reference's own groupby)."""
    return table.groupby(["subject", "value"], as_index=False)["estimate"].mean()


@pytest.fixture
def noisy():
    return build(np.random.default_rng(7), lambda v: -0.4 * v)


def test_output_has_one_row_per_region_metric_and_the_documented_columns(noisy):
    table = pd.concat([noisy, noisy.assign(region="airway", estimate=noisy.estimate + 5)])
    result = dose_response(table)
    assert list(result.columns) == list(DOSE_RESPONSE_COLUMNS)
    assert result[["region", "metric"]].values.tolist() == [["airway", "mean"], ["lung", "mean"]]
    row = result.iloc[1]
    assert (row.n_subjects, row.n_values, row.n_seeds, row.linearity_df) == (8, 3, 2, 1)
    assert row.unit == "HU" and row.slope_unit == "HU per unit" and row.note == ""


def test_per_subject_slopes_match_linregress_on_seed_means(noisy):
    result = dose_response(noisy, confidence=0.9).iloc[0]
    means = seed_averaged(noisy)
    expected = {s: stats.linregress(g.value, g.estimate).slope for s, g in means.groupby("subject")}
    slopes = subject_slopes(noisy)[("lung", "mean")]
    assert slopes.to_dict() == pytest.approx(expected, rel=1e-10)
    values = np.array(list(expected.values()))
    assert np.polyfit(AGES, means[means.subject == "sub03"].estimate, 1)[0] == pytest.approx(
        expected["sub03"], rel=1e-10)
    assert result.subject_slope_mean == pytest.approx(values.mean(), rel=1e-10)
    assert result.subject_slope_sd == pytest.approx(values.std(ddof=1), rel=1e-10)
    low, high = stats.t.interval(0.9, values.size - 1, loc=values.mean(), scale=stats.sem(values))
    assert (result.subject_slope_ci_low, result.subject_slope_ci_high) == pytest.approx(
        (low, high), rel=1e-10)


def test_cohort_slope_matches_a_direct_mixedlm_fit_and_within_subject_least_squares(noisy):
    result = dose_response(noisy, confidence=0.95).iloc[0]
    means = seed_averaged(noisy)
    fit = smf.mixedlm("estimate ~ value", means, groups=means["subject"]).fit(reml=True)
    assert result.slope == pytest.approx(fit.fe_params["value"], rel=1e-6)
    assert result.subject_var == pytest.approx(fit.cov_re.iloc[0, 0], rel=1e-4)
    assert result.residual_var == pytest.approx(fit.scale, rel=1e-4)
    dof = 8 * (3 - 1) - 1
    half = stats.t.ppf(0.975, dof) * fit.bse["value"]
    assert (result.slope_ci_low, result.slope_ci_high) == pytest.approx(
        (fit.fe_params["value"] - half, fit.fe_params["value"] + half), rel=1e-5)
    # The t reference is exact because REML equals least squares with subject intercepts here.
    ols = smf.ols("estimate ~ value + C(subject)", means).fit()
    assert ols.df_resid == dof
    assert (result.slope_ci_low, result.slope_ci_high) == pytest.approx(
        tuple(ols.conf_int().loc["value"]), rel=1e-5)
    assert result.slope_p == pytest.approx(ols.pvalues["value"], rel=1e-4)


def test_linearity_lr_matches_a_hand_computation_from_two_ml_fits():
    table = build(np.random.default_rng(11), lambda v: -0.4 * v + 0.004 * (v - 60) ** 2,
                  values=(40, 50, 60, 70, 80), noise_sd=2.0)
    result = dose_response(table).iloc[0]
    means = seed_averaged(table)
    groups = means["subject"]
    linear = smf.mixedlm("estimate ~ value", means, groups=groups).fit(reml=False)
    factor = smf.mixedlm("estimate ~ C(value)", means, groups=groups).fit(reml=False)
    lr = 2 * (factor.llf - linear.llf)
    assert result.linearity_lr == pytest.approx(lr, rel=1e-5)
    assert result.linearity_df == 3
    assert result.linearity_p == pytest.approx(stats.chi2.sf(lr, 3), rel=1e-4)
    ols_linear = smf.ols("estimate ~ value + C(subject)", means).fit()
    ols_factor = smf.ols("estimate ~ C(value) + C(subject)", means).fit()
    anova = anova_lm(ols_linear, ols_factor)
    assert result.linearity_f == pytest.approx(anova["F"].iloc[1], rel=1e-8)
    assert result.linearity_f_p == pytest.approx(anova["Pr(>F)"].iloc[1], rel=1e-6)


def test_a_quadratic_effect_fails_linearity_and_a_linear_one_does_not():
    rng = np.random.default_rng(5)
    curved = dose_response(build(rng, lambda v: 0.02 * (v - 60) ** 2)).iloc[0]
    straight = dose_response(build(rng, lambda v: -0.4 * v)).iloc[0]
    assert curved.linearity_p < 1e-6 and curved.linearity_f_p < 1e-6
    assert straight.linearity_p > 0.05 and straight.linearity_f_p > 0.05


def test_an_exact_linear_oracle_gives_the_planted_slope_exactly_and_no_p_value():
    table = build(np.random.default_rng(2), lambda v: -0.4 * v, noise_sd=0.0, seed_sd=0.0)
    result = dose_response(table, per=PER_DECADE, attribute_unit="years").iloc[0]
    assert result.slope == pytest.approx(-4.0, abs=1e-9)
    assert (result.slope_ci_low, result.slope_ci_high) == pytest.approx((-4.0, -4.0), abs=1e-9)
    assert result.subject_slope_mean == pytest.approx(-4.0, abs=1e-9)
    assert result.subject_slope_sd == pytest.approx(0.0, abs=1e-9)
    assert np.isnan([result.slope_p, result.linearity_lr, result.linearity_p,
                     result.linearity_f_p]).all()
    assert result.note.startswith(EXACT_NOTE)
    assert result.slope_unit == "HU per 10 years" and result.per == 10.0
    np.testing.assert_allclose(subject_slopes(table), -0.4, atol=1e-12)


def test_an_exact_null_oracle_gives_slope_zero_exactly():
    table = build(np.random.default_rng(2), lambda v: 0.0, noise_sd=0.0, seed_sd=0.0)
    result = dose_response(table).iloc[0]
    assert result.slope == 0.0 and np.isnan(result.slope_p)
    assert result.note.startswith(EXACT_NOTE)


def test_exact_curvature_fits_the_slope_but_gives_no_linearity_p_value():
    table = build(np.random.default_rng(2), lambda v: 0.02 * (v - 50) ** 2, noise_sd=0.0,
                  seed_sd=0.0)
    result = dose_response(table).iloc[0]
    assert result.slope == pytest.approx(stats.linregress(AGES, [2.0, 2.0, 18.0]).slope)
    assert np.isfinite(result.slope_p)
    assert np.isnan(result.linearity_p) and np.isnan(result.linearity_f_p)
    assert f"linearity: {EXACT_NOTE}" in result.note


def test_string_values_are_parsed_sorted_and_selectable(noisy):
    as_text = noisy.assign(value=noisy.value.astype(str))
    shuffled = as_text.sample(frac=1.0, random_state=0)
    from_text = dose_response(shuffled, values=["80", "40", "60"])
    expected = dose_response(noisy)
    pd.testing.assert_frame_equal(from_text, expected)


def test_per_scales_every_slope_but_not_the_p_values(noisy):
    unit = dose_response(noisy).iloc[0]
    decade = dose_response(noisy, per=10).iloc[0]
    for column in ("subject_slope_mean", "subject_slope_sd", "subject_slope_ci_low",
                   "subject_slope_ci_high", "slope", "slope_ci_low", "slope_ci_high"):
        assert decade[column] == pytest.approx(10 * unit[column], rel=1e-12)
    assert decade.slope_p == unit.slope_p and decade.linearity_f_p == unit.linearity_f_p
    np.testing.assert_allclose(subject_slopes(noisy, per=10), 10 * subject_slopes(noisy))


def test_region_metrics_selects_the_rows():
    table = build(np.random.default_rng(4), lambda v: -0.4 * v, metrics=("mean", "pd15"))
    result = dose_response(table, region_metrics=[("lung", "pd15")])
    assert list(result.metric) == ["pd15"]
    assert subject_slopes(table, region_metrics=[("lung", "pd15")]).shape == (8, 1)


@pytest.mark.parametrize(("change", "kwargs", "message"), [
    (lambda t: t.assign(value=t.value.map({40: "young", 60: "mid", 80: "old"})), {},
     r"value: expected finite numbers for a dose-response, got 'young'"),
    (lambda t: t, {"values": [40, 80]}, r"value: a dose-response needs at least 3 distinct"),
    (lambda t: t, {"values": [40, "40.0", 80]}, r"value: a dose-response needs at least 3"),
    (lambda t: t[t.subject == "sub00"], {}, r"subject: got 1 subject\(s\)"),
    (lambda t: t, {"region_metrics": [("lung", "pd15")]},
     r"region_metrics: \[\('lung', 'pd15'\)\] not among"),
    (lambda t: t, {"confidence": 1.5}, r"confidence: expected a level in \(0, 1\), got 1.5"),
    (lambda t: t, {"per": 0}, r"per: expected a positive number of attribute units, got 0"),
    (lambda t: t.drop(columns="seed"), {}, r"table: missing column\(s\) \['seed'\]"),
    (lambda t: t.drop(index=t.index[0]), {}, "missing"),
])
def test_dose_response_errors(noisy, change, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dose_response(change(noisy), **kwargs)


def test_subject_slopes_checks_per(noisy):
    with pytest.raises(ValueError, match="per: expected a positive number"):
        subject_slopes(noisy, per=-1)


@pytest.mark.slow
def test_slope_and_linearity_p_values_are_calibrated_under_the_null():
    # 800 null sweeps: the 99 % binomial interval of a 5 % rejection rate is about +-2 %.
    rng = np.random.default_rng(2024)
    reps = 800
    slope_p, linearity_f_p = np.empty(reps), np.empty(reps)
    for i in range(reps):
        result = dose_response(build(rng, lambda v: 0.0, n_seeds=1, seed_sd=0.0)).iloc[0]
        slope_p[i], linearity_f_p[i] = result.slope_p, result.linearity_f_p
    low, high = stats.binom.interval(0.99, reps, 0.05)
    for p in (slope_p, linearity_f_p):
        assert low <= np.sum(p < 0.05) <= high
