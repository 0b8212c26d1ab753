"""A region metric per attribute value: one line per subject, violins, mean ± CI per value."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cfx.analysis.figures._common import check_columns, mean_ci, select
from cfx.analysis.figures.output import new_figure

__all__ = ["per_subject_values", "paired_values_figure"]

_COLUMNS = ("subject", "value", "seed", "region", "metric", "estimate")


def per_subject_values(table: pd.DataFrame, region: str = "lung", metric: str = "mean",
                       values: Sequence[Hashable] | None = None) -> pd.DataFrame:
    """One region metric per subject and value, averaged over seeds.

    Parameters
    ----------
    table : DataFrame
        Tidy region metrics (:func:`cfx.analysis.regions.region_table`, ``stats/regions.csv``):
        columns ``subject``, ``value``, ``seed``, ``region``, ``metric``, ``estimate``.
    region, metric : str
        The rows to use.
    values : sequence, optional
        Attribute values, in display order; every value of the table, in order of appearance,
        by default.

    Returns
    -------
    DataFrame of float64, shape (n_subjects, n_values)
        Index: subjects (sorted); columns: ``values``; in the metric's unit. Subjects lacking a
        value hold NaN.
    """
    check_columns(table, "table", _COLUMNS)
    rows = select(table, "table", region=region, metric=metric)
    order = list(pd.unique(rows["value"])) if values is None else list(values)
    unknown = [v for v in order if v not in set(rows["value"])]
    if not order or unknown:
        raise ValueError(f"values: expected values among {list(pd.unique(rows['value']))}, got "
                         f"{order}")
    wide = rows.groupby(["subject", "value"])["estimate"].mean().unstack("value")
    return wide.reindex(columns=order).sort_index()


def paired_values_figure(table: pd.DataFrame, region: str = "lung", metric: str = "mean",
                         values: Sequence[Hashable] | None = None, confidence: float = 0.95,
                         unit: str | None = None, width: float = 3.6,
                         height: float = 3.2) -> Figure:
    """Paired lines and violins of a region metric per attribute value.

    Each subject's seed-averaged metric (:func:`per_subject_values`) is one grey line across the
    values, over a violin of the values' distribution; black markers give each value's mean with
    its two-sided Student-t confidence interval over subjects.

    Parameters
    ----------
    table : DataFrame
        As in :func:`per_subject_values`; a ``unit`` column, when present, labels the y axis.
    region, metric, values
        As in :func:`per_subject_values`.
    confidence : float
        Level of the interval, in (0, 1).
    unit : str, optional
        Overrides the table's unit in the axis label.
    width, height : float
        Figure size in inches.

    Returns
    -------
    Figure
        One axes; x: the values (category positions 0..n_values-1), y: the metric.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    wide = per_subject_values(table, region, metric, values)
    if unit is None and "unit" in table.columns:
        units = table.loc[(table["region"] == region) & (table["metric"] == metric), "unit"]
        unit = str(units.iloc[0]) if len(units) else None
    labels = [str(v) for v in wide.columns]
    long = pd.DataFrame({"level": np.repeat([labels], len(wide), axis=0).ravel(),
                         "y": wide.to_numpy().ravel()}).dropna()

    fig = new_figure(width, height)
    ax = fig.add_subplot()
    sns.violinplot(data=long, x="level", y="y", order=labels, ax=ax, inner=None, cut=0,
                   color="#c6dbef", linewidth=0.6)
    positions = np.arange(len(labels))
    for row in wide.to_numpy():
        ax.plot(positions, row, color="0.45", linewidth=0.7, marker="o", markersize=2.5,
                alpha=0.8, zorder=3)
    means, half = mean_ci(wide.to_numpy(), confidence)
    ax.errorbar(positions, means, yerr=half, fmt="D", color="black", markersize=4, capsize=4,
                linewidth=1.2, zorder=4, label=f"mean ± {confidence:.0%} CI")
    ax.set_xticks(positions, labels)
    ax.set_xlabel("")
    ax.set_ylabel(f"{region} {metric}" + (f" ({unit})" if unit else ""))
    ax.legend(loc="best", fontsize=7, frameon=False)
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    return fig

