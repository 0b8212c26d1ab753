"""Null calibration of every p-value cfx reports.

Each check simulates data under a null hypothesis, runs the public function the tool calls, and
counts rejections at alpha = 0.05. The count must lie inside the binomial 99 % interval around the
test's exact size: alpha itself for a continuous test, or the largest attainable level not above
alpha for a discrete one (sign test, Wilcoxon), computed here independently of the code under
test. The ``slow`` versions use 900 repetitions (interval about +-1.9 %); the default ``fast``
versions use fewer and a wider interval from the same binomial quantiles.

Which p-value is which:

============================  ===============================  ================================
p-value                       public function                  null simulated
============================  ===============================  ================================
paired t, Wilcoxon, sign      cfx.analysis.stats.paired            Delta ~ N(0, 1), 10 subjects
mixed model                   cfx.analysis.stats.mixed             8 subjects x 3 seeds, effect
                                                               varying between subjects
Welch, Mann-Whitney, OLS      cfx.analysis.stats.observational     outcome independent of attribute
OLS with covariates           cfx.analysis.stats.observational     outcome and attribute both
                                                               depending on age (confounded)
Holm, Benjamini-Hochberg      cfx.analysis.stats.correction        20 independent uniform p-values
max-T FWE, voxelwise BH       cfx.analysis.permutation             10 subjects x 300 voxels
TFCE FWE                      cfx.analysis.permutation             10 subjects x 8x8x6 smooth maps
============================  ===============================  ================================
"""

import gc
import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from cfx.analysis.permutation import one_sample_permutation
from cfx.analysis.stats.correction import adjust_pvalues
from cfx.analysis.stats.mixed import mixed_effect
from cfx.analysis.stats.observational import cohort_effects
from cfx.analysis.stats.paired import paired_tests

ALPHA = 0.05
LEVEL = 0.99
SLOW = 900


def _repetitions(fast: int):
    return pytest.mark.parametrize("repetitions", [
        pytest.param(fast, id="fast"),
        pytest.param(SLOW, id="slow", marks=pytest.mark.slow),
    ])


def _assert_calibrated(rejections: int, repetitions: int, size: float = ALPHA) -> None:
    low, high = stats.binom.interval(LEVEL, repetitions, size)
    assert low <= rejections <= high, (
        f"{rejections} rejections in {repetitions} null repetitions; the {LEVEL:.0%} interval "
        f"around the size {size:.4f} is [{low:.0f}, {high:.0f}]")


def _sign_test_size(n: int) -> float:
    """Exact size of the two-sided sign test at ALPHA: P(binomial p-value <= ALPHA)."""
    k = np.arange(n + 1)
    tail = np.minimum(stats.binom.cdf(k, n, 0.5), stats.binom.sf(k - 1, n, 0.5))
    p = np.minimum(1.0, 2.0 * tail)
    return float(stats.binom.pmf(k, n, 0.5)[p <= ALPHA].sum())


def _wilcoxon_size(n: int) -> float:
    """Exact size of the two-sided signed-rank test at ALPHA, by enumerating all 2^n signs."""
    signs = np.array(list(itertools.product((0, 1), repeat=n)))
    w = signs @ np.arange(1, n + 1)  # rank sum of the positive differences
    values, counts = np.unique(w, return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    sf = 1.0 - np.r_[0.0, cdf[:-1]]
    p = np.minimum(1.0, 2.0 * np.minimum(cdf, sf))
    return float(counts[p <= ALPHA + 1e-12].sum() / counts.sum())


# --- paired tests: t, Wilcoxon, sign ---------------------------------------------------------

@_repetitions(fast=400)
def test_paired_t_wilcoxon_and_sign_tests_are_calibrated(repetitions):
    rng = np.random.default_rng(11)
    n = 10
    table = paired_tests(rng.normal(0.0, 1.0, (n, repetitions)), n_bootstrap=100)
    _assert_calibrated(int((table["p_t"] <= ALPHA).sum()), repetitions)
    _assert_calibrated(int((table["p_wilcoxon"] <= ALPHA).sum()), repetitions, _wilcoxon_size(n))
    _assert_calibrated(int((table["p_sign"] <= ALPHA).sum()), repetitions, _sign_test_size(n))


def test_exact_sizes_are_the_textbook_ones():
    # sign test, n = 10: reject at k <= 1 or k >= 9, 2 * 11 / 1024
    assert _sign_test_size(10) == pytest.approx(22 / 1024)
    # signed-rank, n = 10: two-sided 5 % critical value W <= 8 (tables), 2 * 25 / 1024
    assert _wilcoxon_size(10) == pytest.approx(50 / 1024)


# --- mixed model -------------------------------------------------------------------------------

@_repetitions(fast=60)
def test_mixed_model_p_is_calibrated(repetitions):
    rng = np.random.default_rng(12)
    n_subjects, n_seeds = 8, 3
    subject = np.repeat(np.arange(n_subjects), n_seeds)
    rejections = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # statsmodels warnings belong in the note
        for _ in range(repetitions):
            delta = (rng.normal(0.0, 1.0, n_subjects)[subject]  # effect differs by subject
                     + rng.normal(0.0, 0.5, subject.size))  # and by seed
            rejections += mixed_effect(delta, subject).p <= ALPHA
    _assert_calibrated(int(rejections), repetitions)


# --- observational tests ------------------------------------------------------------------------

def _cohort(rng, n_subjects):
    age = rng.normal(62.0, 10.0, n_subjects)
    smoker = rng.random(n_subjects) < 1.0 / (1.0 + np.exp(-0.15 * (age - 62.0)))
    return pd.DataFrame({"subject": [f"S{i:03d}" for i in range(n_subjects)],
                         "smoking": np.where(smoker, "yes", "no"), "age": age,
                         "sex": rng.choice(["female", "male"], n_subjects)})


def _outcomes(clinical, values):
    """Tidy table: one region x metric per repetition (column of ``values``)."""
    n_subjects, repetitions = values.shape
    return pd.DataFrame({
        "subject": np.repeat(clinical["subject"].to_numpy(), repetitions),
        "region": "lung",
        "metric": np.tile([f"m{r:04d}" for r in range(repetitions)], n_subjects),
        "estimate": values.ravel(),
    })


@_repetitions(fast=100)
def test_welch_mann_whitney_and_ols_are_calibrated(repetitions):
    rng = np.random.default_rng(13)
    clinical = _cohort(rng, 24)
    values = rng.normal(-820.0, 25.0, (24, repetitions))  # no relation to any attribute
    table = cohort_effects(_outcomes(clinical, values), clinical, "smoking", ("age", "sex"))
    assert len(table) == repetitions and table["note"].eq("").all()
    for column in ("p_welch", "p_mannwhitney", "p"):
        _assert_calibrated(int((table[column] <= ALPHA).sum()), repetitions)


@_repetitions(fast=100)
def test_ols_adjusted_for_a_confounder_is_calibrated(repetitions):
    rng = np.random.default_rng(14)
    clinical = _cohort(rng, 30)
    # lung HU falls with age, smokers are older, smoking itself does nothing
    values = (-820.0 - 0.8 * (clinical["age"].to_numpy()[:, None] - 62.0)
              + rng.normal(0.0, 5.0, (30, repetitions)))
    table = cohort_effects(_outcomes(clinical, values), clinical, "smoking", ("age",))
    _assert_calibrated(int((table["p"] <= ALPHA).sum()), repetitions)
    # the unadjusted comparison is confounded: it rejects far more often (a check of the null)
    assert (table["p_welch"] <= ALPHA).mean() > 3 * ALPHA


# --- corrections -------------------------------------------------------------------------------

def _uniform_families(rng, repetitions, m=20):
    """Exact null p-values of ``m`` independent tests, one family per row."""
    return rng.random((repetitions, m))


@_repetitions(fast=900)
def test_holm_controls_the_family_wise_error_at_the_global_null(repetitions, monkeypatch):
    # statsmodels' Holm runs gc.collect() on every call (0.14-0.35 s in a test process); skipping
    # the collection changes no number
    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)
    families = _uniform_families(np.random.default_rng(15), repetitions)
    rejected = sum(adjust_pvalues(row, "holm").min() <= ALPHA for row in families)
    # Holm rejects anything iff min p <= alpha / m
    _assert_calibrated(int(rejected), repetitions, 1.0 - (1.0 - ALPHA / 20) ** 20)


@_repetitions(fast=900)
def test_benjamini_hochberg_controls_the_false_discovery_rate_at_the_global_null(repetitions):
    families = _uniform_families(np.random.default_rng(15), repetitions)
    rejected = sum(adjust_pvalues(row, "fdr").min() <= ALPHA for row in families)
    # at the global null every discovery is false: FDR = FWER = alpha for independent tests
    _assert_calibrated(int(rejected), repetitions)


# --- voxelwise permutation inference --------------------------------------------------------------

@_repetitions(fast=300)
def test_max_t_fwe_and_voxelwise_fdr_are_calibrated(repetitions):
    rng = np.random.default_rng(16)
    fwe = fdr = 0
    for r in range(repetitions):
        data = rng.normal(0.0, 1.0, (10, 300))
        result = one_sample_permutation(data, n_permutations=199, random_state=r)
        fwe += result.p_fwe.min() <= ALPHA  # family-wise: any voxel rejected
        fdr += result.q_fdr.min() <= ALPHA  # independent voxels at the global null: FWER = alpha
    # p_fwe takes values k / 200: P(p_fwe <= 0.05) is exactly 10 / 200
    _assert_calibrated(int(fwe), repetitions)
    _assert_calibrated(int(fdr), repetitions)


@_repetitions(fast=120)
def test_tfce_fwe_is_calibrated(repetitions):
    rng = np.random.default_rng(17)
    rejections = 0
    for r in range(repetitions):
        noise = rng.normal(0.0, 1.0, (10, 8, 8, 6))
        data = ndimage.gaussian_filter(noise, sigma=(0, 1, 1, 1))  # smooth, like CT differences
        result = one_sample_permutation(data, n_permutations=199, tfce=True, random_state=r)
        rejections += result.p_tfce.min() <= ALPHA
    _assert_calibrated(int(rejections), repetitions)
