import numpy as np
import pytest
from scipy import stats

from cfx.counterfactual.phantom.scoring import score_difference


def test_scores_match_hand_and_scipy(rng):
    expected = rng.normal(0, 5, (6, 5, 4))
    predicted = 0.7 * expected + rng.normal(0, 2, expected.shape)
    region = rng.random(expected.shape) < 0.4
    score = score_difference(predicted.astype(np.float32), expected, region)
    assert score.region_mean_predicted == pytest.approx(predicted[region].mean(), rel=1e-6)
    assert score.region_mean_error == pytest.approx(
        predicted[region].mean() - expected[region].mean(), rel=1e-5)
    assert score.rmse == pytest.approx(np.sqrt(((predicted - expected) ** 2).mean()), rel=1e-6)
    r = stats.pearsonr(predicted.ravel(), expected.ravel()).statistic
    assert score.correlation == pytest.approx(r, rel=1e-6)


def test_within_restricts_rmse_and_correlation(rng):
    expected = np.zeros((4, 4, 4))
    expected[:2] = 20.0
    predicted = expected + 1.0
    lung = np.zeros(expected.shape, bool)
    lung[:2] = True
    whole = score_difference(predicted, expected, lung)
    assert whole.region_mean_error == pytest.approx(1.0) and whole.rmse == pytest.approx(1.0)
    assert whole.correlation == pytest.approx(1.0)
    inside = score_difference(predicted, expected, lung, within=lung)
    assert np.isnan(inside.correlation)  # the expected map is constant on the lungs


@pytest.mark.parametrize("args, message", [
    ((np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), np.ones((2, 2, 3), bool)),
     r"predicted has shape \(2, 2, 2\) but expected has shape \(2, 2, 3\)"),
    ((np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.ones((2, 2, 2))),
     r"region: expected a boolean mask of shape \(2, 2, 2\), got dtype float64"),
    ((np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 2), bool)),
     r"region: the mask is empty \(0 voxels\)"),
])
def test_invalid_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        score_difference(*args)
