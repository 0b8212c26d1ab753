"""Per-subject effects of an attribute beside the seed-vs-seed noise floor."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from cfx.analysis.figures._common import mean_ci
from cfx.analysis.figures.output import new_figure

__all__ = ["NOISE_LABEL", "delta_noise_figure"]

NOISE_LABEL = "seed vs seed"


def _check_sample(values, name: str) -> np.ndarray:
    data = np.asarray(values, dtype=float).ravel()
    if data.size == 0 or not np.isfinite(data).all():
        raise ValueError(f"{name}: expected one finite value per subject, got {data.size} values "
                         f"with {int(np.sum(~np.isfinite(data)))} not finite")
    return data


def _check_interval(interval, name: str) -> tuple[float, float, float]:
    triple = tuple(float(x) for x in np.ravel(interval))
    if len(triple) != 3 or not all(np.isfinite(triple)) or not triple[1] <= triple[2]:
        raise ValueError(f"{name}: expected finite (estimate, low, high) with low <= high, got "
                         f"{interval!r}")
    return triple


def delta_noise_figure(deltas: Mapping, noise, intervals: Mapping | None = None,
                       confidence: float = 0.95, unit: str = "", label: str = "",
                       width: float = 3.8, height: float = 3.0) -> Figure:
    """Each subject's Δ per contrast, and the noise floor's per-subject seed-vs-seed Δ.

    One column of points per contrast and a last column for the noise floor; a black marker
    and bar give each column's estimate and confidence interval; the noise floor's interval is
    also drawn as a grey band across the plot, so an effect whose interval leaves the band is
    larger than what changing only the seed does.

    Parameters
    ----------
    deltas : mapping of str to ndarray of float, shape (n_subjects,)
        Per contrast (e.g. ``"yes - no"``), each subject's seed-averaged Δ (value minus
        reference), in the metric's unit (:meth:`cfx.analysis.stats.grid.SweepGrid.deltas`).
    noise : ndarray of float, shape (n_subjects,), or None
        Each subject's seed-vs-seed Δ at equal value
        (:meth:`cfx.analysis.stats.grid.SweepGrid.seed_deltas`); None for a single-seed sweep
        (no noise floor column or band).
    intervals : mapping of str to (float, float, float), optional
        ``(estimate, ci_low, ci_high)`` per contrast label and for :data:`NOISE_LABEL`, as in the
        effect table (``estimate``/``ci_*``, ``noise_estimate``/``noise_ci_*``); missing ones
        are Student-t intervals of the points at ``confidence``.
    confidence : float
        Level of the computed intervals, in (0, 1).
    unit, label : str
        Axis label pieces: ``"Δ <label> (<unit>)"``.
    width, height : float
        Figure size in inches.

    Returns
    -------
    Figure
        One axes; x: the contrasts then the noise floor (positions 0..n), y: Δ.
    """
    if not isinstance(deltas, Mapping) or not deltas:
        raise ValueError(f"deltas: expected a non-empty mapping of contrast -> per-subject Δ, got "
                         f"{type(deltas).__name__}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    columns = {str(k): _check_sample(v, f"deltas[{k!r}]") for k, v in deltas.items()}
    if NOISE_LABEL in columns:
        raise ValueError(f"deltas: {NOISE_LABEL!r} is the noise floor's column; rename that "
                         "contrast")
    if noise is not None:
        columns[NOISE_LABEL] = _check_sample(noise, "noise")
    given = {str(k): _check_interval(v, f"intervals[{k!r}]") for k, v in (intervals or {}).items()}
    unknown = sorted(set(given) - set(columns))
    if unknown:
        raise ValueError(f"intervals: {unknown} name no column; columns are {list(columns)}")

    fig = new_figure(width, height)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    bands = {}
    for position, (name, points) in enumerate(columns.items()):
        if name in given:
            estimate, low, high = given[name]
        else:
            mean, half = mean_ci(points[:, None], confidence)
            estimate, low, high = mean[0], mean[0] - half[0], mean[0] + half[0]
        bands[name] = (low, high)
        colour = "0.5" if name == NOISE_LABEL else "tab:blue"
        jitter = rng.uniform(-0.12, 0.12, points.size)
        ax.scatter(position + jitter, points, s=12, color=colour, alpha=0.7, linewidths=0,
                   zorder=3)
        ax.errorbar([position + 0.28], [estimate], yerr=[[estimate - low], [high - estimate]],
                    fmt="D", color="black", markersize=4, capsize=4, linewidth=1.2, zorder=4)
    if NOISE_LABEL in bands:
        low, high = bands[NOISE_LABEL]
        ax.axhspan(low, high, color="0.85", zorder=1, label="noise floor CI")
        ax.legend(fontsize=7, frameon=False, loc="best")
    ax.axhline(0, color="black", linewidth=0.6, zorder=2)
    ax.set_xticks(np.arange(len(columns)), list(columns))
    ax.set_xlim(-0.6, len(columns) - 0.3)
    ax.set_ylabel(" ".join(p for p in ("Δ", label, f"({unit})" if unit else "") if p))
    return fig
