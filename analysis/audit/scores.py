"""How well an attribute predictor recovers the intervened values, beside chance.

=============== ====== ======================================================================
score           unit   definition
=============== ====== ======================================================================
accuracy        1      share of samples whose most probable class is the true one
chance_accuracy 1      share of the commonest true class (what always guessing it scores)
auc             1      two classes: Mann-Whitney AUC of the second class' probability, i.e.
                       P(score of a positive > score of a negative) + 0.5 P(tie); more
                       classes: the mean of the one-vs-rest AUCs (macro average)
chance_auc      1      0.5
mae             unit   mean ``|predicted - true|`` in the attribute's unit
chance_mae      unit   mean ``|baseline - true|``: always predicting ``baseline`` (e.g. the
                       training mean)
correlation     1      Pearson correlation of predicted and true; NaN when either is constant
=============== ====== ======================================================================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

__all__ = ["ClassificationScores", "RegressionScores", "roc_auc", "classification_scores",
           "regression_scores"]


@dataclass(frozen=True)
class ClassificationScores:
    """Scores of a classifier (definitions in the module docstring)."""

    n: int
    accuracy: float
    chance_accuracy: float
    auc: float
    chance_auc: float = 0.5


@dataclass(frozen=True)
class RegressionScores:
    """Scores of a numeric predictor (definitions in the module docstring)."""

    n: int
    mae: float
    chance_mae: float
    correlation: float


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank formula (ties count one half).

    Parameters
    ----------
    scores : ndarray of float, shape (n_samples,)
        Higher means more likely positive.
    positive : ndarray of bool, shape (n_samples,)

    Returns
    -------
    float
        In [0, 1]; 0.5 is chance.

    Raises
    ------
    ValueError
        If shapes differ, ``positive`` is not boolean, either group is empty, or a score is not
        finite.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive)
    if scores.ndim != 1 or positive.shape != scores.shape or positive.dtype != bool:
        raise ValueError(f"positive: expected a boolean array of the scores' shape {scores.shape},"
                         f" got dtype {positive.dtype} with shape {positive.shape}")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"positive: both groups need samples, got {n_pos} positive and {n_neg} "
                         "negative")
    if not np.isfinite(scores).all():
        raise ValueError("scores: expected finite values, got NaN or inf")
    return _auc(scores, positive)


def classification_scores(probabilities: np.ndarray, labels: Sequence[Hashable],
                          classes: Sequence[Hashable]) -> ClassificationScores:
    """Accuracy and AUC of class probabilities against the true labels, with chance levels.

    Parameters
    ----------
    probabilities : ndarray of float, shape (n_samples, K)
        Column ``k`` is the probability of ``classes[k]``.
    labels : sequence of hashable, length n_samples
        True classes, each one of ``classes``.
    classes : sequence of hashable, length K (>= 2)

    Returns
    -------
    ClassificationScores
        ``auc`` is NaN when no class has both members and non-members among ``labels``.

    Raises
    ------
    ValueError
        If the shapes disagree, a label is not a class, or a probability is not finite.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = tuple(classes)
    labels = list(labels)
    if (probabilities.ndim != 2 or probabilities.shape != (len(labels), len(classes))
            or len(classes) < 2 or not labels):
        raise ValueError(f"probabilities: expected shape (n_samples, n_classes) = ({len(labels)}, "
                         f"{len(classes)}) with at least one sample and two classes, got "
                         f"{probabilities.shape}")
    unknown = sorted({str(y) for y in labels if y not in classes})
    if unknown:
        raise ValueError(f"labels: {unknown} are not among the classes {list(classes)}")
    if not np.isfinite(probabilities).all():
        raise ValueError("probabilities: expected finite values, got NaN or inf")
    truth = np.array([classes.index(y) for y in labels])
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == truth))
    chance = max(Counter(truth.tolist()).values()) / len(truth)
    columns = [1] if len(classes) == 2 else range(len(classes))
    aucs = [_auc(probabilities[:, k], truth == k) for k in columns
            if 0 < np.count_nonzero(truth == k) < len(truth)]
    return ClassificationScores(len(truth), accuracy, chance,
                                float(np.mean(aucs)) if aucs else float("nan"))


def regression_scores(predicted: np.ndarray, true: np.ndarray,
                      baseline: float) -> RegressionScores:
    """MAE and correlation of numeric predictions, and the MAE of always guessing ``baseline``.

    Parameters
    ----------
    predicted, true : ndarray of float, shape (n_samples,)
        In the attribute's unit.
    baseline : float
        The constant guess chance is measured with (the training mean), same unit.

    Returns
    -------
    RegressionScores

    Raises
    ------
    ValueError
        If the shapes differ, there are no samples, or a value is not finite.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if predicted.ndim != 1 or predicted.shape != true.shape or predicted.size == 0:
        raise ValueError(f"predicted: expected the non-empty 1-D shape of true {true.shape}, got "
                         f"{predicted.shape}")
    if not (np.isfinite(predicted).all() and np.isfinite(true).all() and np.isfinite(baseline)):
        raise ValueError("predicted, true, baseline: expected finite numbers, got NaN or inf")
    p, t = predicted - predicted.mean(), true - true.mean()
    denominator = float(np.sqrt((p @ p) * (t @ t)))
    correlation = float(p @ t) / denominator if denominator > 0 else float("nan")
    return RegressionScores(int(true.size), float(np.abs(predicted - true).mean()),
                            float(np.abs(baseline - true).mean()), correlation)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    ranks = rankdata(scores)  # average ranks: a tie between groups counts one half
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)
