"""A voxelwise map on slices (e.g. the mean Δ in HU), shown where it survives FWE correction,
the survivors outlined; orientation letters and slice positions in mm as in the montages."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from cfx.analysis.figures._common import RAS_AXIS, check_affine, check_volume, pick_slices
from cfx.analysis.figures.montage import display_letters, slice_mm
from cfx.analysis.figures.output import new_figure
from cfx.analysis.render.colour import parse_window
from cfx.analysis.render.slices import slice_stack

__all__ = ["stat_map_figure"]

# Where Δ has no spread, t is infinite; nan_to_num stores that as the float32 extreme.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Where each orientation letter sits on the first panel: (x, y, ha, va) in axes fraction.
_LETTER_PLACES = {"left": (0.03, 0.5, "left", "center"), "right": (0.97, 0.5, "right", "center"),
                  "top": (0.5, 0.97, "center", "top"), "bottom": (0.5, 0.03, "center", "bottom")}


def stat_map_figure(stat: np.ndarray, affine: np.ndarray, p_fwe: np.ndarray | None = None,
                    mask: np.ndarray | None = None, background: np.ndarray | None = None,
                    axis: str = "axial", n_slices: int = 6, alpha: float = 0.05,
                    limit: float | None = None, window: str | tuple[float, float] = "lung",
                    label: str = "t", columns: int = 6, panel: float = 1.2) -> Figure:
    """Slices of a statistic map on a diverging scale centred on 0, in radiological view.

    Slices come from :func:`cfx.analysis.render.slices.slice_stack` (patient's right on the image's
    left, anterior/superior up, square pixels), evenly spaced over the mask's extent. Voxels
    outside ``mask`` are transparent over the optional background CT. With ``p_fwe``, only the
    voxels with ``p_fwe < alpha`` are coloured (the figure a paper shows: the mean Δ where it
    survives), and they are outlined in black. Each column is titled with its slice position in
    mm; the first panel carries the orientation letters read from the affine.

    Parameters
    ----------
    stat : ndarray of float, shape (n_i, n_j, n_k)
        The map (e.g. the mean Δ in HU, or a one-sample t); NaN is shown as transparent;
        ±inf (and the float32 extremes that ``numpy.nan_to_num`` stores for them) are drawn
        at ±limit.
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm.
    p_fwe : ndarray of float, shape (n_i, n_j, n_k), optional
        Family-wise-error corrected p-values of the same grid; voxels at or above ``alpha``
        are not coloured.
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
        Colours saturate at ±limit; the largest finite |stat| among the voxels shown by
        default (give one limit to every figure that must compare).
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
    shown_mask = inside if p is None else inside & (p < alpha)
    infinite = np.isinf(data) | (np.abs(data) >= _FLOAT32_MAX)
    if limit is None:
        values = np.abs(data[shown_mask & ~infinite & ~np.isnan(data)])
        limit = float(values.max()) if values.size and values.max() > 0 else 1.0
    data = np.where(infinite, np.sign(data) * limit, data)  # drawn saturated, not dropped
    shown = slice_stack(np.where(shown_mask, data, np.nan), affine, axis, picks)
    outline = None if p is None else slice_stack(shown_mask, affine, axis, picks)
    grey = None if base is None else slice_stack(base, affine, axis, picks)
    positions = slice_mm(affine, data.shape, axis, picks)
    letters = display_letters(affine, axis, data.shape)
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
        ax.set_title(f"{'xyz'[RAS_AXIS[axis]]} = {positions[index]:.0f} mm", fontsize=6,
                     pad=2)
        if index == 0:
            colour = "white" if grey is not None else "black"
            for where, (x, y, ha, va) in _LETTER_PLACES.items():
                ax.text(x, y, letters[where], transform=ax.transAxes, ha=ha, va=va,
                        fontsize=5, color=colour, fontweight="bold")
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02, extend="both")
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if p is not None:
        fig.text(0.01, 0.0, f"coloured and outlined: p_FWE < {alpha:g}", fontsize=6,
                 va="bottom")
    return fig
