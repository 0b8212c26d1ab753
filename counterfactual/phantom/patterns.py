"""Named spatial patterns of the lungs where the phantom plants attribute effects.

A pattern is a boolean mask of lung voxels (labels 1 and 2) computed from the label map and the
voxel spacing alone, so a planted effect is deterministic given the label map.

Zones split the lungs' cranio-caudal extent (array axis 2, superior at high indices, as the
phantom's affine has it). With the lungs on ``n`` consecutive slices and a slice ``p`` slices above
the lowest one, the slice's centre sits at the fraction ``c = (p + 1/2) / n`` of the extent; a zone
``[lo, hi)`` holds the slices with ``lo <= c < hi``. For thirds this is the rule of
``analysis.zones`` (a centre never falls on a third's boundary); a centre exactly halfway belongs
to the upper half.

``subpleural`` is the lung voxels within :data:`SUBPLEURAL_MM` of the lung surface (Euclidean
distance in mm to the nearest voxel outside lungs and airway, so airway walls are not pleura;
at least one voxel deep on coarse grids); ``subpleural-<zone>`` is that band inside a zone.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import ndimage

__all__ = ["ZONES", "PATTERNS", "SUBPLEURAL_MM", "LungPatterns"]

ZONES: dict[str, tuple[Fraction, Fraction]] = {
    "lung": (Fraction(0), Fraction(1)),
    "lower-third": (Fraction(0), Fraction(1, 3)),
    "middle-third": (Fraction(1, 3), Fraction(2, 3)),
    "upper-third": (Fraction(2, 3), Fraction(1)),
    "lower-two-thirds": (Fraction(0), Fraction(2, 3)),
    "upper-two-thirds": (Fraction(1, 3), Fraction(1)),
    "lower-half": (Fraction(0), Fraction(1, 2)),
    "upper-half": (Fraction(1, 2), Fraction(1)),
}
PATTERNS: tuple[str, ...] = (*ZONES, "subpleural",
                             *(f"subpleural-{zone}" for zone in ZONES if zone != "lung"))
SUBPLEURAL_MM = 10.0


class LungPatterns:
    """The pattern masks of one label map, computed on first use and kept.

    Parameters
    ----------
    labels : ndarray of int, shape (n_x, n_y, n_z)
        Phantom label map (1 left lung, 2 right lung, 3 airway).
    spacing : tuple of float
        Voxel size ``(x, y, z)`` in mm.
    """

    def __init__(self, labels: np.ndarray, spacing: tuple[float, float, float]):
        self._labels = labels
        self._spacing = tuple(float(s) for s in spacing)
        self._masks: dict[str, np.ndarray] = {}

    @property
    def lung(self) -> np.ndarray:
        """Boolean lung mask (labels 1 and 2), shape (n_x, n_y, n_z)."""
        return self.mask("lung")

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of pattern ``name`` (one of :data:`PATTERNS`), shape (n_x, n_y, n_z)."""
        if name not in self._masks:
            self._masks[name] = self._compute(name)
        return self._masks[name]

    def _compute(self, name: str) -> np.ndarray:
        if name == "lung":
            return np.isin(self._labels, (1, 2))
        if name == "subpleural":
            return self.lung & self._band()
        if name.startswith("subpleural-"):
            return self.mask("subpleural") & self.mask(name.removeprefix("subpleural-"))
        return self.lung & self._zone_slices(*ZONES[name])[None, None, :]

    def _zone_slices(self, lo: Fraction, hi: Fraction) -> np.ndarray:
        """Which axial slices lie in the zone ``[lo, hi)`` of the lungs' extent, shape (n_z,)."""
        occupied = np.flatnonzero(self.lung.any(axis=(0, 1)))
        inside = np.zeros(self._labels.shape[2], bool)
        if occupied.size == 0:
            return inside
        first, n = int(occupied[0]), int(occupied[-1] - occupied[0] + 1)
        for p in range(n):
            centre = Fraction(2 * p + 1, 2 * n)
            inside[first + p] = lo <= centre and (centre < hi or hi == 1)
        return inside

    def _band(self) -> np.ndarray:
        depth = ndimage.distance_transform_edt(self._labels > 0, sampling=self._spacing)
        return depth <= max(SUBPLEURAL_MM, min(self._spacing))
