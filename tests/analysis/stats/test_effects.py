"""The effect table: an oracle sweep, family corrections, null calibration, errors."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cfx.analysis.stats.correction import adjust_pvalues
from cfx.analysis.stats.effects import effect_table
from cfx.analysis.stats.grid import SweepGrid
from cfx.analysis.stats.paired import paired_test


def test_oracle_sweep_reports_plus_20_hu_beside_the_noise_floor(rng, sweep):
    # exact oracle: Delta is +20 HU for every subject and seed; seeds still move the metric.
    table = sweep(rng, n_subjects=8, n_seeds=3, item_sd=0.0,
                  effects={"no": 0.0, "yes": 20.0, "null": 0.0})
    result = effect_table(table, "no", n_bootstrap=200)
    assert len(result) == 2 * 4
    yes = result[result.value == "yes"]
    assert yes["estimate"].to_numpy() == pytest.approx(20.0)
    assert (yes["ci_high"] - yes["ci_low"]).abs().max() < 1e-9
    assert yes["p_t"].isna().all()
    assert yes["p_wilcoxon"].to_numpy() == pytest.approx(2 / 2 ** 8)
    assert yes["note"].str.contains("Delta is \\+20 for every subject").all()
    assert yes["mixed_estimate"].to_numpy() == pytest.approx(20.0)
    # the seeds move both values alike, so Delta has no variance: no mixed p-value, exact CI
    assert yes[["mixed_ci_low", "mixed_ci_high"]].to_numpy() == pytest.approx(20.0)
    assert yes["mixed_p"].isna().all() and yes["note"].str.contains("exact \\(no variance\\)").all()
    assert (yes["noise_ci_low"] < 0).all() and (yes["noise_ci_high"] > 0).all()
    assert (yes["noise_sd"] > 1.0).all()
    null = result[result.value == "null"]
    assert null["estimate"].to_numpy() == pytest.approx(0.0, abs=1e-9)
    assert null["note"].str.contains("Delta is 0 for every subject").all()
    assert list(result[["n_subjects", "n_seeds", "unit"]].iloc[0]) == [8, 3, "HU"]


def test_rows_and_corrections_over_the_whole_family(rng, sweep):
    table = sweep(rng, n_subjects=6, n_seeds=1, item_sd=8.0,
                  effects={"no": 0.0, "yes": 5.0, "ex": 2.0})
    result = effect_table(table, "no", values=["ex", "yes"], n_bootstrap=200, random_state=3)
    assert list(result["value"].unique()) == ["ex", "yes"]
    assert not any(c.startswith(("mixed_", "noise_")) for c in result.columns)
    assert result["p_t_holm"].to_numpy() == pytest.approx(adjust_pvalues(result["p_t"], "holm"))
    assert result["p_wilcoxon_fdr"].to_numpy() == pytest.approx(
        adjust_pvalues(result["p_wilcoxon"], "fdr"))
    delta = SweepGrid.from_table(table, ["no", "yes"]).deltas("yes", "no")[("lung", "mean")]
    row = result[(result.value == "yes") & (result.region == "lung") & (result.metric == "mean")]
    expected = paired_test(delta, n_bootstrap=200, random_state=3)
    assert row["estimate"].item() == pytest.approx(expected.estimate)
    assert row["bca_low"].item() == pytest.approx(expected.bca_low)
    assert row["p_sign"].item() == pytest.approx(expected.p_sign)


def test_null_sweeps_give_uniform_paired_t_p_values():
    # 300 null datasets (one per metric column) of 12 subjects through the whole pipeline.
    rng = np.random.default_rng(7)
    n_subjects, n_tests = 12, 300
    level = rng.normal(-800, 30, (n_subjects, n_tests))
    frames = []
    for value in ("no", "yes"):
        estimate = level + rng.normal(0, 5, (n_subjects, n_tests))
        frames.append(pd.DataFrame({
            "subject": np.repeat(np.arange(n_subjects), n_tests), "value": value, "seed": 0,
            "region": "lung", "metric": np.tile([f"m{j:03d}" for j in range(n_tests)],
                                                n_subjects),
            "estimate": estimate.ravel()}))
    result = effect_table(pd.concat(frames), "no", n_bootstrap=100)
    assert len(result) == n_tests
    assert stats.kstest(result["p_t"], "uniform").pvalue > 0.01
    assert 0.01 <= (result["p_t"] < 0.05).mean() <= 0.10
    assert (result["p_t_holm"] < 0.05).sum() <= 1


def test_effect_table_errors(rng, sweep):
    table = sweep(rng, n_subjects=3, n_seeds=1)
    with pytest.raises(ValueError, match=r"table: missing column\(s\) \['estimate'\]"):
        effect_table(table.drop(columns="estimate"), "no")
    with pytest.raises(ValueError, match=r"reference: 'never' is not in the table's values "
                                         r"\['no', 'yes'\]"):
        effect_table(table, "never")
    with pytest.raises(ValueError, match=r"values: expected one or more values other than the "
                                         r"reference 'no', got \[\]"):
        effect_table(table[table.value == "no"], "no")
    with pytest.raises(ValueError, match="table: mismatched pairing"):
        effect_table(table.iloc[1:], "no")
    with pytest.raises(ValueError, match="delta: got 1 subject"):
        effect_table(table[table.subject == "sub00"], "no")
