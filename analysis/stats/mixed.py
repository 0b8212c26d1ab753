"""Counterfactual effect over several seeds: linear mixed model with a subject random intercept.

Model, fitted by REML with :class:`statsmodels.regression.mixed_linear_model.MixedLM`::

    metric[subject, value, seed] = b0 + b1 * [value is the tested value] + u[subject] + e

with ``u ~ N(0, s_u^2)`` per subject and ``e ~ N(0, s_e^2)`` per volume. ``b1`` is the effect;
its CI is the Wald interval ``b1 -/+ z * se`` (normal quantile, as MixedLM reports). On a balanced
sweep ``b1`` equals the mean Delta, and its standard error equals that of ordinary least squares
with one fixed intercept per subject whenever the subject variance is estimated above 0.

Degenerate data: when nothing varies within subjects beyond the value effect (an exact oracle at
one seed), the model is singular; the effect is then the exact difference, the CI has width 0, the
p-value is NaN and ``note`` says so. A fit that does not converge, or whose statsmodels warnings
(convergence, singular random-effects covariance, numerical overflow) would otherwise reach the
terminal, is reported with those warnings in ``note``.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.tools.sm_exceptions import ModelWarning

from analysis.stats.grid import SweepGrid
from analysis.stats.paired import CONSTANT_RTOL

__all__ = ["MixedEffect", "mixed_effect", "mixed_effects"]


@dataclass(frozen=True)
class MixedEffect:
    """Fixed effect of the value in the random-intercept model (units of the metric).

    Attributes
    ----------
    estimate : float
        ``b1``.
    ci_low, ci_high : float
        Wald CI of ``b1``.
    p : float
        Two-sided Wald p-value of ``b1``; NaN when the model is singular.
    subject_var : float
        Estimated ``s_u^2`` (unit squared).
    residual_var : float
        Estimated ``s_e^2`` (unit squared).
    note : str
        Empty, or why the fit is degenerate or did not converge.
    """

    estimate: float
    ci_low: float
    ci_high: float
    p: float
    subject_var: float
    residual_var: float
    note: str


def mixed_effect(estimate, subject, treated, *, confidence: float = 0.95) -> MixedEffect:
    """Fit the random-intercept model to one metric.

    Parameters
    ----------
    estimate : array_like of float, shape (n_observations,)
        The metric of each volume (e.g. HU).
    subject : array_like, shape (n_observations,)
        Subject id of each volume.
    treated : array_like of bool or {0, 1}, shape (n_observations,)
        1 for volumes made with the tested value, 0 for the reference.
    confidence : float
        Level of the CI, in (0, 1).

    Returns
    -------
    MixedEffect

    Raises
    ------
    ValueError
        If the arrays differ in length, ``estimate`` is not finite, ``treated`` is not 0/1 with
        both levels present, fewer than 2 subjects are given, or ``confidence`` is out of range.
    """
    y = np.asarray(estimate, dtype=np.float64)
    subject = np.asarray(subject)
    x = np.asarray(treated)
    if y.ndim != 1 or subject.shape != y.shape or x.shape != y.shape:
        raise ValueError(f"estimate, subject, treated: expected three 1-D arrays of one length, "
                         f"got shapes {y.shape}, {subject.shape}, {x.shape}")
    if not np.isfinite(y).all():
        raise ValueError("estimate: holds non-finite values; expected finite metrics")
    if not np.isin(x, (0, 1)).all() or np.unique(x).size != 2:
        raise ValueError(f"treated: expected 0/1 with both levels present, got levels "
                         f"{np.unique(x).tolist()}")
    if np.unique(subject).size < 2:
        raise ValueError(f"subject: got {np.unique(subject).size} subject(s); the mixed model "
                         f"needs at least 2")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")
    return _mixed_effect(y, subject, x.astype(np.float64), confidence)


def mixed_effects(grid: SweepGrid, value: Hashable, reference: Hashable, *,
                  confidence: float = 0.95) -> pd.DataFrame:
    """:func:`mixed_effect` for every region x metric of a sweep grid (all seeds).

    Parameters
    ----------
    grid : SweepGrid
        Holding ``value`` and ``reference``.
    value, reference : hashable
        Tested and reference attribute values.
    confidence : float
        Level of the CIs, in (0, 1).

    Returns
    -------
    DataFrame, shape (n_columns, len(MixedEffect fields))
        Index: ``(region, metric)``; one column per :class:`MixedEffect` field.

    Raises
    ------
    ValueError
        If ``value`` or ``reference`` is not in the grid, or as :func:`mixed_effect`.
    """
    unknown = [v for v in (value, reference) if v not in grid.values]
    if unknown:
        raise ValueError(f"value, reference: {unknown} not in the grid's values "
                         f"{list(grid.values)}")
    if grid.n_subjects < 2:
        raise ValueError(f"subject: got {grid.n_subjects} subject(s); the mixed model needs at "
                         f"least 2")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")
    per_arm = grid.n_subjects * grid.n_seeds
    subject = np.tile(np.repeat(np.arange(grid.n_subjects), grid.n_seeds), 2)
    treated = np.repeat([0.0, 1.0], per_arm)
    stacked = np.concatenate([grid.data[reference].reshape(per_arm, -1),
                              grid.data[value].reshape(per_arm, -1)])
    rows = [asdict(_mixed_effect(stacked[:, j], subject, treated, confidence))
            for j in range(stacked.shape[1])]
    return pd.DataFrame(rows, columns=[f.name for f in fields(MixedEffect)], index=grid.columns)


def _mixed_effect(y: np.ndarray, subject: np.ndarray, x: np.ndarray,
                  confidence: float) -> MixedEffect:
    codes = np.unique(subject, return_inverse=True)[1]
    y_within = y - (np.bincount(codes, y) / np.bincount(codes))[codes]
    x_within = x - (np.bincount(codes, x) / np.bincount(codes))[codes]
    slope = (x_within @ y_within) / (x_within @ x_within)
    residual = y_within - slope * x_within
    if np.sqrt(np.mean(residual ** 2)) <= CONSTANT_RTOL * np.abs(y_within).max():
        return MixedEffect(float(slope), float(slope), float(slope), np.nan, np.nan, 0.0,
                           "no variation within subjects beyond the value effect: the mixed "
                           "model is singular; the effect is the exact difference, CI width 0")
    model = MixedLM(y, np.column_stack([np.ones_like(x), x]), groups=codes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelWarning)  # convergence, singular covariance, ...
        warnings.simplefilter("always", RuntimeWarning)  # overflow in the optimiser's steps
        fit = model.fit(reml=True)
    low, high = fit.conf_int(alpha=1.0 - confidence)[1]
    noted = (ModelWarning, RuntimeWarning)
    for other in (w for w in caught if not issubclass(w.category, noted)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    notes = sorted({str(w.message).splitlines()[0] for w in caught
                    if issubclass(w.category, noted)})
    if not fit.converged:
        notes.insert(0, "mixed model did not converge")
    return MixedEffect(
        estimate=float(fit.fe_params[1]), ci_low=float(low), ci_high=float(high),
        p=float(fit.pvalues[1]), subject_var=float(np.asarray(fit.cov_re)[0, 0]),
        residual_var=float(fit.scale), note="; ".join(f"mixed model: {n}" for n in notes),
    )
