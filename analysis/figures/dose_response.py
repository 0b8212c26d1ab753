"""Dose-response of a numeric attribute: one line per subject, the cohort mean ± CI at each value,
the seed-vs-seed noise floor as a band and, optionally, the cohort slope."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfx.analysis.figures._common import mean_ci
from cfx.analysis.figures.output import new_figure
from cfx.analysis.figures.paired import per_subject_values
from cfx.analysis.stats.dose_response import numeric_value

__all__ = ["NOISE_BAND_LABEL", "SLOPE_LABEL", "dose_response_figure"]

NOISE_BAND_LABEL = "noise floor (seed vs seed)"
SLOPE_LABEL = "cohort slope"


def dose_response_figure(
    table: pd.DataFrame,
    region: str = "lung",
    metric: str = "mean",
    *,
    values: Sequence[Hashable] | None = None,
    confidence: float = 0.95,
    noise_band: tuple[float, float] | None = None,
    reference: float | None = None,
    slope: float | None = None,
    unit: str | None = None,
    label: str = "value",
    width: float = 3.6,
    height: float = 3.2,
) -> Figure:
    """A region metric against a numeric attribute, per subject and for the cohort.

    The x axis is numeric: values are placed at their true spacing. Each subject's seed-averaged
    metric (:func:`~cfx.analysis.figures.paired.per_subject_values`) is one grey line; black markers
    give each value's mean with its two-sided Student-t interval over subjects.

    Parameters
    ----------
    table : DataFrame
        Tidy region metrics (:func:`cfx.analysis.regions.region_table`): columns ``subject``,
        ``value`` (numbers, or strings that parse as numbers), ``seed``, ``region``, ``metric``,
        ``estimate``; a ``unit`` column, when present, labels the y axis.
    region, metric : str
        The rows to plot.
    values : sequence, optional
        The attribute values to plot (at least 2); every value of the table by default. They are
        sorted numerically.
    confidence : float
        Level of the intervals, in (0, 1).
    noise_band : (float, float), optional
        ``(ci_low, ci_high)`` of the noise floor's seed-vs-seed Δ in the metric's unit (the
        effect table's ``noise_ci_low``/``noise_ci_high``), drawn as a grey band around the cohort
        mean at ``reference``: a mean outside it moved more than changing only the seed does.
    reference : float, optional
        The value the band is anchored at; the lowest value by default.
    slope : float, optional
        The cohort slope in the metric's unit per attribute unit (``slope / per`` of
        :func:`cfx.analysis.stats.dose_response.dose_response`), drawn dashed through the mean value
        and the grand mean of the cohort means (where the random-intercept fit passes on a
        complete sweep).
    unit : str, optional
        Overrides the table's unit in the y label.
    label : str
        The x label (e.g. ``"age (years)"``).
    width, height : float
        Figure size in inches.

    Returns
    -------
    Figure
        One axes; x: the attribute value, y: the metric.

    Raises
    ------
    ValueError
        If a column, region, metric or value is missing (as ``per_subject_values``), a value is
        not a finite number, fewer than 2 values are given, ``noise_band`` is not two finite
        numbers in order, ``reference`` is not a plotted value, ``slope`` is not finite, or
        ``confidence`` is out of range.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    wide = per_subject_values(table, region, metric, values)
    x = np.array([numeric_value(v, "value", list(wide.columns)) for v in wide.columns])
    if np.unique(x).size != x.size or x.size < 2:
        raise ValueError(f"values: a dose-response figure needs at least 2 distinct numeric "
                         f"values, got {list(wide.columns)}")
    order = np.argsort(x, kind="stable")
    x, data = x[order], wide.to_numpy(dtype=float)[:, order]
    band = None if noise_band is None else _check_band(noise_band)
    anchor = x[0] if reference is None else numeric_value(reference, "reference", list(x))
    if anchor not in x:
        raise ValueError(f"reference: {reference!r} is not among the plotted values {x.tolist()}")
    if slope is not None and not np.isfinite(slope):
        raise ValueError(f"slope: expected a finite number, got {slope!r}")
    if unit is None and "unit" in table.columns:
        units = table.loc[(table["region"] == region) & (table["metric"] == metric), "unit"]
        unit = str(units.iloc[0])

    fig = new_figure(width, height)
    ax = fig.add_subplot()
    for row in data:
        ax.plot(x, row, color="0.45", linewidth=0.7, marker="o", markersize=2.5, alpha=0.8,
                zorder=3)
    means, half = mean_ci(data, confidence)
    ax.errorbar(x, means, yerr=half, fmt="D", color="black", markersize=4, capsize=4,
                linewidth=1.2, zorder=4, label=f"mean ± {confidence:.0%} CI")
    if band is not None:
        at = means[np.flatnonzero(x == anchor)[0]]
        ax.axhspan(at + band[0], at + band[1], color="0.85", zorder=1, label=NOISE_BAND_LABEL)
    if slope is not None:
        centre, level = x.mean(), np.nanmean(means)
        ends = np.array([x[0], x[-1]])
        ax.plot(ends, level + slope * (ends - centre), linestyle="--", color="tab:red",
                linewidth=1.0, zorder=5, label=SLOPE_LABEL)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel(label)
    ax.set_ylabel(f"{region} {metric}" + (f" ({unit})" if unit else ""))
    ax.legend(loc="best", fontsize=7, frameon=False)
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    return fig


def _check_band(noise_band) -> tuple[float, float]:
    try:
        pair = np.asarray(noise_band, dtype=float).ravel()
    except (TypeError, ValueError):
        pair = np.array([np.nan])
    if pair.size != 2 or not np.isfinite(pair).all() or pair[0] > pair[1]:
        raise ValueError(f"noise_band: expected finite (ci_low, ci_high) with low <= high, got "
                         f"{noise_band!r}")
    return float(pair[0]), float(pair[1])
