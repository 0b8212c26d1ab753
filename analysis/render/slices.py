"""Slices of a volume in radiological display orientation, at isotropic display aspect.

Every view is shown as a radiologist expects it: axial and coronal with the patient's right on
the image's left; axial with anterior up; coronal and sagittal with superior up; sagittal with
anterior on the left. Orientation comes from the affine, so flipped or permuted arrays display
the same way.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

__all__ = ["AXES", "to_ras", "slice_stack", "mid_slice"]

AXES = ("axial", "coronal", "sagittal")
# For a RAS+ array, the axis sliced and how a slice (a, b) becomes (rows, cols) on screen.
_SLICED = {"axial": 2, "coronal": 1, "sagittal": 0}


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")


def to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder and flip array axes so index increases toward Right, Anterior, Superior.

    Parameters
    ----------
    volume : ndarray, shape (n_i, n_j, n_k)
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm. Oblique affines use the nearest axes.

    Returns
    -------
    data : ndarray, shape (n_x, n_y, n_z)
        A view of ``volume`` in RAS+ order.
    spacing : ndarray of float, shape (3,)
        Voxel size along the returned axes, in mm.
    """
    ornt = io_orientation(affine)
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    out_spacing = np.empty(3)
    out_spacing[ornt[:, 0].astype(int)] = spacing
    return apply_orientation(volume, ornt), out_spacing


def _resize_indices(n: int, step_mm: float, pixel_mm: float) -> np.ndarray:
    size = max(1, int(round(n * step_mm / pixel_mm)))
    return np.minimum((np.arange(size) + 0.5) * pixel_mm / step_mm, n - 1).astype(np.intp)


def slice_stack(volume: np.ndarray, affine: np.ndarray, axis: str = "axial",
                indices: np.ndarray | None = None, min_size: int = 0) -> np.ndarray:
    """All (or the chosen) slices along ``axis`` as display images.

    Rows and columns are resampled (nearest voxel) to square pixels of the finest in-plane
    spacing, so anatomy keeps its true proportions; pixels shrink further when needed to make
    the longer side at least ``min_size`` pixels (small volumes stay legible).

    Parameters
    ----------
    volume : ndarray, shape (n_i, n_j, n_k)
    affine : ndarray, shape (4, 4)
    axis : {"axial", "coronal", "sagittal"}
    indices : ndarray of int, optional
        Slice positions along the RAS axis (inferior->superior, posterior->anterior,
        left->right); all slices by default.
    min_size : int
        Smallest length of the image's longer side, in pixels.

    Returns
    -------
    ndarray, shape (n_slices, n_rows, n_cols), same dtype as ``volume``
    """
    _check_axis(axis)
    data, spacing = to_ras(np.asarray(volume), affine)
    k = _SLICED[axis]
    if indices is None:
        indices = np.arange(data.shape[k])
    stack = np.moveaxis(np.take(data, indices, axis=k), k, 0)  # (n, a, b), a/b the other axes
    a_axis, b_axis = [i for i in range(3) if i != k]
    # Screen rows run along b (descending: anterior or superior on top); columns along a,
    # descending (patient's right on the left; for sagittal, anterior on the left).
    frames = np.swapaxes(stack, 1, 2)[:, ::-1, ::-1]
    extent = max(frames.shape[1] * spacing[b_axis], frames.shape[2] * spacing[a_axis])
    pixel = min(spacing[a_axis], spacing[b_axis], extent / max(min_size, 1))
    rows = _resize_indices(frames.shape[1], spacing[b_axis], pixel)
    cols = _resize_indices(frames.shape[2], spacing[a_axis], pixel)
    return frames[:, rows][:, :, cols]


def mid_slice(mask: np.ndarray, affine: np.ndarray, axis: str = "axial") -> int:
    """The frame of :func:`slice_stack` half-way through ``mask`` (e.g. the lungs) along ``axis``.

    Parameters
    ----------
    mask : ndarray of bool, shape (n_i, n_j, n_k)
        An empty mask gives the middle slice of the volume.
    affine : ndarray, shape (4, 4)

    Returns
    -------
    int
        Index into the frames of ``slice_stack(volume, affine, axis)``: the middle of the first
        and last slices the mask touches, rounded down.
    """
    _check_axis(axis)
    k = _SLICED[axis]
    data = to_ras(np.asarray(mask, bool), affine)[0]
    present = np.flatnonzero(data.any(axis=tuple(i for i in range(3) if i != k)))
    if not present.size:
        return (data.shape[k] - 1) // 2
    return int((present[0] + present[-1]) // 2)
