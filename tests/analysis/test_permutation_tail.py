"""Tail approximation of permutation maxima against counting on a very large null sample."""

import numpy as np
import pytest
from scipy import stats

from cfx.analysis.permutation import one_sample_permutation
from cfx.analysis.permutation_tail import fit_tail, tail_p_values


def _counted(x, big):
    """p-values by counting over a large reference sample of the same null."""
    ordered = np.sort(big)
    return (ordered.size - np.searchsorted(ordered, x, side="left")) / ordered.size


@pytest.mark.parametrize(("method", "null"), [
    ("gpd", stats.gumbel_r(loc=3.0, scale=0.4)),  # maxima of many statistics: Gumbel-like
    ("gamma", stats.gamma(4.0, loc=1.0, scale=0.5)),
])
def test_fitted_tail_agrees_with_counting_a_million_null_draws(method, null):
    rng = np.random.default_rng(3)
    small = null.rvs(size=500, random_state=rng)
    big = null.rvs(size=1_000_000, random_state=rng)
    fit = fit_tail(small, method)
    assert fit.accepted and fit.method == method
    x = null.isf([1e-2, 3e-3, 1e-3])  # 10,000 to 1,000 counts in the large sample
    ratio = tail_p_values(x, small, fit) / _counted(x, big)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
    # below 1 / 501, where counting 500 draws cannot go, still within a factor 3 of the truth
    deep = null.isf(1e-4)
    p_deep = tail_p_values([deep], small, fit)[0]
    assert p_deep < 1 / 501
    assert 1e-4 / 3 < p_deep < 3e-4


def test_below_the_threshold_p_values_are_counted(rng):
    small = rng.gumbel(size=500)
    fit = fit_tail(small, "gpd")
    x = np.linspace(small.min(), fit.threshold, 50)
    counted = (1 + (small[:, None] >= x).sum(axis=0)) / 501
    np.testing.assert_allclose(tail_p_values(x, small, fit), counted, rtol=1e-12)
    assert fit.n_exceedances == np.sum(small > fit.threshold)


@pytest.mark.parametrize("method", ["gpd", "gamma"])
def test_a_poor_fit_falls_back_to_counting(method):
    # a null with only four distinct values (a handful of possible flips) fits no smooth tail
    null = np.repeat([1.0, 1.5, 2.0, 4.0], [300, 150, 40, 10])
    fit = fit_tail(null, method)
    assert not fit.accepted
    x = np.array([1.2, 3.0, 5.0])
    np.testing.assert_allclose(tail_p_values(x, null, fit), [201 / 501, 11 / 501, 1 / 501])


def test_fitted_p_values_never_go_below_the_floor(rng):
    small = rng.gumbel(size=500)
    fit = fit_tail(small, "gpd")
    p = tail_p_values([small.max(), 40.0], small, fit, floor=1 / 4096)
    assert p[1] == 1 / 4096 and p[0] > 1 / 4096


def test_a_bounded_tail_gets_an_exponential_tail_not_an_end_point(rng):
    small = rng.uniform(0, 1, 500)  # the unclipped GPD fit would end near 1 with p = 0 beyond
    fit = fit_tail(small, "gpd")
    assert fit.params[0] == 0.0
    exceedances = small[small > fit.threshold] - fit.threshold
    assert fit.params[1] == pytest.approx(exceedances.mean(), rel=1e-12)
    assert tail_p_values([1.2], small, fit)[0] > 0


def test_one_sample_permutation_uses_the_tail_above_its_threshold(rng):
    data = rng.standard_normal((12, 400))
    data[:, :10] += np.linspace(0.8, 3.0, 10)
    counted = one_sample_permutation(data, 500, random_state=1)
    fitted = one_sample_permutation(data, 500, random_state=1, tail="gpd")
    fit = fitted.tail_fit_t
    assert fitted.tail == "gpd" and fit.accepted and not fitted.exhaustive
    np.testing.assert_array_equal(fitted.h0_max_t, counted.h0_max_t)
    below = np.abs(counted.t) <= fit.threshold
    np.testing.assert_array_equal(fitted.p_fwe[below], counted.p_fwe[below])
    assert fitted.p_fwe.min() < 1 / 501  # resolved below counting's floor
    assert fitted.p_fwe.min() >= 0.5**11  # never below one over the 2^11 distinct flips
    np.testing.assert_allclose(fitted.p_fwe[~below],
                               tail_p_values(np.abs(fitted.t[~below]), fitted.h0_max_t, fit,
                                             0.5**11))


def test_tfce_null_gets_its_own_tail_fit(rng):
    data = rng.standard_normal((10, 6, 6, 5))
    data[:, 2:4, 2:4, 2:4] += 1.5
    result = one_sample_permutation(data, 150, tfce=True, tail="gamma", random_state=2)
    assert result.tail_fit_tfce is not None and result.tail_fit_tfce.method == "gamma"
    expected = tail_p_values(np.abs(result.tfce).ravel(), result.h0_max_tfce,
                             result.tail_fit_tfce, 0.5**9)
    np.testing.assert_allclose(result.p_tfce.ravel(), expected, rtol=1e-12)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tail": "pareto", "n_permutations": 200}, r"tail: got 'pareto'; expected one of"),
    ({"tail": "gpd", "n_permutations": 50}, "needs at least 100 flips; got n_permutations=50"),
])
def test_bad_tail_options_raise(rng, kwargs, message):
    with pytest.raises(ValueError, match=message):
        one_sample_permutation(rng.standard_normal((12, 10)), **kwargs)


def test_fit_tail_checks_its_input():
    with pytest.raises(ValueError, match="a tail fit needs at least 100"):
        fit_tail(np.ones(50), "gpd")
    with pytest.raises(ValueError, match="method: got 'none'"):
        fit_tail(np.ones(200), "none")
