"""One-sample sign-flip inference against scipy, statsmodels and nilearn's permuted_ols."""

import warnings

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cfx.analysis.permutation import one_sample_permutation
from cfx.analysis.tfce import tfce as tfce_transform

nilearn_mass_univariate = pytest.importorskip("nilearn.mass_univariate")


def nilearn_sign_flips(random_state, n_permutations, n_subjects):
    """The effective flips nilearn's permuted_ols (n_jobs=1) applies, draw by draw.

    permuted_ols seeds one worker from ``RandomState(random_state).randint(1, 2**31 - 2)``; the
    worker multiplies the (already flipped) data by a fresh ``randint(2) * 2 - 1`` column at every
    draw, so the flips applied to the original data are running products.
    """
    parent = np.random.RandomState(random_state)
    worker = np.random.RandomState(parent.randint(1, np.iinfo(np.int32).max - 1))
    current = np.ones(n_subjects)
    flips = np.empty((n_permutations, n_subjects))
    for b in range(n_permutations):
        current = current * (worker.randint(2, size=(n_subjects, 1)) * 2 - 1)[:, 0]
        flips[b] = current
    return flips


def test_t_p_and_q_maps_equal_scipy_and_statsmodels(rng):
    data = rng.normal(0.2, 1.0, size=(9, 300))
    result = one_sample_permutation(data, n_permutations=20)
    reference = stats.ttest_1samp(data, 0.0)
    np.testing.assert_allclose(result.t, reference.statistic, rtol=1e-12)
    np.testing.assert_allclose(result.p_uncorrected, reference.pvalue, rtol=1e-10)
    np.testing.assert_allclose(result.mean, data.mean(axis=0), rtol=1e-12)
    _, q_reference, _, _ = multipletests(reference.pvalue, method="fdr_bh")
    np.testing.assert_allclose(result.q_fdr, q_reference, rtol=1e-10)


@pytest.mark.parametrize("alternative", ["greater", "less"])
def test_one_sided_p_values_equal_scipy(rng, alternative):
    data = rng.normal(0.1, 1.0, size=(7, 50))
    result = one_sample_permutation(data, n_permutations=10, alternative=alternative)
    reference = stats.ttest_1samp(data, 0.0, alternative=alternative)
    np.testing.assert_allclose(result.p_uncorrected, reference.pvalue, rtol=1e-10)


def test_fwe_p_equals_nilearn_with_the_same_sign_flips(rng):
    n_subjects, n_permutations = 12, 200
    data = rng.standard_normal((n_subjects, 500))
    data[:, :40] += 1.5
    flips = nilearn_sign_flips(3, n_permutations, n_subjects)
    # a draw equal to +-1 everywhere would reproduce the data: keep the comparison tie-free
    assert not np.any(np.all(flips == flips[:, :1], axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = nilearn_mass_univariate.permuted_ols(
            np.ones((n_subjects, 1)),
            data,
            model_intercept=False,
            n_perm=n_permutations,
            two_sided_test=True,
            random_state=3,
            n_jobs=1,
        )
    result = one_sample_permutation(data, n_permutations, sign_flips=flips)
    np.testing.assert_allclose(result.t, reference["t"][0], rtol=1e-10)
    np.testing.assert_allclose(result.h0_max_t, reference["h0_max_t"][0], rtol=1e-10)
    np.testing.assert_allclose(result.p_fwe, 10.0 ** -reference["logp_max_t"][0], rtol=1e-12)
    assert result.p_fwe[:40].min() == pytest.approx(1 / (n_permutations + 1))


def test_fwe_p_one_sided_counts_like_nilearn(rng):
    data = rng.standard_normal((10, 200)) + 0.3
    flips = nilearn_sign_flips(5, 100, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = nilearn_mass_univariate.permuted_ols(
            np.ones((10, 1)), data, model_intercept=False, n_perm=100,
            two_sided_test=False, random_state=5, n_jobs=1,
        )
    result = one_sample_permutation(data, 100, alternative="greater", sign_flips=flips)
    np.testing.assert_allclose(result.p_fwe, 10.0 ** -reference["logp_max_t"][0], rtol=1e-12)


def test_draw_reproducing_the_data_counts_as_a_tie(rng):
    data = rng.standard_normal((6, 30))
    flips = np.ones((4, 6))
    flips[1:, 0] = -1
    result = one_sample_permutation(data, 4, sign_flips=flips)
    top = np.nanargmax(np.abs(result.t))
    # the identity draw reaches the observed maximum exactly: p >= 2 / 5
    assert result.p_fwe[top] >= 2 / 5


def test_seeded_draws_are_reproducible(rng):
    data = rng.standard_normal((8, 40))
    first = one_sample_permutation(data, 50, random_state=4)
    again = one_sample_permutation(data, 50, random_state=4)
    other = one_sample_permutation(data, 50, random_state=5)
    np.testing.assert_array_equal(first.h0_max_t, again.h0_max_t)
    assert not np.array_equal(first.h0_max_t, other.h0_max_t)


def test_fwe_false_positive_rate_is_nominal_on_null_data():
    # 200 null datasets: the share with any voxel at p_fwe <= 0.05 must be near 0.05
    rng = np.random.default_rng(11)
    n_datasets = 200
    hits = 0
    for i in range(n_datasets):
        data = rng.standard_normal((10, 100))
        result = one_sample_permutation(data, 99, random_state=i)
        hits += bool(np.min(result.p_fwe) <= 0.05)
    low, high = stats.binomtest(hits, n_datasets).proportion_ci(0.99)
    assert low <= 0.05 <= high, hits


def test_planted_region_found_inside_and_not_outside():
    rng = np.random.default_rng(2)
    data = rng.standard_normal((16, 12, 12, 10))
    data[:, 3:7, 3:7, 3:6] += 2.0
    result = one_sample_permutation(data, 200, tfce=True, random_state=1)
    region = np.zeros(data.shape[1:], dtype=bool)
    region[3:7, 3:7, 3:6] = True
    assert np.mean(result.p_fwe[region] <= 0.05) > 0.8
    assert np.all(result.p_fwe[~region] > 0.05)
    assert np.all(result.p_tfce[region] <= 0.05)
    assert np.mean(result.p_tfce[~region] <= 0.05) < 0.05
    assert result.t.shape == data.shape[1:]


def test_tfce_map_and_null_match_the_tfce_of_t_maps(rng):
    data = rng.standard_normal((8, 6, 7, 5))
    flips = np.where(rng.random((15, 8)) < 0.5, -1.0, 1.0)
    result = one_sample_permutation(data, 15, tfce=True, sign_flips=flips)
    np.testing.assert_allclose(result.tfce, tfce_transform(result.t), rtol=1e-10)
    permuted = [
        one_sample_permutation(data * f[:, None, None, None], 1, sign_flips=np.ones((1, 8))).t
        for f in flips
    ]
    expected = [np.abs(tfce_transform(t)).max() for t in permuted]
    np.testing.assert_allclose(result.h0_max_tfce, expected, rtol=1e-8)
    manual = (1 + (np.asarray(expected)[:, None] >= np.abs(result.tfce).ravel()).sum(0)) / 16
    np.testing.assert_allclose(result.p_tfce.ravel(), manual)


def test_mask_restricts_tested_voxels_and_leaves_nan_outside(rng):
    data = rng.standard_normal((6, 5, 5, 4))
    data[:, 0] = np.nan  # outside the mask: never read
    mask = np.zeros((5, 5, 4), dtype=bool)
    mask[1:4, 1:4, 1:3] = True
    result = one_sample_permutation(data, 30, tfce=True, mask=mask)
    for name in ("mean", "t", "p_uncorrected", "q_fdr", "p_fwe", "tfce", "p_tfce"):
        values = getattr(result, name)
        assert values.shape == mask.shape
        assert np.all(np.isnan(values[~mask])) and np.all(np.isfinite(values[mask])), name
    inside = one_sample_permutation(data[:, mask], 30)
    np.testing.assert_allclose(result.t[mask], inside.t)
    np.testing.assert_allclose(result.h0_max_t, inside.h0_max_t)
    expected_tfce = tfce_transform(np.where(mask, result.t, 0.0))
    np.testing.assert_allclose(result.tfce[mask], expected_tfce[mask], rtol=1e-10)


def test_constant_voxels(rng):
    data = rng.standard_normal((5, 4))
    data[:, 0] = 0.0
    data[:, 1] = 2.5
    result = one_sample_permutation(data, 10)
    assert result.t[0] == 0.0 and result.p_uncorrected[0] == 1.0
    assert result.t[1] == np.inf and result.p_uncorrected[1] == 0.0


def _constant_and_varying():
    data = np.zeros((3, 2, 2, 2))
    data[:, 0, 0, 0] = 1.0
    data[:, 1, 1, 1] = [1.0, 2.0, 4.0]
    return data


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (np.zeros((1, 10)), {}, "got 1 subject"),
        (np.zeros((3, 4, 4)), {}, "expected \\(n_subjects, n_voxels\\)"),
        (np.ones((3, 4, 4, 4)), {"mask": np.ones((4, 4), bool)}, "mask: got shape"),
        (np.ones((3, 4, 4, 4)), {"mask": np.ones((4, 4, 4))}, "mask: got dtype"),
        (np.ones((3, 4, 4, 4)), {"mask": np.zeros((4, 4, 4), bool)}, "selects no voxel"),
        (np.ones((3, 10)), {"tfce": True}, "tfce: needs 3-D maps"),
        (np.ones((3, 10)), {"n_permutations": 0}, "n_permutations: got 0"),
        (np.ones((3, 10)), {"n_permutations": 2.5}, "n_permutations: got 2.5"),
        (np.ones((3, 10)), {"alternative": "both"}, "alternative: got 'both'"),
        (np.ones((3, 10)), {}, "all 10 tested voxels are constant"),
        (np.full((3, 10), np.nan), {}, "10 tested voxels hold NaN"),
        (np.eye(3), {"n_permutations": 2, "sign_flips": np.ones((3, 3))}, "sign_flips: got shape"),
        (np.eye(3), {"n_permutations": 1, "sign_flips": [[1, 0, 1]]}, "other than \\+1 and -1"),
        (_constant_and_varying(), {"tfce": True}, "1 tested voxels are constant but not 0"),
    ],
)
def test_invalid_inputs_raise(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        one_sample_permutation(data, **{"n_permutations": 5, **kwargs})
