"""Counterfactual effect over several seeds: a mixed model of the paired differences.

At every seed the two volumes of a subject share their noise, so the model is fitted to the
paired differences ``Delta[subject, seed] = metric(value) - metric(reference)``, by REML with
:class:`statsmodels.regression.mixed_linear_model.MixedLM`::

    Delta[subject, seed] = b + w[subject] + e[subject, seed]

with ``w ~ N(0, s_w^2)`` (how much the effect differs between subjects) and ``e ~ N(0, s_e^2)``
(how much it changes from seed to seed). ``b`` is the effect and the grid is balanced (every
subject at every seed), so ``b`` is the mean Delta and its exact test is the balanced-design F
test (what Kenward-Roger gives here): ``b / se`` with ``se^2 = MSB / (n_subjects * n_seeds)``,
``MSB`` the between-subject mean square, on Student's t with ``n_subjects - 1`` degrees of
freedom, and the CI ``b -/+ t_{n_subjects - 1} * se``. This ``se`` is MixedLM's REML standard error
whenever ``s_w^2`` is estimated above 0; at the boundary ``s_w^2 = 0`` REML pools the seed variance
instead, which would make the test conservative (1.3 % rejections at alpha = 0.05 on a null with
equal effects, 8 subjects x 3 seeds). MixedLM's own p-value refers ``b / se`` to the normal, which
is liberal with few subjects. The test equals the paired t-test of the per-subject mean Delta;
the model adds the split of the variance into subject (``s_w^2``) and seed (``s_e^2``) parts.

Why not the metric itself with a subject random intercept (``metric ~ value + (1 | subject)``)?
That model takes each volume's seed noise for independent error although both values share it,
and ignores that the effect differs between subjects. On an exact oracle sweep at several seeds
(Delta the same at every seed) it reported p-values from 1e-45 down to 0 for 8 subjects where the
paired t-test gave 1e-5 to 1e-10; on noisy nulls (8 subjects x 3 seeds) it rejected 0-2 % at
alpha = 0.05 instead of 5 %.

Degenerate data: when Delta is the same at every seed for every subject (an exact oracle at
several seeds), the seeds add no variance and the model is singular. The p-value is then NaN and
``note`` begins with ``exact (no variance)``; the estimate is the mean Delta, the CI is NaN (the
paired tests across subjects give it) unless Delta is also equal across subjects, when it is the
exact difference with width 0. A fit that does not converge, or whose statsmodels warnings
(convergence, boundary, singular random-effects covariance, numerical overflow) would otherwise
reach the terminal, is reported with those warnings in ``note``.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.tools.sm_exceptions import ModelWarning

from cfx.analysis.stats.grid import SweepGrid
from cfx.analysis.stats.paired import CONSTANT_RTOL

__all__ = ["MixedEffect", "mixed_effect", "mixed_effects", "fit_quietly", "EXACT_NOTE"]

EXACT_NOTE = "exact (no variance)"
"""How ``note`` begins when Delta is the same at every seed for every subject."""


@dataclass(frozen=True)
class MixedEffect:
    """Effect of the value in the mixed model of the paired differences (units of the metric).

    Attributes
    ----------
    estimate : float
        ``b``, the mean effect.
    ci_low, ci_high : float
        CI of ``b``: ``b -/+ t_{n_subjects - 1} * se``; NaN when the seeds add no variance but
        subjects differ (see the module notes).
    p : float
        Two-sided p-value of ``b / se`` on Student's t with ``n_subjects - 1`` degrees of
        freedom; NaN when the seeds add no variance.
    subject_var : float
        ``s_w^2``, the variance of the effect between subjects (unit squared).
    residual_var : float
        ``s_e^2``, the variance of Delta from seed to seed within a subject (unit squared).
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


def mixed_effect(delta, subject, *, confidence: float = 0.95) -> MixedEffect:
    """Fit the mixed model to the paired differences of one metric.

    Parameters
    ----------
    delta : array_like of float, shape (n_pairs,)
        ``metric(value) - metric(reference)`` of each subject at each seed (e.g. HU).
    subject : array_like, shape (n_pairs,)
        Subject id of each pair; every subject has the same number of pairs (its seeds).
    confidence : float
        Level of the CI, in (0, 1).

    Returns
    -------
    MixedEffect

    Raises
    ------
    ValueError
        If the arrays differ in length or are not 1-D, ``delta`` is not finite, fewer than 2
        subjects are given, subjects have different numbers of pairs, each has one pair (the seed
        variance is then not estimable), or ``confidence`` is out of range.
    """
    y = np.asarray(delta, dtype=np.float64)
    subject = np.asarray(subject)
    if y.ndim != 1 or subject.shape != y.shape:
        raise ValueError(f"delta, subject: expected two 1-D arrays of one length, got shapes "
                         f"{y.shape}, {subject.shape}")
    if not np.isfinite(y).all():
        raise ValueError("delta: holds non-finite values; expected finite paired differences")
    codes, counts = np.unique(subject, return_inverse=True, return_counts=True)[1:]
    if counts.size < 2:
        raise ValueError(f"subject: got {counts.size} subject(s); the mixed model needs at "
                         f"least 2")
    if counts.min() != counts.max():
        raise ValueError(f"subject: subjects have {counts.min()} to {counts.max()} pairs; the "
                         f"mixed model needs every subject at every seed")
    if counts.max() < 2:
        raise ValueError("subject: every subject has one pair; the mixed model needs several "
                         "seeds (use the paired tests for one seed)")
    _check_confidence(confidence)
    return _mixed_effect(y, codes, confidence)


def mixed_effects(grid: SweepGrid, value: Hashable, reference: Hashable, *,
                  confidence: float = 0.95) -> pd.DataFrame:
    """:func:`mixed_effect` for every region x metric of a sweep grid (all seeds).

    Parameters
    ----------
    grid : SweepGrid
        Holding ``value`` and ``reference``, with at least 2 subjects and 2 seeds.
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
        If ``value`` or ``reference`` is not in the grid, the grid has fewer than 2 subjects or
        one seed, or ``confidence`` is out of range.
    """
    unknown = [v for v in (value, reference) if v not in grid.values]
    if unknown:
        raise ValueError(f"value, reference: {unknown} not in the grid's values "
                         f"{list(grid.values)}")
    if grid.n_subjects < 2:
        raise ValueError(f"subject: got {grid.n_subjects} subject(s); the mixed model needs at "
                         f"least 2")
    if grid.n_seeds < 2:
        raise ValueError("grid: has one seed; the mixed model needs several (use the paired "
                         "tests for one seed)")
    _check_confidence(confidence)
    delta = (grid.data[value] - grid.data[reference]).reshape(grid.n_subjects * grid.n_seeds, -1)
    codes = np.repeat(np.arange(grid.n_subjects), grid.n_seeds)
    rows = [asdict(_mixed_effect(delta[:, j], codes, confidence)) for j in range(delta.shape[1])]
    return pd.DataFrame(rows, columns=[f.name for f in fields(MixedEffect)], index=grid.columns)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")


def _mixed_effect(y: np.ndarray, codes: np.ndarray, confidence: float) -> MixedEffect:
    """Fit to ``y`` (n_pairs,) with subject codes 0..n_subjects-1 (each as often)."""
    counts = np.bincount(codes)
    n_subjects = counts.size
    means = np.bincount(codes, y) / counts
    within = y - means[codes]
    scale = float(np.abs(y).max())
    if np.sqrt(np.mean(within ** 2)) <= CONSTANT_RTOL * scale:
        return _exact(y, means, scale)
    fit, notes = fit_quietly(MixedLM(y, np.ones((y.size, 1)), groups=codes), reml=True)
    notes = [("mixed model " + n) if n == "did not converge" else n for n in notes]
    estimate = float(fit.fe_params[0])
    se = float(np.sqrt(means.var(ddof=1) / n_subjects))  # sqrt(MSB / (n_subjects * n_seeds))
    dof = n_subjects - 1
    half = stats.t.ppf(0.5 + confidence / 2.0, dof) * se
    return MixedEffect(
        estimate=estimate, ci_low=estimate - half, ci_high=estimate + half,
        p=float(2.0 * stats.t.sf(abs(estimate) / se, dof)),
        subject_var=float(np.asarray(fit.cov_re)[0, 0]), residual_var=float(fit.scale),
        note="; ".join(f"mixed model: {n}" for n in notes),
    )


def _exact(y: np.ndarray, means: np.ndarray, scale: float) -> MixedEffect:
    """The seeds add no variance: no p-value; a CI only when subjects agree too."""
    estimate = float(means.mean())
    subject_var = float(means.var(ddof=1))
    note = (f"{EXACT_NOTE}: Delta is the same at every seed for every subject, so the mixed "
            f"model is singular and gives no p-value")
    if np.sqrt(subject_var) <= CONSTANT_RTOL * scale:
        low = high = estimate
        note += "; Delta is also equal across subjects: the effect is the exact difference"
    else:
        low = high = np.nan
        note += "; the paired tests across subjects give the CI and p"
    return MixedEffect(estimate, low, high, np.nan, subject_var, 0.0, note)


def fit_quietly(model: MixedLM, reml: bool = True):
    """Fit a statsmodels ``MixedLM``; its model warnings become notes instead of output.

    Returns
    -------
    fit : MixedLMResults
    notes : list of str
        The first line of each distinct ``ModelWarning`` or ``RuntimeWarning`` (convergence,
        singular covariance, optimiser overflow), led by ``"did not converge"`` when it did not.
        Other warnings are re-emitted.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelWarning)  # convergence, singular covariance, ...
        warnings.simplefilter("always", RuntimeWarning)  # overflow in the optimiser's steps
        fit = model.fit(reml=reml)
    noted = (ModelWarning, RuntimeWarning)
    for other in (w for w in caught if not issubclass(w.category, noted)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    notes = sorted({str(w.message).splitlines()[0] for w in caught
                    if issubclass(w.category, noted)})
    if not fit.converged:
        notes.insert(0, "did not converge")
    return fit, notes
