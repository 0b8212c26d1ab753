"""Difference maps (counterfactual minus reference, HU) on slices: one row per map."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from cfx.analysis.figures._common import check_affine, check_volume, pick_slices
from cfx.analysis.figures.output import new_figure
from cfx.analysis.render.colour import DIFF_CMAP
from cfx.analysis.render.gif import symmetric_limit
from cfx.analysis.render.slices import slice_stack

__all__ = ["difference_figure"]


def difference_figure(diffs: Mapping, affine: np.ndarray, mask: np.ndarray | Mapping | None = None,
                      limit: float | None = None, axis: str = "axial", n_slices: int = 5,
                      panel: float = 1.1) -> Figure:
    """Rows of difference maps on one diverging scale centred on 0 HU.

    Every row shows the same slices (evenly spaced over ``mask``'s extent, radiological view
    from :func:`cfx.analysis.render.slices.slice_stack`) of one map, so rows compare directly:
    subjects, seeds or the cohort mean.

    Parameters
    ----------
    diffs : mapping of str to ndarray of float, shape (n_i, n_j, n_k)
        Row label -> difference map in HU, all on one grid.
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm.
    mask : ndarray of bool, shape (n_i, n_j, n_k), or mapping of str to such, optional
        Region whose outline is drawn (e.g. the lungs): one for every row, or one per row label
        (each subject's own). The slices span the extent of all of them.
    limit : float, optional
        Colours saturate at ±limit HU; by default :func:`cfx.analysis.render.gif.symmetric_limit`
        of all maps pooled (within ``mask``).
    axis : {"axial", "coronal", "sagittal"}
    n_slices : int
        Columns.
    panel : float
        Size of one slice panel, in inches.

    Returns
    -------
    Figure
        ``len(diffs)`` x ``n_slices`` axes (fewer columns when the extent is thinner) and a
        colour bar in HU.
    """
    affine = check_affine(affine)
    if not isinstance(diffs, Mapping) or not diffs:
        raise ValueError(f"diffs: expected a non-empty mapping of label -> map, got "
                         f"{type(diffs).__name__}")
    maps = {}
    for label, data in diffs.items():
        maps[str(label)] = check_volume(data, f"diffs[{label!r}]",
                                        next(iter(maps.values())).shape if maps else None)
    shape = next(iter(maps.values())).shape
    outlines = _masks(mask, maps, shape)
    if limit is not None and not limit > 0:
        raise ValueError(f"limit: must be > 0, got {limit}")
    picks = pick_slices(np.ones(shape, bool) if outlines is None else
                        np.any(list(outlines.values()), axis=0), affine, axis, n_slices)
    if limit is None:
        limit = symmetric_limit(np.stack(list(maps.values())), None if outlines is None else
                                np.stack([outlines[label] for label in maps]))

    fig = new_figure(panel * len(picks) + 1.4, panel * len(maps) + 0.2)
    axes = fig.subplots(len(maps), len(picks), squeeze=False)
    image = None
    for row, (label, data) in zip(axes, maps.items(), strict=True):
        stack = slice_stack(data, affine, axis, picks)
        outline = None if outlines is None else slice_stack(outlines[label], affine, axis, picks)
        for index, ax in enumerate(row):
            image = ax.imshow(stack[index], cmap=DIFF_CMAP, vmin=-limit, vmax=limit,
                              interpolation="nearest")
            if outline is not None and outline[index].any():
                ax.contour(outline[index].astype(float), levels=[0.5], colors="0.2",
                           linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, fontsize=7)
    if axis != "sagittal":
        axes[0, 0].text(0.03, 0.97, "R", transform=axes[0, 0].transAxes, ha="left", va="top",
                        fontsize=6)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
    bar.set_label("Δ HU", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return fig


def _masks(mask, maps: dict[str, np.ndarray], shape: tuple) -> dict[str, np.ndarray] | None:
    """One boolean mask per row label, or None."""
    if mask is None:
        return None
    if not isinstance(mask, Mapping):
        region = check_volume(mask, "mask", shape).astype(bool)
        return dict.fromkeys(maps, region)
    named = {str(k): v for k, v in mask.items()}
    missing = [label for label in maps if label not in named]
    if missing:
        raise ValueError(f"mask: no mask for row(s) {missing}; it has {list(named)}")
    return {label: check_volume(named[label], f"mask[{label!r}]", shape).astype(bool)
            for label in maps}
