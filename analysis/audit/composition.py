"""Composition (null intervention): how far apart two generations of one subject are.

A sound counterfactual model that is asked for the value a subject already has, with the same
noise, returns the same volume: the distance is 0. Two noise seeds at one value give the scale
against which any non-zero distance is read (the seed-to-seed distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VolumeDistance", "volume_distance"]


@dataclass(frozen=True)
class VolumeDistance:
    """Voxelwise distance between two volumes.

    Attributes
    ----------
    mean_abs : float
        Mean of ``|a - b|`` over all voxels, in HU.
    max_abs : float
        Largest ``|a - b|``, in HU.
    """

    mean_abs: float
    max_abs: float


def volume_distance(a: np.ndarray, b: np.ndarray) -> VolumeDistance:
    """Mean and largest absolute voxelwise difference of two volumes.

    Parameters
    ----------
    a, b : ndarray of float, shape (n_x, n_y, n_z)
        Volumes in HU on one grid.

    Returns
    -------
    VolumeDistance

    Raises
    ------
    ValueError
        If the shapes differ, a volume is empty, or either holds non-finite values.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a has shape {a.shape} but b has shape {b.shape}; both volumes must "
                         "share one grid")
    if a.size == 0:
        raise ValueError("a: the volumes are empty (0 voxels)")
    delta = np.abs(a - b)
    if not np.isfinite(delta).all():
        raise ValueError("a, b: the volumes hold non-finite values (NaN or inf); expected HU")
    return VolumeDistance(float(delta.mean()), float(delta.max()))
