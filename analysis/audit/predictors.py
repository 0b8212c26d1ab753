"""Attribute predictors for the effectiveness check: ridge-penalised logistic and linear models.

Both standardise each feature with the training mean and (population) standard deviation, then
fit with an L2 penalty ``penalty / 2 * ||w||^2`` on the standardised coefficients (never on the
intercept). The penalty keeps the fit defined when features outnumber subjects or when a large
effect separates the classes perfectly, which is exactly what a sound counterfactual of a strong
attribute produces.

- :func:`fit_logistic`: multinomial logistic regression with the first class as reference
  (``K - 1`` coefficient vectors; for two classes this is the ordinary logit), minimising the
  negative log-likelihood plus the penalty with L-BFGS.
- :func:`fit_linear`: ridge regression, solved in closed form.
- :func:`cross_validated`: out-of-fold predictions, ``k`` interleaved folds (sample ``i`` is in
  fold ``i % k``), so a predictor's skill on the real CTs it is trained on is honest.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

__all__ = ["LogisticPredictor", "LinearPredictor", "fit_logistic", "fit_linear",
           "cross_validated"]


@dataclass(frozen=True, eq=False)
class LogisticPredictor:
    """A fitted multinomial logistic model.

    Attributes
    ----------
    classes : tuple
        The ``K`` classes; column ``k`` of :meth:`predict_proba` is ``classes[k]``.
    mean, scale : ndarray of float64, shape (n_features,)
        Standardisation of the features.
    weights : ndarray of float64, shape (n_features + 1, K - 1)
        Intercept (row 0) and coefficients of classes ``1..K-1`` against class 0.
    """

    classes: tuple
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        features : ndarray of float, shape (n_samples, n_features)

        Returns
        -------
        ndarray of float64, shape (n_samples, K)
            Rows sum to 1.
        """
        return softmax(_logits(_design(features, self.mean, self.scale), self.weights), axis=1)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The most probable class of each sample, ndarray of object, shape (n_samples,)."""
        best = np.argmax(self.predict_proba(features), axis=1)
        return np.array([self.classes[k] for k in best], dtype=object)


@dataclass(frozen=True, eq=False)
class LinearPredictor:
    """A fitted ridge regression.

    Attributes
    ----------
    mean, scale : ndarray of float64, shape (n_features,)
        Standardisation of the features.
    intercept : float
        Prediction at the training mean of the features, in the target's unit.
    coefficients : ndarray of float64, shape (n_features,)
        Per standardised feature, in the target's unit.
    """

    mean: np.ndarray
    scale: np.ndarray
    intercept: float
    coefficients: np.ndarray

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted targets, ndarray of float64, shape (n_samples,)."""
        standard = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return self.intercept + standard @ self.coefficients


def fit_logistic(features: np.ndarray, labels: Sequence[Hashable], classes: Sequence[Hashable],
                 penalty: float = 1.0) -> LogisticPredictor:
    """Fit a ridge-penalised multinomial logistic regression.

    Parameters
    ----------
    features : ndarray of float, shape (n_samples, n_features)
    labels : sequence of hashable, length n_samples
        Each one of ``classes``.
    classes : sequence of hashable
        Two or more distinct classes; the first is the reference.
    penalty : float
        L2 penalty (> 0) on the standardised coefficients.

    Returns
    -------
    LogisticPredictor

    Raises
    ------
    ValueError
        If the features are not a finite 2-D array of at least two samples, the labels do not
        match them in number or name a class outside ``classes``, ``classes`` has fewer than two
        distinct entries, or ``penalty`` is not positive.
    """
    features = _check_features(features)
    classes = tuple(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes: expected two or more distinct classes, got {list(classes)}")
    labels = list(labels)
    _check_targets(labels, features, "labels")
    unknown = sorted({str(y) for y in labels if y not in classes})
    if unknown:
        raise ValueError(f"labels: {unknown} are not among the classes {list(classes)}")
    _check_penalty(penalty)
    mean, scale = _standardisation(features)
    design = _design(features, mean, scale)
    onehot = np.zeros((len(labels), len(classes)))
    onehot[np.arange(len(labels)), [classes.index(y) for y in labels]] = 1.0
    shape = (design.shape[1], len(classes) - 1)
    ridge = np.ones(shape)
    ridge[0] = 0.0  # the intercept is not penalised

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weights = flat.reshape(shape)
        log_p = log_softmax(_logits(design, weights), axis=1)
        value = -float((onehot * log_p).sum()) + 0.5 * penalty * float((ridge * weights**2).sum())
        gradient = design.T @ (np.exp(log_p) - onehot)[:, 1:] + penalty * ridge * weights
        return value, gradient.ravel()

    result = minimize(objective, np.zeros(np.prod(shape)), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "gtol": 1e-9, "ftol": 1e-14})
    return LogisticPredictor(classes, mean, scale, result.x.reshape(shape))


def fit_linear(features: np.ndarray, targets: Sequence[float],
               penalty: float = 1.0) -> LinearPredictor:
    """Fit a ridge regression: minimise ``||y - b - Z w||^2 + penalty * ||w||^2``.

    Parameters
    ----------
    features : ndarray of float, shape (n_samples, n_features)
    targets : sequence of float, length n_samples
    penalty : float
        L2 penalty (> 0) on the standardised coefficients ``w``.

    Returns
    -------
    LinearPredictor

    Raises
    ------
    ValueError
        If the features are not a finite 2-D array of at least two samples, the targets are not
        finite numbers matching them in number, or ``penalty`` is not positive.
    """
    features = _check_features(features)
    targets = np.asarray(targets, dtype=np.float64)
    _check_targets(list(targets), features, "targets")
    if not np.isfinite(targets).all():
        raise ValueError("targets: expected finite numbers, got NaN or inf")
    _check_penalty(penalty)
    mean, scale = _standardisation(features)
    standard = (features - mean) / scale
    intercept = float(targets.mean())
    gram = standard.T @ standard + penalty * np.eye(standard.shape[1])
    coefficients = np.linalg.solve(gram, standard.T @ (targets - intercept))
    return LinearPredictor(mean, scale, intercept, coefficients)


def cross_validated(features: np.ndarray, targets: Sequence, classes: Sequence | None = None,
                    penalty: float = 1.0, folds: int = 5) -> np.ndarray:
    """Out-of-fold predictions of :func:`fit_logistic` (``classes`` given) or :func:`fit_linear`.

    Parameters
    ----------
    features : ndarray of float, shape (n_samples, n_features)
    targets : sequence, length n_samples
        Class labels (with ``classes``) or numbers.
    classes : sequence of hashable, optional
        The classes of a logistic model; ``None`` fits linear models.
    penalty : float
        L2 penalty (> 0).
    folds : int
        Number of interleaved folds, from 2 to ``n_samples`` (sample ``i`` in fold ``i % folds``).

    Returns
    -------
    ndarray of float64
        Shape (n_samples, K) class probabilities with ``classes``, else shape (n_samples,)
        predicted targets; row ``i`` comes from a model that did not see sample ``i``.

    Raises
    ------
    ValueError
        If ``folds`` is outside 2..n_samples, or as the fitting function.
    """
    features = _check_features(features)
    targets = list(targets)
    _check_targets(targets, features, "targets")
    n = len(targets)
    if not 2 <= folds <= n:
        raise ValueError(f"folds: expected 2 to {n} (the number of samples), got {folds}")
    fold = np.arange(n) % folds
    out = np.zeros((n, len(classes)) if classes is not None else n)
    for k in range(folds):
        train, test = fold != k, fold == k
        train_targets = [t for t, keep in zip(targets, train, strict=True) if keep]
        if classes is not None:
            model = fit_logistic(features[train], train_targets, classes, penalty)
            out[test] = model.predict_proba(features[test])
        else:
            out[test] = fit_linear(features[train], train_targets, penalty).predict(
                features[test])
    return out


def _check_features(features) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise ValueError(f"features: expected a 2-D array (n_samples >= 2, n_features >= 1), got "
                         f"shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features: expected finite values, got NaN or inf")
    return features


def _check_targets(targets: list, features: np.ndarray, name: str) -> None:
    if len(targets) != features.shape[0]:
        raise ValueError(f"{name}: expected one per sample ({features.shape[0]}), got "
                         f"{len(targets)}")


def _check_penalty(penalty: float) -> None:
    if not (np.isfinite(penalty) and penalty > 0):
        raise ValueError(f"penalty: expected a positive number, got {penalty!r}")


def _standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature becomes 0 and carries nothing
    return mean, scale


def _design(features, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    standard = (np.asarray(features, dtype=np.float64) - mean) / scale
    return np.hstack([np.ones((standard.shape[0], 1)), standard])


def _logits(design: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.hstack([np.zeros((design.shape[0], 1)), design @ weights])
