"""Dose-response of a numeric attribute: per-subject slopes, cohort slope, linearity check.

For an attribute swept at three or more numeric values (age 40, 60, 80), each region metric is
first averaged over seeds, giving one observation ``y[subject, value]`` per subject and value: the
seeds of one subject share their noise across values, so they are not independent replicates.

Per-subject slopes
    Ordinary least squares of ``y[subject, :]`` on the values, one line per subject; the table
    gives their mean, SD (``ddof=1``) and the Student-t CI of the mean (``n_subjects - 1`` dof).
Cohort slope
    Linear mixed model with a subject random intercept
    (:class:`statsmodels.regression.mixed_linear_model.MixedLM`)::

        y[subject, value] = b0 + b1 * (value - mean value) + u[subject] + e

    fitted by REML. On a complete sweep every subject has the same values, so ``b1`` equals the
    mean per-subject slope, and (whenever the subject variance is estimated above 0) ``b1`` and
    its standard error equal those of least squares with one intercept per subject. The Wald
    statistic ``b1 / se`` is therefore referred to Student's t with that fit's residual dof,
    ``n_subjects (n_values - 1) - 1``, for the CI and p-value, rather than to the normal
    distribution MixedLM uses, which is liberal with few subjects (8 subjects x 3 values, null
    simulations: 8 % rejections at alpha = 5 % with the normal, 5 % with t). The CI assumes one
    common slope; the per-subject CI does not.
Linearity
    The same model with the value as a factor (one mean per value) against the linear one, both
    fitted by maximum likelihood (REML likelihoods of models with different fixed effects are
    not comparable): ``LR = 2 (llf_factor - llf_linear)``, referred to chi-squared with
    ``n_values - 2`` dof. A small p says the means are not on a line. That asymptotic p is
    liberal with few subjects (8 subjects x 3 values: about 7 % rejections at alpha = 5 % under
    the null), so the exact small-sample version of the same comparison is given beside it: the
    lack-of-fit F test of least squares with one intercept per subject,
    ``F = [(RSS_linear - RSS_factor) / (n_values - 2)] / [RSS_factor / dof]`` with
    ``dof = (n_subjects - 1) (n_values - 1)``, exact on a complete grid.

Exact data: an exact oracle gives metrics that are linear in the value with one common slope and
no residual at all. The mixed model is then singular (statsmodels fails, or returns p-values like
1e-73 from rounding noise), so this case is detected first: when the root-mean-square residual of
the within-subject linear fit is at most :data:`~cfx.analysis.stats.paired.CONSTANT_RTOL` times the
largest within-subject deviation, or at floating-point rounding level (``1e-12`` times the largest
absolute metric: a null attribute on an exact oracle leaves only rounding), the slope is the exact
one, its CI has width 0, every p-value
and the linearity statistic are NaN, and ``note`` says ``"exact (no variance)"``. Likewise, when
the factor model fits exactly but the line does not (noise-free curvature), the linearity
statistic and p are NaN and ``note`` says the means depart from a line exactly.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM

from cfx.analysis.stats.grid import REQUIRED_COLUMNS, SweepGrid
from cfx.analysis.stats.mixed import EXACT_NOTE, fit_quietly
from cfx.analysis.stats.paired import CONSTANT_RTOL

__all__ = ["DOSE_RESPONSE_COLUMNS", "EXACT_NOTE", "PER_DECADE", "dose_response",
           "numeric_value", "subject_slopes"]

PER_DECADE = 10.0
# Residuals below this fraction of the largest |metric| are floating-point rounding, not variance.
_ROUNDING = 1e-12
DOSE_RESPONSE_COLUMNS = (
    "region", "metric", "unit", "slope_unit", "per", "n_subjects", "n_values", "n_seeds",
    "subject_slope_mean", "subject_slope_sd", "subject_slope_ci_low", "subject_slope_ci_high",
    "slope", "slope_ci_low", "slope_ci_high", "slope_p", "subject_var", "residual_var",
    "linearity_lr", "linearity_df", "linearity_p", "linearity_f", "linearity_f_p", "note",
)


def dose_response(
    table: pd.DataFrame,
    *,
    values: Sequence[Hashable] | None = None,
    region_metrics: Sequence[tuple[str, str]] | None = None,
    confidence: float = 0.95,
    per: float = 1.0,
    attribute_unit: str = "unit",
) -> pd.DataFrame:
    """Slopes of every region metric on a numeric attribute, with a linearity check.

    Parameters
    ----------
    table : DataFrame
        Tidy region metrics, as :func:`cfx.analysis.regions.region_table` returns: columns
        ``subject``, ``value`` (numbers, or strings that parse as numbers), ``seed``, ``region``,
        ``metric``, ``estimate`` and optionally ``unit``. Every subject must have every value at
        every seed (see :meth:`SweepGrid.from_table`).
    values : sequence of hashable, optional
        The values to use (at least 3); every value of the table by default. They are sorted
        numerically.
    region_metrics : sequence of (str, str), optional
        The ``(region, metric)`` pairs to analyse; all by default.
    confidence : float
        Level of every CI, in (0, 1).
    per : float
        Slopes (and their SDs and CIs) are given per ``per`` units of the attribute:
        :data:`PER_DECADE` (10) prints age slopes per decade. Must be positive.
    attribute_unit : str
        The attribute's unit (e.g. ``"years"``), used only in ``slope_unit``.

    Returns
    -------
    DataFrame, shape (n_region_metrics, len(DOSE_RESPONSE_COLUMNS))
        One row per region x metric (sorted), columns :data:`DOSE_RESPONSE_COLUMNS`:

        ================================= ========================================================
        column                            meaning
        ================================= ========================================================
        region, metric                    what is analysed
        unit                              the metric's unit ("" when the table has none)
        slope_unit                        e.g. ``"HU per 10 years"``: the unit of every slope
        per                               the ``per`` argument
        n_subjects, n_values, n_seeds     sample sizes
        subject_slope_mean, _sd           mean and SD of the per-subject OLS slopes
        subject_slope_ci_low, _ci_high    Student-t CI of their mean
        slope, slope_ci_low, slope_ci_high cohort slope of the mixed model, its t-based CI
        slope_p                           its two-sided p-value (NaN when exact)
        subject_var, residual_var         the mixed model's variances (``unit`` squared)
        linearity_lr, linearity_df        likelihood-ratio statistic of the factor model against
                                          the linear one, and its dof (``n_values - 2``)
        linearity_p                       chi-squared p of ``linearity_lr`` (NaN when exact)
        linearity_f, linearity_f_p        lack-of-fit F statistic and its exact p (F with
                                          ``n_values - 2`` and ``(n_subjects - 1)
                                          (n_values - 1)`` dof; NaN when exact)
        note                              why a statistic is undefined (``"exact (no
                                          variance)"``), or the mixed model's warnings
        ================================= ========================================================

    Raises
    ------
    ValueError
        If a column is missing, a value is not a finite number, fewer than 3 distinct values or
        2 subjects are given, a ``(region, metric)`` pair is not in the table, ``confidence`` or
        ``per`` is out of range, or the grid is incomplete (as :meth:`SweepGrid.from_table`).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")
    if not (np.isfinite(per) and per > 0):
        raise ValueError(f"per: expected a positive number of attribute units, got {per}")
    grid, x, y, columns = _prepare(table, values, region_metrics)
    slopes = _slopes(y, x)
    units = dict(zip(grid.columns, grid.units, strict=True))
    rows = []
    for j, (region, metric) in enumerate(columns):
        unit = units[(region, metric)]
        scale = f"{per:g} {attribute_unit}" if per != 1 else attribute_unit
        fitted = _column(y[:, :, j], x, slopes[:, j], confidence)
        for key in ("subject_slope_mean", "subject_slope_sd", "subject_slope_ci_low",
                    "subject_slope_ci_high", "slope", "slope_ci_low", "slope_ci_high"):
            fitted[key] *= per
        rows.append({"region": region, "metric": metric, "unit": unit,
                     "slope_unit": f"{unit} per {scale}".strip(), "per": float(per),
                     "n_subjects": grid.n_subjects, "n_values": x.size,
                     "n_seeds": grid.n_seeds, **fitted})
    return pd.DataFrame(rows, columns=list(DOSE_RESPONSE_COLUMNS))


def subject_slopes(
    table: pd.DataFrame,
    *,
    values: Sequence[Hashable] | None = None,
    region_metrics: Sequence[tuple[str, str]] | None = None,
    per: float = 1.0,
) -> pd.DataFrame:
    """Each subject's OLS slope of the seed-averaged metric on the value.

    Parameters
    ----------
    table, values, region_metrics, per
        As in :func:`dose_response`.

    Returns
    -------
    DataFrame of float64, shape (n_subjects, n_region_metrics)
        Index: subjects (sorted); columns: ``(region, metric)``; in the metric's unit per
        ``per`` units of the attribute.

    Raises
    ------
    ValueError
        As :func:`dose_response`.
    """
    if not (np.isfinite(per) and per > 0):
        raise ValueError(f"per: expected a positive number of attribute units, got {per}")
    grid, x, y, columns = _prepare(table, values, region_metrics)
    return pd.DataFrame(_slopes(y, x) * per, index=pd.Index(grid.subjects, name="subject"),
                        columns=pd.MultiIndex.from_tuples(columns, names=["region", "metric"]))


def _prepare(table, values, region_metrics):
    """Check the inputs; return the grid, the sorted values ``x`` (n_values,), the seed-averaged
    metrics ``y`` (n_subjects, n_values, n_columns) and the chosen ``(region, metric)`` pairs."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"table: missing column(s) {missing}; expected "
                         f"{list(REQUIRED_COLUMNS)}, as cfx.analysis.regions.region_table returns")
    keys = list(pd.unique(table["value"])) if values is None else list(values)
    numbers = [numeric_value(key, "value", keys) for key in keys]
    if len(set(numbers)) != len(numbers) or len(numbers) < 3:
        raise ValueError(f"value: a dose-response needs at least 3 distinct numeric values, got "
                         f"{keys}")
    order = np.argsort(numbers, kind="stable")
    keys = [keys[i] for i in order]
    grid = SweepGrid.from_table(table, keys)
    if grid.n_subjects < 2:
        raise ValueError(f"subject: got {grid.n_subjects} subject(s); a dose-response needs at "
                         f"least 2")
    available = list(grid.columns)
    columns = available if region_metrics is None else [tuple(c) for c in region_metrics]
    unknown = [c for c in columns if c not in available]
    if not columns or unknown:
        raise ValueError(f"region_metrics: {unknown or columns} not among the table's "
                         f"(region, metric) pairs {available}")
    index = [available.index(c) for c in columns]
    y = np.stack([grid.data[k].mean(axis=1)[:, index] for k in keys], axis=1)
    return grid, np.asarray(numbers)[order], y, columns


def _slopes(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """OLS slopes, shape (n_subjects, n_columns), of ``y`` (n_subjects, n_values, n_columns)."""
    centred = x - x.mean()
    return np.einsum("svc,v->sc", y - y.mean(axis=1, keepdims=True), centred) / (centred @ centred)


def _column(y: np.ndarray, x: np.ndarray, slopes: np.ndarray, confidence: float) -> dict:
    """Every statistic of one region metric; ``y`` (n_subjects, n_values), slopes per unit."""
    n_subjects, n_values = y.shape
    mean, sd = float(slopes.mean()), float(slopes.std(ddof=1))
    half = stats.t.ppf(0.5 + confidence / 2, n_subjects - 1) * sd / np.sqrt(n_subjects)
    out = {"subject_slope_mean": mean, "subject_slope_sd": sd,
           "subject_slope_ci_low": mean - half, "subject_slope_ci_high": mean + half,
           "linearity_df": n_values - 2}

    centred = x - x.mean()
    within = y - y.mean(axis=1, keepdims=True)
    tolerance = max(CONSTANT_RTOL * np.abs(within).max(), _ROUNDING * np.abs(y).max())
    off_line = within - mean * centred  # the common slope is the mean slope on a complete grid
    off_means = within - within.mean(axis=0)
    if _rms(off_line) <= tolerance:
        return out | {"slope": mean, "slope_ci_low": mean, "slope_ci_high": mean,
                      "slope_p": np.nan, "subject_var": np.nan, "residual_var": 0.0,
                      "linearity_lr": np.nan, "linearity_p": np.nan, "linearity_f": np.nan,
                      "linearity_f_p": np.nan,
                      "note": f"{EXACT_NOTE}: every subject's metric lies on a line of one "
                              f"common slope; the slope is exact, CI width 0, no p-values"}

    groups = np.repeat(np.arange(n_subjects), n_values)
    endog = y.ravel()
    ones = np.ones(endog.size)
    linear = np.column_stack([ones, np.tile(centred, n_subjects)])
    fit, notes = fit_quietly(MixedLM(endog, linear, groups=groups), reml=True)
    slope, se = float(fit.fe_params[1]), float(fit.bse[1])
    dof = n_subjects * (n_values - 1) - 1
    half = stats.t.ppf(0.5 + confidence / 2, dof) * se
    out |= {"slope": slope, "slope_ci_low": slope - half, "slope_ci_high": slope + half,
            "slope_p": float(2 * stats.t.sf(abs(slope) / se, dof)),
            "subject_var": float(np.asarray(fit.cov_re)[0, 0]),
            "residual_var": float(fit.scale)}
    notes = [f"mixed model: {n}" for n in notes]

    if _rms(off_means) <= tolerance:
        departure = np.abs(within.mean(axis=0) - mean * centred).max()
        notes.insert(0, f"linearity: {EXACT_NOTE}: the value means depart from a line by up to "
                        f"{departure:.6g}, exactly; no p-value")
        return out | {"linearity_lr": np.nan, "linearity_p": np.nan, "linearity_f": np.nan,
                      "linearity_f_p": np.nan, "note": "; ".join(notes)}
    factor = np.column_stack([ones, np.tile(np.eye(n_values)[:, 1:], (n_subjects, 1))])
    fit_linear, notes_linear = fit_quietly(MixedLM(endog, linear, groups=groups), reml=False)
    fit_factor, notes_factor = fit_quietly(MixedLM(endog, factor, groups=groups), reml=False)
    notes += [f"linearity, {which} fit: {n}"
              for which, found in (("linear", notes_linear), ("factor", notes_factor))
              for n in found]
    lr = max(2.0 * (fit_factor.llf - fit_linear.llf), 0.0)
    dof = (n_subjects - 1) * (n_values - 1)
    f = ((np.sum(off_line ** 2) - np.sum(off_means ** 2)) / (n_values - 2)
         / (np.sum(off_means ** 2) / dof))
    return out | {"linearity_lr": float(lr),
                  "linearity_p": float(stats.chi2.sf(lr, n_values - 2)),
                  "linearity_f": float(f), "linearity_f_p": float(stats.f.sf(f, n_values - 2, dof)),
                  "note": "; ".join(notes)}


def _rms(residual: np.ndarray) -> float:
    return float(np.sqrt(np.mean(residual ** 2)))


def numeric_value(value, name: str, among: list) -> float:
    """``value`` as a finite float (numbers and numeric strings), else a ValueError naming
    ``name`` and the ``among`` it came from."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = np.nan
    if isinstance(value, bool) or not np.isfinite(number):
        raise ValueError(f"{name}: expected finite numbers for a dose-response, got {value!r} "
                         f"among {among}")
    return number
