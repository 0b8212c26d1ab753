"""Exhaustive sign-flip enumeration against a brute force over every sign vector."""

import itertools

import numpy as np
import pytest
from scipy import stats

from cfx.analysis.permutation import one_sample_permutation
from cfx.analysis.tfce import tfce as tfce_transform


def _brute_force(data, statistic, alternative):
    """Exact p-values: over all 2^n sign vectors, the share whose max statistic >= observed.

    ``statistic`` maps data (n_subjects, ...) to a map (...); the max is of |map| two-sided,
    of map ("greater") or -map ("less").
    """
    orient = {"two-sided": np.abs, "greater": lambda m: m, "less": lambda m: -m}[alternative]
    n_subjects = data.shape[0]
    maxima = []
    for signs in itertools.product((1.0, -1.0), repeat=n_subjects):
        flipped = data * np.asarray(signs).reshape((-1,) + (1,) * (data.ndim - 1))
        maxima.append(orient(statistic(flipped)).max())
    maxima = np.asarray(maxima)
    observed = orient(statistic(data))
    return (maxima[:, np.newaxis] >= observed.ravel() * (1 - 1e-9)).mean(axis=0).reshape(
        observed.shape), maxima


def _t(data):
    return stats.ttest_1samp(data, 0.0, axis=0).statistic


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_max_t_fwe_equals_brute_force_over_all_sign_vectors(rng, alternative):
    data = rng.standard_normal((7, 40))
    data[:, :5] += 1.2
    result = one_sample_permutation(data, n_permutations=1000, alternative=alternative)
    expected, maxima = _brute_force(data, _t, alternative)
    assert result.exhaustive
    assert result.n_permutations == (64 if alternative == "two-sided" else 128)
    np.testing.assert_allclose(result.p_fwe, expected, rtol=1e-12)
    # the null holds each distinct maximum once: the brute force's, each counted twice
    # two-sided (s and -s), once one-sided
    np.testing.assert_allclose(np.sort(np.repeat(result.h0_max_t, 2 if alternative ==
                                                 "two-sided" else 1)), np.sort(maxima),
                               rtol=1e-10)
    assert result.p_fwe.min() >= 1 / result.n_permutations


def test_tfce_fwe_equals_brute_force_over_all_sign_vectors(rng):
    data = rng.standard_normal((6, 6, 5, 4))
    data[:, 1:4, 1:4, 1:3] += 1.0
    result = one_sample_permutation(data, n_permutations=32, tfce=True)
    expected, maxima = _brute_force(data, lambda d: tfce_transform(_t(d)), "two-sided")
    assert result.exhaustive and result.n_permutations == 32
    np.testing.assert_allclose(result.p_tfce, expected, rtol=1e-12)
    np.testing.assert_allclose(np.sort(np.repeat(result.h0_max_tfce, 2)), np.sort(maxima),
                               rtol=1e-8)
    expected_t, _ = _brute_force(data, _t, "two-sided")
    np.testing.assert_allclose(result.p_fwe, expected_t, rtol=1e-12)


def test_each_distinct_flip_is_used_once_and_the_data_first(rng):
    data = rng.standard_normal((5, 30))
    result = one_sample_permutation(data, n_permutations=16)
    assert result.exhaustive and result.n_permutations == 16
    assert result.h0_max_t[0] == pytest.approx(np.abs(result.t).max(), rel=1e-12)
    # the strongest voxel: the data's own flip ties with it, so p >= 1/16, exactly
    assert result.p_fwe.min() >= 1 / 16


def test_random_draws_when_the_flips_outnumber_the_permutations(rng):
    data = rng.standard_normal((8, 20))
    random = one_sample_permutation(data, n_permutations=127)  # 2^7 = 128 distinct
    enumerated = one_sample_permutation(data, n_permutations=128)
    assert not random.exhaustive and random.n_permutations == 127
    assert enumerated.exhaustive and enumerated.n_permutations == 128
    one_sided = one_sample_permutation(data, n_permutations=128, alternative="greater")
    assert not one_sided.exhaustive  # one-sided needs all 2^8 = 256
    given = one_sample_permutation(data, 4, sign_flips=np.ones((4, 8)))
    assert not given.exhaustive


def test_exhaustive_mode_ignores_the_tail_method(rng):
    data = rng.standard_normal((6, 50))
    result = one_sample_permutation(data, n_permutations=1000, tail="gpd")
    expected, _ = _brute_force(data, _t, "two-sided")
    assert result.exhaustive and result.tail == "none" and result.tail_fit_t is None
    np.testing.assert_allclose(result.p_fwe, expected, rtol=1e-12)
