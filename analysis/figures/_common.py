"""Helpers shared by the figure functions: input checks (``ValueError`` naming the input) and
Student-t intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cfx.analysis.render.slices import to_ras


def check_columns(table: pd.DataFrame, name: str, required: tuple[str, ...]) -> None:
    """Raise if ``table`` is not a DataFrame holding every column of ``required``."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}; it has "
                         f"{', '.join(map(str, table.columns)) or 'no columns'}")


def select(table: pd.DataFrame, name: str, **where) -> pd.DataFrame:
    """Rows of ``table`` whose columns equal ``where``; raise naming the choices when none do."""
    rows = table
    for column, wanted in where.items():
        hit = rows[rows[column] == wanted]
        if hit.empty:
            have = ", ".join(map(str, pd.unique(rows[column])))
            raise ValueError(f"{column}: {wanted!r} is not in {name}; it has {have or 'nothing'}")
        rows = hit
    return rows


def check_volume(array, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``array`` as a 3-D ndarray (of ``shape`` when given)."""
    data = np.asarray(array)
    if data.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D volume, got shape {data.shape}")
    if shape is not None and data.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (the map's grid), got {data.shape}")
    return data


def check_affine(affine) -> np.ndarray:
    """``affine`` as a finite, invertible 4x4 float array."""
    data = np.asarray(affine, dtype=float)
    if data.shape != (4, 4) or not np.isfinite(data).all() or abs(np.linalg.det(data)) < 1e-12:
        raise ValueError(f"affine: expected a finite invertible 4x4 matrix, got shape "
                         f"{data.shape}")
    return data


def mean_ci(data: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Column means and half-widths of their Student-t intervals (NaN-aware, n - 1 dof)."""
    n = np.sum(~np.isnan(data), axis=0)
    means = np.nanmean(data, axis=0)
    squares = np.nansum((data - means) ** 2, axis=0)
    sem = np.sqrt(squares / np.maximum(n - 1, 1) / np.maximum(n, 1))
    quantile = stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1))
    return means, np.where(n > 1, quantile * sem, np.nan)


# The RAS axis each view slices (as in cfx.analysis.render.slices).
RAS_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def pick_slices(mask: np.ndarray, affine: np.ndarray, axis: str, n_slices: int) -> np.ndarray:
    """``n_slices`` evenly spaced RAS slice positions along ``axis`` within ``mask``'s extent.

    Returns positions for :func:`cfx.analysis.render.slices.slice_stack`, inferior -> superior
    (posterior -> anterior, left -> right); the whole axis when ``mask`` is empty.
    """
    if axis not in RAS_AXIS:
        raise ValueError(f"axis: expected one of {', '.join(RAS_AXIS)}, got {axis!r}")
    if n_slices < 1:
        raise ValueError(f"n_slices: must be >= 1, got {n_slices}")
    ras, _ = to_ras(np.asarray(mask, bool), affine)
    k = RAS_AXIS[axis]
    hit = np.flatnonzero(ras.any(axis=tuple(i for i in range(3) if i != k)))
    first, last = (hit[0], hit[-1]) if hit.size else (0, ras.shape[k] - 1)
    count = min(n_slices, last - first + 1)
    return np.unique(np.linspace(first, last, count + 2)[1:-1].round().astype(int)
                     if last - first + 1 > count else np.arange(first, last + 1))
