"""Scoring a model's counterfactual difference map against the phantom oracle's exact one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DifferenceScore", "score_difference"]


@dataclass(frozen=True)
class DifferenceScore:
    """How well a predicted difference map matches the expected one.

    Attributes
    ----------
    region_mean_predicted, region_mean_expected : float
        Mean of each map over ``region``, in HU.
    region_mean_error : float
        ``region_mean_predicted - region_mean_expected``, in HU.
    rmse : float
        Root mean squared voxelwise difference over ``within``, in HU.
    correlation : float
        Pearson correlation of the two maps over ``within``; NaN when either map is constant
        there.
    """

    region_mean_predicted: float
    region_mean_expected: float
    region_mean_error: float
    rmse: float
    correlation: float


def score_difference(predicted: np.ndarray, expected: np.ndarray, region: np.ndarray,
                     within: np.ndarray | None = None) -> DifferenceScore:
    """Compare two difference maps (e.g. a learned model's and the oracle's).

    Parameters
    ----------
    predicted, expected : ndarray of float, shape (n_x, n_y, n_z)
        Difference maps in HU (value minus reference).
    region : ndarray of bool, shape (n_x, n_y, n_z)
        Where the region means are taken (e.g. the lungs).
    within : ndarray of bool, shape (n_x, n_y, n_z), optional
        Where RMSE and correlation are taken; the whole volume by default (so a map planted
        uniformly on the lungs still has a defined correlation).

    Returns
    -------
    DifferenceScore

    Raises
    ------
    ValueError
        If shapes differ, a mask is not boolean or a mask is empty.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if predicted.shape != expected.shape:
        raise ValueError(f"predicted has shape {predicted.shape} but expected has shape "
                         f"{expected.shape}; both maps must share one grid")
    within = np.ones(expected.shape, bool) if within is None else within
    for name, mask in (("region", region), ("within", within)):
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != expected.shape:
            raise ValueError(f"{name}: expected a boolean mask of shape {expected.shape}, got "
                             f"dtype {mask.dtype} with shape {mask.shape}")
        if not mask.any():
            raise ValueError(f"{name}: the mask is empty (0 voxels)")
    mean_predicted = float(predicted[region].mean())
    mean_expected = float(expected[region].mean())
    p, e = predicted[within], expected[within]
    rmse = float(np.sqrt(np.mean((p - e) ** 2)))
    p, e = p - p.mean(), e - e.mean()
    denominator = float(np.sqrt((p @ p) * (e @ e)))
    correlation = float(p @ e) / denominator if denominator > 0 else float("nan")
    return DifferenceScore(mean_predicted, mean_expected, mean_predicted - mean_expected, rmse,
                           correlation)
