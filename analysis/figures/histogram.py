"""HU histograms of a region per attribute value, on shared bins, with the -950 HU threshold."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from cfx.analysis.figures.output import new_figure

__all__ = ["LAA_THRESHOLD", "shared_bins", "hu_histogram_figure"]

LAA_THRESHOLD = -950.0


def _check_samples(samples: Mapping) -> dict[str, np.ndarray]:
    if not isinstance(samples, Mapping) or not samples:
        raise ValueError("samples: expected a non-empty mapping of value -> HU array, got "
                         f"{type(samples).__name__} of length {len(samples) if samples else 0}")
    out = {}
    for label, values in samples.items():
        data = np.asarray(values, dtype=float).ravel()
        if data.size == 0 or not np.isfinite(data).all():
            raise ValueError(f"samples[{label!r}]: expected finite HU values, got "
                             f"{data.size} values with {int(np.sum(~np.isfinite(data)))} "
                             "not finite")
        out[str(label)] = data
    return out


def shared_bins(samples: Mapping, n_bins: int = 80, threshold: float = LAA_THRESHOLD,
                quantiles: tuple[float, float] = (0.005, 0.995)) -> np.ndarray:
    """Bin edges common to every value's histogram, with ``threshold`` on an edge.

    The range spans the pooled ``quantiles`` of all samples, widened to hold ``threshold`` with a
    margin of 5 % of the range on each side; the
    bin width is the range over ``n_bins``, and the edges are shifted so that one falls exactly on
    ``threshold`` (counts on either side of it are then exact).

    Parameters
    ----------
    samples : mapping of label to ndarray of float
        HU values of the region's voxels per attribute value, any shape.
    n_bins : int
        About this many bins (one more when the shift needs it).

    Returns
    -------
    ndarray of float64, shape (n_edges,)
        Increasing bin edges in HU.
    """
    data = _check_samples(samples)
    if n_bins < 1:
        raise ValueError(f"n_bins: must be >= 1, got {n_bins}")
    pooled = np.concatenate(list(data.values()))
    low, high = np.quantile(pooled, quantiles)
    low, high = min(low, threshold), max(high, threshold)
    margin = 0.05 * (high - low)  # keep the threshold off the plot's edge
    low, high = min(low, threshold - margin), max(high, threshold + margin)
    width = (high - low) / n_bins if high > low else 1.0
    start = threshold - np.ceil((threshold - low) / width) * width
    stop = threshold + np.ceil((high - threshold) / width) * width
    return start + width * np.arange(int(round((stop - start) / width)) + 1)


def hu_histogram_figure(samples: Mapping, bins: np.ndarray | None = None,
                        threshold: float = LAA_THRESHOLD, region: str = "lung",
                        width: float = 4.2, height: float = 3.0) -> Figure:
    """Histograms of a region's HU per attribute value on shared bins.

    Parameters
    ----------
    samples : mapping of label to ndarray of float
        HU values of the region's voxels per attribute value (pooled over subjects), any shape.
    bins : ndarray of float, shape (n_edges,), optional
        Increasing bin edges in HU; :func:`shared_bins` by default. Values outside are left out.
    threshold : float
        HU line to mark (emphysema threshold, -950 HU by default).
    region : str
        Name for the axis label.
    width, height : float
        Figure size in inches.

    Returns
    -------
    Figure
        One axes; y is the share of each value's voxels per bin, in %.
    """
    data = _check_samples(samples)
    edges = shared_bins(data, threshold=threshold) if bins is None else np.asarray(bins, float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins: expected at least 2 increasing edges, got {edges!r}")
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    palette = sns.color_palette("colorblind", len(data))
    for (label, values), colour in zip(data.items(), palette, strict=True):
        counts, _ = np.histogram(values, edges)
        share = 100.0 * counts / values.size
        ax.stairs(share, edges, color=colour, linewidth=1.2, label=label)
        ax.stairs(share, edges, color=colour, alpha=0.15, fill=True)
    ax.axvline(threshold, color="black", linestyle="--", linewidth=0.9)
    ax.text(threshold, 0.97, f" {threshold:g} HU", transform=ax.get_xaxis_transform(),
            ha="left", va="top", fontsize=7)
    ax.set_xlabel(f"{region} voxel density (HU)")
    ax.set_ylabel("voxels per bin (%)")
    ax.set_xlim(edges[0], edges[-1])
    ax.legend(fontsize=7, frameon=False)
    return fig
