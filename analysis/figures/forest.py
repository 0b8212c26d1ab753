"""Forest plot: paired effect sizes with CIs across values, regions and metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfx.analysis.figures._common import check_columns
from cfx.analysis.figures.output import new_figure

__all__ = ["forest_rows", "forest_figure"]

_COLUMNS = ("value", "reference", "region", "metric", "estimate", "ci_low", "ci_high")
_NOISE = ("noise_ci_low", "noise_ci_high")


def forest_rows(effects: pd.DataFrame, metrics: Sequence[str] | None = None,
                regions: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows a forest plot shows, top to bottom, with their labels.

    Parameters
    ----------
    effects : DataFrame
        The effect table (:func:`cfx.analysis.stats.effects.effect_table`, ``stats/effects.csv``):
        columns ``value``, ``reference``, ``region``, ``metric``, ``estimate``, ``ci_low``,
        ``ci_high``; optionally ``attribute``, ``unit``, ``noise_ci_low``, ``noise_ci_high``.
    metrics, regions : sequence of str, optional
        Keep these (in this order); all by default, in table order.

    Returns
    -------
    DataFrame
        The chosen rows, grouped by metric then region, with a ``label`` column
        (``"[attribute ]value vs reference · region"``).
    """
    check_columns(effects, "effects", _COLUMNS)
    rows = effects
    for column, keep in (("metric", metrics), ("region", regions)):
        if keep is None:
            continue
        unknown = [k for k in keep if k not in set(rows[column])]
        if not keep or unknown:
            raise ValueError(f"{column}s: expected some of {list(pd.unique(rows[column]))}, got "
                             f"{list(keep)}")
        rows = rows[rows[column].isin(keep)]
    metric_order = list(metrics) if metrics is not None else list(pd.unique(rows["metric"]))
    region_order = list(regions) if regions is not None else list(pd.unique(rows["region"]))
    rows = rows.assign(_m=rows["metric"].map(metric_order.index),
                       _r=rows["region"].map(region_order.index))
    rows = rows.sort_values(["_m", "_r"], kind="stable").drop(columns=["_m", "_r"])
    prefix = (rows["attribute"].astype(str) + " " if "attribute" in rows.columns else "")
    label = (prefix + rows["value"].astype(str) + " vs " + rows["reference"].astype(str)
             + " · " + rows["region"].astype(str))
    return rows.assign(label=label).reset_index(drop=True)


def forest_figure(effects: pd.DataFrame, metrics: Sequence[str] | None = None,
                  regions: Sequence[str] | None = None, width: float = 4.8,
                  row_height: float = 0.28) -> Figure:
    """Effect estimates with confidence intervals, one panel per metric.

    Each row is one contrast x region (:func:`forest_rows`): a black marker at ``estimate``
    and a bar from ``ci_low`` to ``ci_high``; when the table has the noise floor's interval, a
    grey bar behind shows ``noise_ci_low``..``noise_ci_high`` on the same row. A vertical line
    marks 0. Panels have their own x axis (metrics have different units).

    Parameters
    ----------
    effects, metrics, regions
        As in :func:`forest_rows`.
    width : float
        Figure width in inches.
    row_height : float
        Height per row in inches.

    Returns
    -------
    Figure
        One axes per metric, rows from top to bottom in :func:`forest_rows` order.
    """
    rows = forest_rows(effects, metrics, regions)
    groups = list(rows.groupby("metric", sort=False))
    heights = [len(g) + 1.2 for _, g in groups]
    fig = new_figure(width, row_height * sum(heights) + 0.4)
    axes = fig.subplots(len(groups), 1, squeeze=False, height_ratios=heights)[:, 0]
    noise = all(c in rows.columns for c in _NOISE)
    for ax, (metric, group) in zip(axes, groups, strict=True):
        y = np.arange(len(group))[::-1]
        if noise:
            ax.hlines(y, group["noise_ci_low"], group["noise_ci_high"], color="0.75",
                      linewidth=5, zorder=1, label="noise floor CI")
        ax.hlines(y, group["ci_low"], group["ci_high"], color="black", linewidth=1.2, zorder=2)
        ax.scatter(group["estimate"], y, marker="D", s=14, color="black", zorder=3,
                   label="effect and CI")
        ax.axvline(0, color="0.3", linewidth=0.6, linestyle=":")
        ax.set_yticks(y, group["label"], fontsize=7)
        ax.set_ylim(-0.8, len(group) - 0.2)
        unit = f" ({group['unit'].iloc[0]})" if "unit" in group.columns else ""
        ax.set_xlabel(f"Δ {metric}{unit}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(fontsize=6, frameon=False, loc="lower right", bbox_to_anchor=(1, 1), ncols=2)
    return fig
