"""Region metrics of a CT in HU, lung zones, and the tidy table of both.

Metrics (``v`` = the HU values of the region's voxels, ``N`` their count):

=========== ====== =========================================================================
metric      unit   definition
=========== ====== =========================================================================
mean        HU     arithmetic mean of ``v`` (accumulated in float64)
median      HU     50th percentile of ``v`` (linear interpolation, as ``numpy.percentile``)
sd          HU     population standard deviation of ``v`` (``ddof=0``: a description of the
                   region, not an estimate)
pd15        HU     15th percentile density: 15th percentile of ``v`` (linear interpolation)
laa950      %      %LAA-950: ``100 * #(v < -950) / N`` (strictly below -950 HU)
band900_750 %      ``100 * #(-900 <= v <= -750) / N`` (both ends included)
n_voxels    voxels ``N``
volume      mL     ``N`` times the voxel volume (product of the affine's column norms, mm^3)
                   divided by 1000
=========== ====== =========================================================================

Each region (and each lung zone) is extracted from the volume once and every metric is computed
from that one extraction.

Lung zones
----------
Upper, middle and lower thirds of a region along the cranio-caudal axis, which is read from the
volume's 4x4 RAS affine, never assumed: superior is +z in RAS, the array axis used is the one
whose direction is closest to RAS z, and the superior end is the end where that axis' RAS z grows.
Flipped axes (z decreasing with the index) and permuted axes (the cranio-caudal axis stored first
or second) are handled the same way as the usual ``(x, y, z)`` order.

Rule for the thirds: let the region occupy ``n`` consecutive slices of the cranio-caudal axis,
counted from the most superior slice that holds a region voxel (position ``p = 0``) to the most
inferior one (``p = n - 1``); the region's extent runs from the superior face of the first slice to
the inferior face of the last, ``n`` slice thicknesses. A slice belongs to the third that holds its
centre ``p + 1/2``: upper when ``p + 1/2 < n / 3``, lower when ``(n - 1 - p) + 1/2 < n / 3``,
middle otherwise. In integers: upper when ``6 p + 3 < 2 n``, lower when
``6 (n - 1 - p) + 3 < 2 n``. A centre never falls exactly on a boundary (``6 p + 3`` is odd,
``2 n`` even), the rule reads the same from either end, and the zones partition the region. With
``n = 9`` slices each zone gets 3; with ``n = 10`` the split is 3 / 4 / 3; with ``n = 11`` it is
4 / 3 / 4. On an oblique grid (gantry tilt) the zones are slabs of that array axis, not planes of
constant RAS z.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "TABLE_COLUMNS",
    "ZONES",
    "CranioCaudal",
    "RegionItem",
    "craniocaudal_axis",
    "region_metrics",
    "region_table",
    "zone_masks",
]

METRICS: dict[str, str] = {
    "mean": "HU",
    "median": "HU",
    "sd": "HU",
    "pd15": "HU",
    "laa950": "%",
    "band900_750": "%",
    "n_voxels": "voxels",
    "volume": "mL",
}
TABLE_COLUMNS = ("subject", "value", "seed", "region", "metric", "estimate", "unit")
ZONES = ("upper", "middle", "lower")

# The chosen array axis must be within 45 degrees of RAS z, or no axis is cranio-caudal.
_MIN_COSINE = np.sqrt(0.5)


@dataclass(frozen=True, eq=False)
class RegionItem:
    """One generated (or real) volume and the keys it is filed under.

    Attributes
    ----------
    subject : hashable
        Subject id.
    value : hashable
        Attribute value the volume was made with (e.g. ``"yes"``), or any label for real CTs.
    seed : int
        Noise seed.
    ct : ndarray of float, shape (n_x, n_y, n_z)
        Intensities in HU.
    labels : ndarray of int, shape (n_x, n_y, n_z)
        Label map on the same grid (0 background).
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS millimetres.
    """

    subject: Hashable
    value: Hashable
    seed: int
    ct: np.ndarray
    labels: np.ndarray
    affine: np.ndarray


def region_metrics(ct: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """All :data:`METRICS` of one region, from one extraction of its voxels.

    Parameters
    ----------
    ct : ndarray of float, shape (n_x, n_y, n_z)
        Intensities in HU.
    mask : ndarray of bool, shape (n_x, n_y, n_z)
        The region.
    spacing : sequence of 3 float
        Voxel size along the array axes, in mm.

    Returns
    -------
    dict of str to float
        Metric name -> value, in the units of :data:`METRICS`.

    Raises
    ------
    ValueError
        If the shapes differ, ``mask`` is not boolean or is empty, ``spacing`` is not three
        positive numbers, or the region holds non-finite HU.
    """
    ct = np.asarray(ct)
    mask = np.asarray(mask)
    if ct.ndim != 3 or not np.issubdtype(ct.dtype, np.number):
        raise ValueError(f"ct: expected a 3-D numeric array in HU, got dtype {ct.dtype} with "
                         f"shape {ct.shape}")
    if mask.dtype != bool or mask.shape != ct.shape:
        raise ValueError(f"mask: expected a boolean array of the ct's shape {ct.shape}, got dtype "
                         f"{mask.dtype} with shape {mask.shape}")
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (3,) or not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise ValueError(f"spacing: expected three positive voxel sizes in mm, got "
                         f"{spacing.tolist()}")
    if not mask.any():
        raise ValueError("mask: the region is empty (0 voxels); its metrics are undefined")
    metrics = _metrics(ct[mask], float(np.prod(spacing)))
    _check_finite(metrics, "ct")
    return metrics


def region_table(
    items: Iterable[RegionItem],
    regions: Mapping[str, Sequence[int]],
    zones: Sequence[str] = (),
) -> pd.DataFrame:
    """Tidy table of region metrics: one row per subject x value x seed x region x metric.

    Items are consumed one at a time, so a generator that reads each volume from disk keeps
    memory at one volume.

    Parameters
    ----------
    items : iterable of RegionItem
        The volumes with their keys; every ``(subject, value, seed)`` must be distinct.
    regions : mapping of str to sequence of int
        Region name -> the labels it unites, e.g. ``{"lung": (1, 2), "airway": (3,)}``.
    zones : sequence of str
        Names of regions (keys of ``regions``) to split into upper, middle and lower thirds
        along the cranio-caudal axis; they appear as ``"<region>-upper"`` etc.

    Returns
    -------
    DataFrame
        Columns :data:`TABLE_COLUMNS`: ``subject``, ``value``, ``seed``, ``region``, ``metric``,
        ``estimate`` (float64, in ``unit``), ``unit``. Rows in item order, then region order
        (each region followed by its zones), then :data:`METRICS` order.

    Raises
    ------
    ValueError
        If ``regions`` is empty or names no label, ``zones`` names an unknown region, an item's
        arrays disagree in shape or its affine is invalid, a key repeats, a region or zone is
        empty in an item, or a region holds non-finite HU.
    """
    regions = _check_regions(regions)
    zones = list(zones)
    unknown = [z for z in zones if z not in regions]
    if unknown:
        raise ValueError(f"zones: {unknown} are not among the regions {list(regions)}")
    rows: list[tuple] = []
    seen: set = set()
    for item in items:
        key = (item.subject, item.value, item.seed)
        where = f"item (subject {item.subject!r}, value {item.value!r}, seed {item.seed!r})"
        if key in seen:
            raise ValueError(f"{where}: appears twice; each subject x value x seed must be unique")
        seen.add(key)
        for region, metrics in _item_metrics(item, regions, zones, where):
            rows += [(*key, region, metric, estimate, METRICS[metric])
                     for metric, estimate in metrics.items()]
    table = pd.DataFrame.from_records(rows, columns=list(TABLE_COLUMNS))
    table["estimate"] = table["estimate"].astype(np.float64)
    return table


@dataclass(frozen=True)
class CranioCaudal:
    """Which array axis runs cranio-caudally and which way is superior.

    Attributes
    ----------
    axis : int
        Array axis (0, 1 or 2) closest to RAS z.
    superior_sign : int
        +1 when RAS z grows with the index along ``axis`` (superior at the high end), -1 when it
        shrinks (superior at index 0).
    cosine : float
        Absolute cosine between that axis and RAS z (1 for an axis-aligned grid).
    """

    axis: int
    superior_sign: int
    cosine: float


def craniocaudal_axis(affine: np.ndarray) -> CranioCaudal:
    """Find the array axis that runs cranio-caudally in a RAS affine.

    Parameters
    ----------
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS millimetres, as nibabel gives it.

    Returns
    -------
    CranioCaudal

    Raises
    ------
    ValueError
        If ``affine`` is not a finite 4x4 matrix with an invertible 3x3 part, or if no array axis
        is within 45 degrees of RAS z.
    """
    affine = _check_affine(affine)
    return _craniocaudal(affine)


def zone_masks(mask: np.ndarray, affine: np.ndarray) -> dict[str, np.ndarray]:
    """Split a region into its upper, middle and lower thirds (rule in the module docstring).

    Parameters
    ----------
    mask : ndarray of bool, shape (n_x, n_y, n_z)
        The region.
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS millimetres of the grid ``mask`` lives on.

    Returns
    -------
    dict of str to ndarray of bool, shape (n_x, n_y, n_z)
        ``{"upper": ..., "middle": ..., "lower": ...}``; the three masks are disjoint and their
        union is ``mask``. A region of one or two slices has empty zones (one slice: only
        ``middle``; two: ``upper`` and ``lower``).

    Raises
    ------
    ValueError
        If ``mask`` is not a 3-D boolean array, is empty, or ``affine`` is invalid (see
        :func:`craniocaudal_axis`).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.dtype != bool:
        raise ValueError(f"mask: expected a 3-D boolean array, got dtype {mask.dtype} with shape "
                         f"{mask.shape}")
    direction = craniocaudal_axis(affine)
    if not mask.any():
        raise ValueError("mask: the region is empty (0 voxels), it has no zones")
    return _zone_masks(mask, direction)


def _check_regions(regions: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    if not regions:
        raise ValueError("regions: expected at least one region name -> labels entry, got none")
    checked = {}
    for name, members in regions.items():
        members = tuple(int(m) for m in np.atleast_1d(members))
        if not members or 0 in members:
            raise ValueError(f"regions: {name!r} has labels {list(members)}; expected one or more "
                             f"non-zero labels")
        checked[str(name)] = members
    return checked


def _item_metrics(item: RegionItem, regions: dict[str, tuple[int, ...]], zones: list[str],
                  where: str):
    ct, labels = np.asarray(item.ct), np.asarray(item.labels)
    if ct.ndim != 3 or labels.shape != ct.shape:
        raise ValueError(f"{where}: ct shape {ct.shape} and labels shape {labels.shape} must be "
                         f"the same 3-D grid")
    try:
        affine = _check_affine(item.affine)
        direction = _craniocaudal(affine) if zones else None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    voxel_mm3 = float(np.prod(np.linalg.norm(affine[:3, :3], axis=0)))
    for region, members in regions.items():
        mask = np.isin(labels, members)
        if not mask.any():
            raise ValueError(f"{where}: region {region!r} is empty (no voxel has labels "
                             f"{list(members)})")
        yield region, _checked(ct[mask], voxel_mm3, where, region)
        if region in zones:
            for zone, zone_mask in _zone_masks(mask, direction).items():
                name = f"{region}-{zone}"
                if not zone_mask.any():
                    raise ValueError(f"{where}: zone {name!r} is empty (no region voxel lies in "
                                     f"that third of the region's cranio-caudal extent)")
                yield name, _checked(ct[zone_mask], voxel_mm3, where, name)


def _checked(values: np.ndarray, voxel_mm3: float, where: str, region: str) -> dict[str, float]:
    metrics = _metrics(values, voxel_mm3)
    _check_finite(metrics, f"{where}: region {region!r}")
    return metrics


def _check_finite(metrics: dict[str, float], where: str) -> None:
    if not np.isfinite(metrics["mean"]):
        raise ValueError(f"{where}: the region holds non-finite HU (NaN or inf); expected finite "
                         f"intensities")


def _metrics(values: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    v = values.astype(np.float64, copy=False)
    n = v.size
    mean = float(v.mean())
    with np.errstate(invalid="ignore"):  # non-finite input is reported by the caller
        pd15, median = np.percentile(v, [15.0, 50.0])
        sd = float(np.sqrt(np.mean((v - mean) ** 2)))
    return {
        "mean": mean,
        "median": float(median),
        "sd": sd,
        "pd15": float(pd15),
        "laa950": 100.0 * np.count_nonzero(v < -950.0) / n,
        "band900_750": 100.0 * np.count_nonzero((v >= -900.0) & (v <= -750.0)) / n,
        "n_voxels": float(n),
        "volume": n * voxel_mm3 / 1000.0,
    }


def _check_affine(affine) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"affine: expected a finite 4x4 matrix, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine: its 3x3 part is singular (a zero or repeated axis); expected "
                         "the voxel-to-RAS matrix of the volume")
    return affine


def _craniocaudal(affine: np.ndarray) -> CranioCaudal:
    columns = affine[:3, :3]
    cosines = columns[2] / np.linalg.norm(columns, axis=0)
    axis = int(np.argmax(np.abs(cosines)))
    if abs(cosines[axis]) < _MIN_COSINE:
        raise ValueError(
            f"affine: no array axis is within 45 degrees of the cranio-caudal (RAS z) axis "
            f"(cosines {np.round(cosines, 3).tolist()}); lung zones need an axial-ish grid"
        )
    return CranioCaudal(axis, 1 if cosines[axis] > 0 else -1, float(abs(cosines[axis])))


def _zone_masks(mask: np.ndarray, direction: CranioCaudal) -> dict[str, np.ndarray]:
    other = tuple(a for a in range(3) if a != direction.axis)
    occupied = np.flatnonzero(mask.any(axis=other))
    first, last = int(occupied[0]), int(occupied[-1])
    n = last - first + 1
    index = np.arange(mask.shape[direction.axis])
    position = last - index if direction.superior_sign > 0 else index - first
    in_extent = (index >= first) & (index <= last)
    upper = in_extent & (6 * position + 3 < 2 * n)
    lower = in_extent & (6 * (n - 1 - position) + 3 < 2 * n)
    slabs = {"upper": upper, "middle": in_extent & ~upper & ~lower, "lower": lower}
    shape = [1, 1, 1]
    shape[direction.axis] = -1
    return {name: mask & slab.reshape(shape) for name, slab in slabs.items()}
