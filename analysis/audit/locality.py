"""Minimality / locality: where a counterfactual's change falls.

A counterfactual of a lung attribute should change the lungs and leave the rest of the chest as
it was. For a difference map ``d`` (value minus reference, HU) and a region (the lungs):

================= ====== ==================================================================
quantity          unit   definition
================= ====== ==================================================================
share_inside      1      ``sum |d| inside / sum |d|`` over all voxels (NaN when ``d`` is 0)
mean_abs_inside   HU     mean ``|d|`` over the region's voxels
mean_inside       HU     mean ``d`` over the region's voxels (signed: the edit's size)
mean_abs_outside  HU     mean ``|d|`` over the voxels outside the region
max_abs_outside   HU     largest ``|d|`` outside the region
================= ====== ==================================================================

Several maps are pooled by adding their sums and counts (:func:`pool_locality`), so pooled means
weight every voxel alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["ChangeLocality", "change_locality", "pool_locality"]


@dataclass(frozen=True)
class ChangeLocality:
    """Sums of ``|d|`` inside and outside a region, and what follows from them.

    Attributes
    ----------
    sum_abs_inside, sum_abs_outside : float
        Sum of ``|d|`` over the region's voxels and over the others, in HU x voxels.
    n_inside, n_outside : int
        Voxel counts.
    max_abs_outside : float
        Largest ``|d|`` outside the region, in HU (0 when nothing is outside).
    sum_inside : float
        Sum of ``d`` (signed) over the region's voxels, in HU x voxels.
    """

    sum_abs_inside: float
    sum_abs_outside: float
    n_inside: int
    n_outside: int
    max_abs_outside: float
    sum_inside: float

    @property
    def share_inside(self) -> float:
        """Fraction of the total ``|d|`` inside the region; NaN when there is no change."""
        total = self.sum_abs_inside + self.sum_abs_outside
        return self.sum_abs_inside / total if total > 0 else float("nan")

    @property
    def mean_abs_inside(self) -> float:
        """Mean ``|d|`` inside the region, in HU; NaN for an empty region."""
        return self.sum_abs_inside / self.n_inside if self.n_inside else float("nan")

    @property
    def mean_inside(self) -> float:
        """Mean ``d`` (signed) inside the region, in HU; NaN for an empty region."""
        return self.sum_inside / self.n_inside if self.n_inside else float("nan")

    @property
    def mean_abs_outside(self) -> float:
        """Mean ``|d|`` outside the region, in HU; NaN when nothing is outside."""
        return self.sum_abs_outside / self.n_outside if self.n_outside else float("nan")


def change_locality(difference: np.ndarray, inside: np.ndarray) -> ChangeLocality:
    """Split a difference map's absolute change between a region and the rest.

    Parameters
    ----------
    difference : ndarray of float, shape (n_x, n_y, n_z)
        Counterfactual minus reference, in HU.
    inside : ndarray of bool, shape (n_x, n_y, n_z)
        The region the change belongs in (e.g. the lungs).

    Returns
    -------
    ChangeLocality

    Raises
    ------
    ValueError
        If ``inside`` is not a boolean mask of the map's shape or is empty, or the map holds
        non-finite values.
    """
    difference = np.asarray(difference, dtype=np.float64)
    inside = np.asarray(inside)
    if inside.dtype != bool or inside.shape != difference.shape:
        raise ValueError(f"inside: expected a boolean mask of shape {difference.shape}, got dtype "
                         f"{inside.dtype} with shape {inside.shape}")
    if not inside.any():
        raise ValueError("inside: the region is empty (0 voxels)")
    magnitude = np.abs(difference)
    if not np.isfinite(magnitude).all():
        raise ValueError("difference: the map holds non-finite values (NaN or inf); expected HU")
    outside = magnitude[~inside]
    return ChangeLocality(float(magnitude[inside].sum()), float(outside.sum()),
                          int(inside.sum()), int(outside.size),
                          float(outside.max()) if outside.size else 0.0,
                          float(difference[inside].sum()))


def pool_locality(parts: Iterable[ChangeLocality]) -> ChangeLocality:
    """Pool several maps' localities: sums and counts add, the maximum is the largest.

    Raises
    ------
    ValueError
        If ``parts`` is empty.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("parts: expected at least one ChangeLocality, got none")
    return ChangeLocality(sum(p.sum_abs_inside for p in parts),
                          sum(p.sum_abs_outside for p in parts),
                          sum(p.n_inside for p in parts), sum(p.n_outside for p in parts),
                          max(p.max_abs_outside for p in parts),
                          sum(p.sum_inside for p in parts))
