"""Still montages of chosen slices for papers: orientation letters from the affine, the slice
position in mm, and one colour scale shared by every panel of the figure."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from nibabel.orientations import inv_ornt_aff, io_orientation

from cfx.analysis.figures._common import RAS_AXIS, check_affine, check_volume
from cfx.analysis.figures.output import new_figure
from cfx.analysis.render.slices import slice_stack

__all__ = ["display_letters", "slice_mm", "montage_figure"]

_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (toward -, toward +) of each RAS axis
_AXIS_NAME = "xyz"
# For each view, the RAS axes shown along screen columns and rows (see slice_stack).
_IN_PLANE = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}


def _ras_affine(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The affine of the array :func:`cfx.analysis.render.slices.to_ras` returns."""
    ornt = io_orientation(affine)
    return affine @ inv_ornt_aff(ornt, shape)


def _letter(direction: np.ndarray) -> str:
    """The anatomical letter a world direction (RAS mm) points toward (its largest component)."""
    k = int(np.argmax(np.abs(direction)))
    return _LETTERS[k][int(direction[k] > 0)]


def display_letters(affine: np.ndarray, axis: str = "axial",
                    shape: tuple[int, int, int] = (2, 2, 2)) -> dict[str, str]:
    """The anatomical direction at each edge of a slice as :func:`slice_stack` shows it.

    Derived from the affine: the world direction in which screen columns and rows advance is
    that of the reoriented array's axes (screen columns and rows run along descending RAS
    indices), named by its largest component.

    Parameters
    ----------
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm of the volume shown.
    axis : {"axial", "coronal", "sagittal"}
    shape : tuple of int
        The volume's shape (only matters for the translation, not the letters).

    Returns
    -------
    dict
        ``left``, ``right``, ``top``, ``bottom``: one of R/L, A/P, S/I each (axial: R, L, A, P).
    """
    affine = check_affine(affine)
    if axis not in RAS_AXIS:
        raise ValueError(f"axis: expected one of {', '.join(RAS_AXIS)}, got {axis!r}")
    ras = _ras_affine(affine, shape)
    col_axis, row_axis = _IN_PLANE[axis]
    right = -ras[:3, col_axis]  # screen column index grows as the RAS index falls
    down = -ras[:3, row_axis]
    return {"left": _letter(-right), "right": _letter(right), "top": _letter(-down),
            "bottom": _letter(down)}


def slice_mm(affine: np.ndarray, shape: tuple[int, int, int], axis: str,
             indices) -> np.ndarray:
    """World position (mm, along the sliced RAS axis) of slices chosen by RAS index.

    Parameters
    ----------
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm.
    shape : tuple of int
        The volume's shape (n_i, n_j, n_k).
    axis : {"axial", "coronal", "sagittal"}
    indices : array_like of int, shape (n_slices,)
        Slice positions along the RAS axis, as :func:`slice_stack` takes them.

    Returns
    -------
    ndarray of float, shape (n_slices,)
        x (sagittal), y (coronal) or z (axial) of each slice's centre plane, in mm.
    """
    affine = check_affine(affine)
    if axis not in RAS_AXIS:
        raise ValueError(f"axis: expected one of {', '.join(RAS_AXIS)}, got {axis!r}")
    ras = _ras_affine(affine, shape)
    k = RAS_AXIS[axis]
    index = np.zeros((4, len(indices)))
    index[k] = np.asarray(indices, float)
    index[3] = 1.0
    return (ras @ index)[k]


def montage_figure(rows: Mapping[str, np.ndarray], affine: np.ndarray, indices,
                   clim: tuple[float, float], cmap: str = "gray", axis: str = "axial",
                   outlines: Mapping[str, np.ndarray] | None = None, label: str = "HU",
                   panel: float = 1.1) -> Figure:
    """Rows of the same slices of several volumes, every panel on one colour scale.

    Parameters
    ----------
    rows : mapping of str to ndarray of float, shape (n_i, n_j, n_k)
        Row label -> volume (e.g. CT in HU, difference in HU), all on the grid of ``affine``.
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm.
    indices : array_like of int, shape (n_slices,)
        Slice positions along the RAS axis (see :func:`cfx.analysis.figures._common.pick_slices`).
    clim : (float, float)
        Colour limits of every panel (a CT window's ends, or ±limit for a difference).
    cmap : str
        Matplotlib colormap.
    axis : {"axial", "coronal", "sagittal"}
    outlines : mapping of str to ndarray of bool, shape (n_i, n_j, n_k), optional
        Row label -> region outlined on that row (rows without an entry have none).
    label : str
        Colour bar label (say the window or the unit).
    panel : float
        Size of one panel, in inches.

    Returns
    -------
    Figure
        ``len(rows)`` x ``n_slices`` axes: the slice position in mm above each column, the
        orientation letters on the first panel, and one colour bar.
    """
    affine = check_affine(affine)
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError(f"rows: expected a non-empty mapping of label -> volume, got "
                         f"{type(rows).__name__}")
    volumes: dict[str, np.ndarray] = {}
    for name, data in rows.items():
        volumes[str(name)] = check_volume(data, f"rows[{name!r}]",
                                          next(iter(volumes.values())).shape if volumes else None)
    shape = next(iter(volumes.values())).shape
    low, high = (float(v) for v in clim)
    if not low < high:
        raise ValueError(f"clim: expected (low, high) with low < high, got {tuple(clim)}")
    picks = np.asarray(indices, int)
    if picks.ndim != 1 or not picks.size:
        raise ValueError(f"indices: expected a non-empty list of slice positions, got {indices!r}")
    if axis not in RAS_AXIS:
        raise ValueError(f"axis: expected one of {', '.join(RAS_AXIS)}, got {axis!r}")
    ras_shape = np.empty(3, int)
    ras_shape[io_orientation(affine)[:, 0].astype(int)] = shape
    extent = int(ras_shape[RAS_AXIS[axis]])
    if picks.min() < 0 or picks.max() >= extent:
        raise ValueError(f"indices: slice positions must be in 0..{extent - 1} along {axis}, "
                         f"got {picks.tolist()}")
    marks = {str(k): check_volume(v, f"outlines[{k!r}]", shape).astype(bool)
             for k, v in (outlines or {}).items()}
    positions = slice_mm(affine, shape, axis, picks)
    letters = display_letters(affine, axis, shape)

    fig = new_figure(panel * len(picks) + 1.5, panel * len(volumes) + 0.35)
    axes = fig.subplots(len(volumes), len(picks), squeeze=False)
    image = None
    for row, (name, data) in zip(axes, volumes.items(), strict=True):
        stack = slice_stack(data, affine, axis, picks)
        outline = slice_stack(marks[name], affine, axis, picks) if name in marks else None
        for index, ax in enumerate(row):
            image = ax.imshow(stack[index], cmap=cmap, vmin=low, vmax=high,
                              interpolation="nearest")
            if outline is not None and outline[index].any():
                ax.contour(outline[index].astype(float), levels=[0.5], colors="0.3",
                           linewidths=0.4)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=6)
    for ax, mm in zip(axes[0], positions, strict=True):
        ax.set_title(f"{_AXIS_NAME[RAS_AXIS[axis]]} = {mm:.0f} mm", fontsize=6, pad=2)
    _letters(axes[0, 0], letters, "white" if cmap == "gray" else "black")
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
    bar.set_label(label, fontsize=6)
    bar.ax.tick_params(labelsize=5)
    return fig


def _letters(ax, letters: dict[str, str], colour: str) -> None:
    """The four orientation letters just inside the panel's edges."""
    style = {"transform": ax.transAxes, "fontsize": 5, "color": colour, "fontweight": "bold"}
    ax.text(0.03, 0.5, letters["left"], ha="left", va="center", **style)
    ax.text(0.97, 0.5, letters["right"], ha="right", va="center", **style)
    ax.text(0.5, 0.97, letters["top"], ha="center", va="top", **style)
    ax.text(0.5, 0.03, letters["bottom"], ha="center", va="bottom", **style)
