import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, pearsonr

from cfx.analysis.audit import classification_scores, regression_scores, roc_auc


def test_auc_is_the_mann_whitney_statistic_with_ties(rng):
    scores = np.round(rng.normal(size=40), 1)  # rounding makes ties
    positive = rng.random(40) < 0.4
    u = mannwhitneyu(scores[positive], scores[~positive]).statistic
    assert roc_auc(scores, positive) == pytest.approx(u / (positive.sum() * (~positive).sum()))
    assert roc_auc(np.arange(6.0), np.arange(6) >= 3) == 1.0
    assert roc_auc(np.ones(6), np.arange(6) >= 3) == 0.5


def test_classification_scores_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    scores = classification_scores(probabilities, ["no", "no", "yes", "yes"], ("no", "yes"))
    assert scores.accuracy == 0.75 and scores.chance_accuracy == 0.5
    assert scores.auc == 1.0 and scores.chance_auc == 0.5 and scores.n == 4


def test_multiclass_auc_is_the_mean_of_one_vs_rest():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4],
                              [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    labels = ["a", "b", "c", "c", "a"]
    scores = classification_scores(probabilities, labels, ("a", "b", "c"))
    truth = np.array(labels)
    expected = np.mean([roc_auc(probabilities[:, k], truth == c) for k, c in enumerate("abc")])
    assert scores.auc == pytest.approx(expected)
    assert scores.accuracy == pytest.approx(3 / 5) and scores.chance_accuracy == pytest.approx(0.4)
    one_class = classification_scores(probabilities[:2, :2], ["a", "a"], ("a", "b"))
    assert math.isnan(one_class.auc) and one_class.chance_accuracy == 1.0


def test_regression_scores_by_hand(rng):
    true = np.array([40.0, 40.0, 80.0, 80.0])
    predicted = np.array([45.0, 38.0, 70.0, 85.0])
    scores = regression_scores(predicted, true, baseline=62.0)
    assert scores.mae == pytest.approx((5 + 2 + 10 + 5) / 4)
    assert scores.chance_mae == pytest.approx((22 + 22 + 18 + 18) / 4)
    assert scores.correlation == pytest.approx(pearsonr(predicted, true).statistic)
    assert math.isnan(regression_scores(np.ones(4), true, 60.0).correlation)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: roc_auc(np.ones(3), np.array([1, 0, 1])), "positive: expected a boolean array"),
    (lambda: roc_auc(np.ones(3), np.ones(3, bool)), "got 3 positive and 0 negative"),
    (lambda: roc_auc(np.array([1.0, np.nan]), np.array([True, False])), "scores: expected finite"),
    (lambda: classification_scores(np.ones((2, 3)), ["a", "b"], ("a", "b")),
     r"probabilities: expected shape \(n_samples, n_classes\) = \(2, 2\)"),
    (lambda: classification_scores(np.ones((2, 2)), ["a", "z"], ("a", "b")),
     r"labels: \['z'\] are not among"),
    (lambda: classification_scores(np.full((2, 2), np.nan), ["a", "b"], ("a", "b")),
     "probabilities: expected finite"),
    (lambda: regression_scores(np.ones(3), np.ones(4), 0.0), "predicted: expected the non-empty"),
    (lambda: regression_scores(np.ones(3), np.ones(3), np.nan), "expected finite numbers"),
])
def test_bad_inputs_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
