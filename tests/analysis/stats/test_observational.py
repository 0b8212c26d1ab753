"""Cohort tests against scipy.stats, a hand Welch interval and a directly fitted statsmodels OLS."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from cfx.analysis.stats.observational import cohort_effects, concordance, group_tests, ols_effect


@pytest.fixture
def cohort(rng):
    n = 50
    frame = pd.DataFrame({
        "lung mean": rng.normal(-820, 20, n),
        "smoking": rng.choice(["former", "no", "yes"], n),
        "age": rng.normal(62, 9, n),
        "sex": rng.choice(["F", "M"], n),
    })
    frame.loc[frame.smoking == "yes", "lung mean"] += 25
    frame["lung mean"] -= 0.4 * (frame["age"] - 60)
    frame.loc[[3, 7], "age"] = np.nan
    frame.loc[11, "lung mean"] = np.nan
    return frame


def test_group_tests_match_scipy_and_hand_welch(cohort):
    result = group_tests(cohort, "lung mean", "smoking", reference="no", confidence=0.9)
    assert list(result["level"]) == ["former", "yes"]
    complete = cohort.dropna(subset=["lung mean"])
    a = complete.loc[complete.smoking == "yes", "lung mean"].to_numpy()
    b = complete.loc[complete.smoking == "no", "lung mean"].to_numpy()
    row = result.set_index("level").loc["yes"]
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert (row["t"], row["p_welch"]) == pytest.approx((welch.statistic, welch.pvalue))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = stats.t.ppf(0.95, df) * np.sqrt(va + vb)
    diff = a.mean() - b.mean()
    assert row["df"] == pytest.approx(df)
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (diff, diff - half, diff + half))
    mwu = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert (row["u"], row["p_mannwhitney"]) == pytest.approx((mwu.statistic, mwu.pvalue))
    assert (row["n_level"], row["n_reference"]) == (a.size, b.size)


def test_group_tests_default_reference_is_the_first_sorted_level(cohort):
    two = cohort[cohort.smoking != "former"]
    result = group_tests(two, "lung mean", "smoking")
    assert result[["level", "reference"]].values.tolist() == [["yes", "no"]]


def test_ols_effect_matches_a_directly_fitted_ols(cohort):
    result = ols_effect(cohort, "lung mean", "smoking", ["age", "sex"], reference="no")
    data = cohort.dropna(subset=["lung mean", "smoking", "age", "sex"])
    design = np.column_stack([
        np.ones(len(data)),
        (data.smoking == "former").astype(float),
        (data.smoking == "yes").astype(float),
        data["age"],
        (data.sex == "M").astype(float),
    ])
    direct = sm.OLS(data["lung mean"].to_numpy(), design).fit()
    interval = direct.conf_int(0.05)
    assert list(result["level"]) == ["former", "yes"]
    assert result["estimate"].to_numpy() == pytest.approx(direct.params[1:3])
    assert result["ci_low"].to_numpy() == pytest.approx(interval[1:3, 0])
    assert result["ci_high"].to_numpy() == pytest.approx(interval[1:3, 1])
    assert result["p"].to_numpy() == pytest.approx(direct.pvalues[1:3])
    assert result["n"].tolist() == [47, 47] and len(data) == 47


def test_ols_effect_of_a_numeric_attribute(cohort):
    result = ols_effect(cohort, "lung mean", "age", ["smoking"], confidence=0.8)
    data = cohort.dropna()
    design = np.column_stack([np.ones(len(data)), data["age"],
                              (data.smoking == "no").astype(float),
                              (data.smoking == "yes").astype(float)])
    direct = sm.OLS(data["lung mean"].to_numpy(), design).fit()
    assert result.loc[0, "estimate"] == pytest.approx(direct.params[1])
    assert result.loc[0, "ci_low"] == pytest.approx(direct.conf_int(0.2)[1, 0])
    assert result.loc[0, "level"] is None and result.loc[0, "reference"] is None


def test_concordance_side_by_side():
    cf = pd.DataFrame({"estimate": [20.0, 1.0], "ci_low": [18.0, -1.0], "ci_high": [22.0, 3.0]},
                      index=["yes", "former"])
    obs = pd.DataFrame({"estimate": [25.0, 0.0], "ci_low": [15.0, -4.0],
                        "ci_high": [35.0, 4.0]}, index=["yes", "former"])
    result = concordance(cf, obs)
    yes = result.loc["yes"]
    z = stats.norm.ppf(0.975)
    se = np.hypot(4 / (2 * z), 20 / (2 * z))
    assert yes["difference"] == -5.0 and yes["ratio"] == pytest.approx(0.8)
    assert (yes["difference_ci_low"], yes["difference_ci_high"]) == pytest.approx(
        (-5 - z * se, -5 + z * se))
    assert yes["cis_overlap"] and yes["note"] == ""
    former = result.loc["former"]
    assert np.isnan(former["ratio"]) and former["note"].startswith("observational estimate is 0")


def test_observational_errors(cohort):
    with pytest.raises(ValueError, match=r"frame: missing column\(s\) \['bmi'\]"):
        group_tests(cohort, "bmi", "smoking")
    with pytest.raises(ValueError, match="outcome: 'sex' has dtype .*; expected a numeric column"):
        group_tests(cohort, "sex", "smoking")
    with pytest.raises(ValueError, match=r"attribute: 'smoking' has levels \['no'\] in the "
                                         r"complete rows"):
        group_tests(cohort[cohort.smoking == "no"], "lung mean", "smoking")
    with pytest.raises(ValueError, match=r"reference: 'never' is not a level of 'smoking'"):
        group_tests(cohort, "lung mean", "smoking", reference="never")
    few = pd.concat([cohort[cohort.smoking == "no"], cohort[cohort.smoking == "yes"].head(1)])
    with pytest.raises(ValueError, match=r"level\(s\) \{'yes': 1\} of 'smoking' have fewer than 2"):
        group_tests(few, "lung mean", "smoking")
    flat = pd.DataFrame({"y": [1.0, 1.0, 2.0, 2.0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(ValueError, match="outcome: 'y' is constant within both 'b' and 'a'"):
        group_tests(flat, "y", "g")
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\), got 2"):
        group_tests(cohort, "lung mean", "smoking", confidence=2)
    with pytest.raises(ValueError, match="covariates: outcome, attribute and covariates must be "
                                         "distinct"):
        ols_effect(cohort, "lung mean", "smoking", ["smoking"])
    with pytest.raises(ValueError, match=r"reference: 'never' must be one of at least 2 levels"):
        ols_effect(cohort, "lung mean", "smoking", reference="never")
    with pytest.raises(ValueError, match=r"frame: 3 complete rows for 4 coefficients"):
        ols_effect(cohort.dropna().head(3), "lung mean", "smoking", ["age"])
    collinear = cohort.assign(age_months=cohort["age"] * 12)
    with pytest.raises(ValueError, match=r"covariates: 'smoking' and \['age', 'age_months'\] are "
                                         r"collinear"):
        ols_effect(collinear, "lung mean", "smoking", ["age", "age_months"])
    effect = pd.DataFrame({"estimate": [1.0], "ci_low": [0.0], "ci_high": [2.0]}, index=["a"])
    with pytest.raises(ValueError, match=r"observational: missing column\(s\) \['ci_low'\]"):
        concordance(effect, effect.drop(columns="ci_low"))
    with pytest.raises(ValueError, match="observational: shares no index entry"):
        concordance(effect, effect.set_axis(["b"]))


def _tidy(frame, outcomes):
    """A tidy region table (one row per subject x region x metric) from wide outcome columns."""
    rows = [{"subject": f"S{i}", "region": region, "metric": metric, "estimate": frame.at[i, col],
             "unit": "HU"} for col, (region, metric) in outcomes.items() for i in frame.index]
    return pd.DataFrame(rows).dropna(subset=["estimate"])


def test_cohort_effects_equal_the_per_outcome_tests(cohort):
    cohort = cohort.assign(subject=[f"S{i}" for i in cohort.index],
                           upper=cohort["lung mean"] * 0.5 + 3.0)
    table = _tidy(cohort, {"lung mean": ("lung", "mean"), "upper": ("lung-upper", "mean")})
    clinical = cohort[["subject", "smoking", "age", "sex"]]
    got = cohort_effects(table, clinical, "smoking", ["age", "sex"], reference="no")
    assert list(zip(got.level, got.region, strict=True)) == [
        ("former", "lung"), ("yes", "lung"), ("former", "lung-upper"), ("yes", "lung-upper")]
    row = got[(got.level == "yes") & (got.region == "lung")].iloc[0]
    naive = group_tests(cohort, "lung mean", "smoking", "no").set_index("level").loc["yes"]
    adjusted = ols_effect(cohort, "lung mean", "smoking", ["age", "sex"], reference="no")
    adjusted = adjusted.set_index("level").loc["yes"]
    assert (row.naive_estimate, row.naive_ci_low, row.naive_ci_high, row.p_welch,
            row.p_mannwhitney) == pytest.approx((naive.estimate, naive.ci_low, naive.ci_high,
                                                 naive.p_welch, naive.p_mannwhitney))
    assert (row.estimate, row.ci_low, row.ci_high, row.p, row.n) == pytest.approx(
        (adjusted.estimate, adjusted.ci_low, adjusted.ci_high, adjusted.p, adjusted.n))
    assert row.unit == "HU" and row.covariates == "age,sex" and row.note == ""
    # an affine outcome: the same p-values, estimates scaled by 0.5
    upper = got[(got.level == "yes") & (got.region == "lung-upper")].iloc[0]
    assert upper.estimate == pytest.approx(0.5 * row.estimate)
    assert upper.p == pytest.approx(row.p)
    # Holm over the whole table (4 tests), by hand
    order = np.argsort(got.p.to_numpy())
    expected = np.minimum(1, np.maximum.accumulate(got.p.to_numpy()[order] * (4 - np.arange(4))))
    np.testing.assert_allclose(got.p_holm.to_numpy()[order], expected)


def test_cohort_effects_of_a_numeric_attribute_are_slopes(cohort):
    cohort = cohort.assign(subject=[f"S{i}" for i in cohort.index])
    table = _tidy(cohort, {"lung mean": ("lung", "mean")})
    got = cohort_effects(table, cohort[["subject", "age", "sex"]], "age", ["sex"]).iloc[0]
    naive = ols_effect(cohort, "lung mean", "age").iloc[0]
    adjusted = ols_effect(cohort, "lung mean", "age", ["sex"]).iloc[0]
    assert got.level is None and got.reference is None and np.isnan(got.p_welch)
    assert got.naive_estimate == pytest.approx(naive.estimate)
    assert got.estimate == pytest.approx(adjusted.estimate)
    assert got.n == adjusted.n == len(cohort.dropna(subset=["lung mean", "age", "sex"]))


def test_cohort_effects_note_an_undefined_metric_and_refuse_structural_problems(cohort):
    cohort = cohort.assign(subject=[f"S{i}" for i in cohort.index], flat=0.0)
    table = _tidy(cohort, {"lung mean": ("lung", "mean"), "flat": ("lung", "laa950")})
    clinical = cohort[["subject", "smoking", "age"]]
    got = cohort_effects(table, clinical, "smoking", ["age"], reference="no")
    flat = got[got.metric == "laa950"]
    assert flat.naive_estimate.isna().all() and "constant within both" in flat.note.iloc[0]
    assert got[got.metric == "mean"].note.eq("").all()
    with pytest.raises(ValueError, match=r"clinical: no row for subject\(s\) \['S0'\]"):
        cohort_effects(table, clinical[clinical.subject != "S0"], "smoking")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['height'\]"):
        cohort_effects(table, clinical, "smoking", ["height"])
    with pytest.raises(ValueError, match=r"level\(s\) \{'former': 1\} of 'smoking' have fewer"):
        few = clinical.assign(smoking=np.where(np.arange(len(clinical)) == 0, "former",
                                               np.where(clinical.smoking == "former", "no",
                                                        clinical.smoking)))
        cohort_effects(table, few, "smoking")
    with pytest.raises(ValueError, match="several rows for one region x metric"):
        cohort_effects(pd.concat([table, table.iloc[:1]]), clinical, "smoking")
