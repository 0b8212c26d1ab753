import numpy as np
import pytest

from cfx.counterfactual.phantom.clinical import (
    ATTRIBUTES,
    CATEGORIES,
    MISSING_RATE,
    sample_attributes,
    sample_missing,
)

N = 4000


@pytest.fixture(scope="module")
def table():
    rows = sample_attributes(N, np.random.default_rng(11))
    return {a: np.array([r[a] for r in rows]) for a in ATTRIBUTES}


def test_values_are_in_their_domains(table):
    assert table["age"].dtype.kind == "i" and 35 <= table["age"].min() <= table["age"].max() <= 90
    for name, values in CATEGORIES.items():
        assert set(table[name]) == set(values)


def test_correlations_have_the_specified_signs(table):
    age, male = table["age"], table["sex"] == "male"
    smoker, ipf = table["smoking"] == "yes", table["diagnosis"] == "IPF"
    ctd, dead = table["diagnosis"] == "CTD-ILD", table["mortality"] == "dead"
    assert age[smoker].mean() - age[~smoker].mean() > 3  # smokers older
    older = age > np.median(age)
    assert ipf[male & smoker & older].mean() > 2 * ipf[~male & ~smoker & ~older].mean()
    assert ctd[~male].mean() > ctd[male].mean() + 0.15
    assert dead[older].mean() > dead[~older].mean() + 0.08
    assert dead[ipf].mean() > dead[~ipf].mean() + 0.1


def test_naive_smoking_comparison_is_confounded_by_age(table):
    # Lung-wide planted shift: smoking +20 HU, age -0.5 HU/year. Observationally the smokers'
    # excess is biased down by their higher age; the counterfactual difference is exactly 20.
    smoker = table["smoking"] == "yes"
    shift = 20.0 * smoker - 0.5 * (table["age"] - 50)
    naive = shift[smoker].mean() - shift[~smoker].mean()
    assert naive < 18.5


def test_missingness_is_at_random_and_near_the_rate():
    missing = sample_missing(N, np.random.default_rng(2))
    rates = {a: np.mean([a in m for m in missing]) for a in ATTRIBUTES}
    se = np.sqrt(MISSING_RATE * (1 - MISSING_RATE) / N)
    for name, rate in rates.items():
        assert abs(rate - MISSING_RATE) < 4 * se, name
    both = np.mean([("age" in m) and ("smoking" in m) for m in missing])
    assert abs(both - MISSING_RATE ** 2) < 0.006


def test_sampler_is_reproducible():
    a = sample_attributes(50, np.random.default_rng(4))
    assert a == sample_attributes(50, np.random.default_rng(4))
    assert a != sample_attributes(50, np.random.default_rng(5))
