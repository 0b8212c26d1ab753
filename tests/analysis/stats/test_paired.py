"""Paired statistics against scipy.stats and hand computations; degenerate Delta."""

from dataclasses import asdict
from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cfx.analysis.stats.paired import PairedTest, paired_test, paired_tests


def _exact_sign_p(n_positive, n_negative):
    n, k = n_positive + n_negative, min(n_positive, n_negative)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def test_paired_statistics_match_scipy_and_hand(rng):
    reference = rng.normal(-850, 30, 17)
    value = reference + rng.normal(4, 6, 17)
    delta = value - reference
    got = paired_test(delta, n_bootstrap=500)

    t_ref = stats.ttest_rel(value, reference)
    assert got.t == pytest.approx(t_ref.statistic, rel=1e-10)
    assert got.p_t == pytest.approx(t_ref.pvalue, rel=1e-10)
    half = stats.t.ppf(0.975, 16) * np.std(delta, ddof=1) / np.sqrt(17)
    assert (got.ci_low, got.ci_high) == pytest.approx((delta.mean() - half, delta.mean() + half))
    w_ref = stats.wilcoxon(value, reference)
    assert (got.wilcoxon_w, got.p_wilcoxon) == pytest.approx((w_ref.statistic, w_ref.pvalue))
    n_pos, n_neg = int((delta > 0).sum()), int((delta < 0).sum())
    assert (got.n_positive, got.n_negative) == (n_pos, n_neg)
    assert got.p_sign == pytest.approx(_exact_sign_p(n_pos, n_neg), rel=1e-12)
    assert got.p_sign == pytest.approx(stats.binomtest(n_pos, 17).pvalue)
    assert got.d_z == pytest.approx(delta.mean() / np.std(delta, ddof=1))
    assert got.share_positive == n_pos / 17
    assert got.n == 17 and got.note == ""


@pytest.mark.parametrize("method, fields", [("percentile", ("boot_low", "boot_high")),
                                            ("BCa", ("bca_low", "bca_high"))])
def test_bootstrap_equals_scipy_for_the_same_seed(rng, method, fields):
    delta = rng.gamma(2.0, 3.0, 23)  # skewed, so BCa differs from the percentile interval
    got = paired_test(delta, n_bootstrap=1500, random_state=11, confidence=0.9)
    ref = stats.bootstrap((delta,), np.mean, n_resamples=1500, confidence_level=0.9,
                          method=method, rng=np.random.default_rng(11)).confidence_interval
    assert (getattr(got, fields[0]), getattr(got, fields[1])) == pytest.approx(
        (ref.low, ref.high), rel=1e-10)


@pytest.mark.parametrize("confidence, expected", [
    (0.95, (2.121944444444445, 7.178055555555553, 2.430248383318217, 7.588307832417974)),
    (0.80, (2.843333333333333, 6.288888888888889, 3.055555555555556, 6.555555555555555)),
])
def test_bootstrap_intervals_equal_the_hand_written_bca_they_replaced(confidence, expected):
    # numbers of the hand-written percentile + BCa code (Efron & Tibshirani 14.3, jackknife
    # acceleration) at commit 87f90e3, before scipy.stats.bootstrap(method="BCa") replaced it
    delta = [3.1, -0.4, 7.9, 2.2, 12.5, 0.8, 4.4, 1.6, 9.3]
    got = paired_test(delta, n_bootstrap=2000, random_state=7, confidence=confidence)
    assert (got.boot_low, got.boot_high, got.bca_low, got.bca_high) == pytest.approx(
        expected, rel=1e-12)


def test_bootstrap_is_seeded_and_covers_the_true_mean():
    covered = 0
    for i in range(40):
        delta = np.random.default_rng(100 + i).normal(5.0, 2.0, 30)
        got = paired_test(delta, n_bootstrap=400, random_state=i)
        covered += got.bca_low < 5.0 < got.bca_high and got.boot_low < 5.0 < got.boot_high
        again = paired_test(delta, n_bootstrap=400, random_state=np.random.default_rng(i))
        assert again == got
    assert covered >= 34  # 95 % nominal; P(fewer than 34 of 40) < 1 %
    other = paired_test(delta, n_bootstrap=400, random_state=1234)
    assert other.bca_low != got.bca_low


def test_oracle_constant_delta_is_reported_with_a_note():
    got = paired_test(np.full(10, 20.0))
    assert got.estimate == 20.0
    assert (got.ci_low, got.ci_high, got.boot_low, got.bca_high) == (20.0, 20.0, 20.0, 20.0)
    assert np.isnan(got.t) and np.isnan(got.p_t) and np.isnan(got.d_z)
    assert got.p_wilcoxon == pytest.approx(2 / 2 ** 10)
    assert got.p_sign == pytest.approx(2 / 2 ** 10)
    assert got.share_positive == 1.0
    assert "Delta is +20 for every subject" in got.note
    assert "t-test and d_z are undefined" in got.note


def test_float_noise_around_a_constant_counts_as_constant():
    got = paired_test(20.0 + np.random.default_rng(0).normal(0, 1e-7, 12))
    assert np.isnan(got.p_t) and got.note.startswith("Delta is +20")
    assert got.ci_high - got.ci_low < 1e-5


def test_all_zero_and_some_zero_delta():
    zero = paired_test(np.zeros(6))
    assert zero.estimate == 0.0 and np.isnan(zero.p_wilcoxon) and np.isnan(zero.p_sign)
    assert "Delta is 0 for every subject" in zero.note
    some = paired_test([0.0, 0.0, 1.0, 2.0, -0.5, 3.0, 1.5])
    assert some.p_sign == pytest.approx(_exact_sign_p(4, 1))
    assert some.share_positive == pytest.approx(4 / 7)
    assert "2 subject(s) with Delta = 0 left out" in some.note


def test_paired_tests_runs_every_column_with_shared_resamples(rng):
    deltas = pd.DataFrame(rng.normal(size=(9, 3)), columns=["a", "b", "c"])
    table = paired_tests(deltas, n_bootstrap=300, random_state=4)
    assert list(table.index) == ["a", "b", "c"]
    assert list(table.columns) == [f for f in PairedTest.__dataclass_fields__]
    single = paired_test(deltas["b"], n_bootstrap=300, random_state=4)
    expected = asdict(single)
    assert table.loc["b"].pop("note") == expected.pop("note") == ""
    assert table.loc["b"].drop("note").to_dict() == pytest.approx(expected, rel=1e-12)
    shifted = paired_tests(deltas + 1.0, n_bootstrap=300, random_state=4)
    assert shifted["boot_low"].to_numpy() == pytest.approx(table["boot_low"].to_numpy() + 1.0)


def test_paired_errors():
    with pytest.raises(ValueError, match=r"delta: expected one value per subject \(1-D\), got "
                                         r"shape \(2, 2\)"):
        paired_test(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="delta: got 1 subject"):
        paired_test([3.0])
    with pytest.raises(ValueError, match=r"delta: holds 1 non-finite value"):
        paired_test([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match=r"confidence: expected a level in \(0, 1\), got 95"):
        paired_test([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="n_bootstrap: expected an integer >= 100, got 10"):
        paired_test([1.0, 2.0], n_bootstrap=10)
    with pytest.raises(ValueError, match=r"deltas: expected a subjects x tests matrix \(2-D\)"):
        paired_tests(np.zeros(4))
    with pytest.raises(ValueError, match=r"deltas: columns \['b'\] hold non-finite values"):
        paired_tests(pd.DataFrame({"a": [1.0, 2.0], "b": [np.inf, 1.0]}))
