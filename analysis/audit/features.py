"""Lung HU features of one CT: what the attribute predictor of the effectiveness check reads.

The features are the intensity metrics of :mod:`cfx.analysis.regions` (``mean``, ``median``, ``sd``,
``pd15`` in HU; ``laa950``, ``band900_750`` in %) of the lung and of its upper, middle and lower
thirds: 6 metrics x 4 regions = 24 numbers. Size metrics (voxel count, volume) are left out on
purpose: a counterfactual keeps its mask, so they cannot carry an intervention.
"""

from __future__ import annotations

import numpy as np

from cfx.analysis.regions import ZONES, region_metrics, zone_masks

__all__ = ["FEATURE_METRICS", "feature_names", "lung_features"]

FEATURE_METRICS = ("mean", "median", "sd", "pd15", "laa950", "band900_750")
_REGIONS = ("lung", *(f"lung-{zone}" for zone in ZONES))


def feature_names() -> list[str]:
    """Names of :func:`lung_features`' values, in order: ``"lung:mean"``, ...,
    ``"lung-lower:band900_750"``."""
    return [f"{region}:{metric}" for region in _REGIONS for metric in FEATURE_METRICS]


def lung_features(ct: np.ndarray, lung: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The :func:`feature_names` features of one CT.

    Parameters
    ----------
    ct : ndarray of float, shape (n_x, n_y, n_z)
        Intensities in HU.
    lung : ndarray of bool, shape (n_x, n_y, n_z)
        The lungs.
    affine : ndarray of float, shape (4, 4)
        Voxel index -> RAS mm (finds the cranio-caudal axis and the voxel size).

    Returns
    -------
    ndarray of float64, shape (24,)
        In the units of each metric (HU or %).

    Raises
    ------
    ValueError
        As :func:`cfx.analysis.regions.region_metrics` and :func:`cfx.analysis.regions.zone_masks`,
        and when the lung spans fewer than three slices (a zone would be empty).
    """
    affine = np.asarray(affine, dtype=np.float64)
    zones = zone_masks(lung, affine)
    empty = [zone for zone, mask in zones.items() if not mask.any()]
    if empty:
        raise ValueError(f"lung: zones {empty} are empty; the lung must span at least three "
                         "cranio-caudal slices")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    values = []
    for mask in (lung, *(zones[zone] for zone in ZONES)):
        metrics = region_metrics(ct, mask, spacing)
        values += [metrics[name] for name in FEATURE_METRICS]
    return np.asarray(values, dtype=np.float64)
