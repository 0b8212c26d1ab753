"""A voxelwise statistic map (e.g. t) on slices, FWE-significant voxels outlined."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from analysis.figures._common import check_affine, check_volume, pick_slices
from analysis.figures.output import new_figure
from analysis.render.colour import parse_window
from analysis.render.slices import slice_stack

__all__ = ["stat_map_figure"]

# Where Δ has no spread, t is infinite; nan_to_num stores that as the float32 extreme.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def stat_map_figure(stat: np.ndarray, affine: np.ndarray, p_fwe: np.ndarray | None = None,
                    mask: np.ndarray | None = None, background: np.ndarray | None = None,
                    axis: str = "axial", n_slices: int = 6, alpha: float = 0.05,
                    limit: float | None = None, window: str | tuple[float, float] = "lung",
                    label: str = "t", columns: int = 6, panel: float = 1.2) -> Figure:
    """Slices of a statistic map on a diverging scale centred on 0, in radiological view.

    Slices come from :func:`analysis.render.slices.slice_stack` (patient's right on the image's
    left, anterior/superior up, square pixels), evenly spaced over the mask's extent. Voxels
    outside ``mask`` are transparent over the optional background CT; voxels with
    ``p_fwe < alpha`` are outlined in black.

    Parameters
    ----------
    stat : ndarray of float, shape (n_i, n_j, n_k)
        The map (e.g. one-sample t); NaN is shown as transparent; ±inf (and the float32
        extremes that ``numpy.nan_to_num`` stores for them) are drawn at ±limit.
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm.
    p_fwe : ndarray of float, shape (n_i, n_j, n_k), optional
        Family-wise-error corrected p-values of the same grid.
    mask : ndarray of bool, shape (n_i, n_j, n_k), optional
        Voxels tested; ``stat != 0`` by default.
    background : ndarray of float, shape (n_i, n_j, n_k), optional
        A CT in HU shown underneath through ``window``.
    axis : {"axial", "coronal", "sagittal"}
    n_slices, columns : int
        Slices shown, and panels per row.
    alpha : float
        FWE level of the outline, in (0, 1).
    limit : float, optional
        Colours saturate at ±limit; the largest finite |stat| in the mask by default.
    window : str or (width, level)
        CT window of the background (``"lung"``, ``"mediastinum"`` or HU pair).
    label : str
        Colour bar label.
    panel : float
        Size of one slice panel, in inches.

    Returns
    -------
    Figure
        One axes per slice, in RAS order along ``axis`` (inferior -> superior for axial), and a
        colour bar.
    """
    affine = check_affine(affine)
    data = check_volume(stat, "stat").astype(float)
    p = None if p_fwe is None else check_volume(p_fwe, "p_fwe", data.shape)
    inside = (np.nan_to_num(data) != 0) if mask is None else \
        check_volume(mask, "mask", data.shape).astype(bool)
    base = None if background is None else check_volume(background, "background", data.shape)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    if limit is not None and not limit > 0:
        raise ValueError(f"limit: must be > 0, got {limit}")
    picks = pick_slices(inside, affine, axis, n_slices)
    infinite = np.isinf(data) | (np.abs(data) >= _FLOAT32_MAX)
    if limit is None:
        values = np.abs(data[inside & ~infinite & ~np.isnan(data)])
        limit = float(values.max()) if values.size and values.max() > 0 else 1.0
    data = np.where(infinite, np.sign(data) * limit, data)  # drawn saturated, not dropped
    shown = slice_stack(np.where(inside, data, np.nan), affine, axis, picks)
    outline = None if p is None else slice_stack((p < alpha) & inside, affine, axis, picks)
    grey = None if base is None else slice_stack(base, affine, axis, picks)
    width, level = parse_window(window)

    rows = -(-len(picks) // columns)
    fig = new_figure(panel * min(columns, len(picks)) + 0.8, panel * rows + 0.3)
    axes = fig.subplots(rows, min(columns, len(picks)), squeeze=False)
    image = None
    for index, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if index >= len(picks):
            continue
        if grey is not None:
            ax.imshow(grey[index], cmap="gray", vmin=level - width / 2, vmax=level + width / 2,
                      interpolation="nearest")
        image = ax.imshow(shown[index], cmap="RdBu_r", vmin=-limit, vmax=limit,
                          interpolation="nearest")
        if outline is not None and outline[index].any():
            ax.contour(outline[index].astype(float), levels=[0.5], colors="black",
                       linewidths=0.6)
        if index == 0 and axis != "sagittal":
            ax.text(0.02, 0.98, "R", transform=ax.transAxes, ha="left", va="top", fontsize=6,
                    color="white" if grey is not None else "black")
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02, extend="both")
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if p is not None:
        fig.text(0.01, 0.0, f"outlined: p_FWE < {alpha:g}", fontsize=6, va="bottom")
    return fig
