"""Seeded chest anatomy of one phantom subject: a label map and a noise-free HU image.

The anatomy is drawn in *normalised* coordinates: each array axis runs from -1 to +1 across the
field of view, so a chest fills any grid (16³ or 256×256×128) the same way and the voxel spacing
changes only the affine. Array axes follow RAS: index along axis 0 grows toward the patient's
right, axis 1 toward anterior, axis 2 toward superior; the patient's left lung (label 1) therefore
lies at low axis-0 indices (negative RAS x) and the right lung (label 2) at high ones.

Tissues, painted in order: air outside the body, subcutaneous fat, chest-wall muscle, the thoracic
cavity (pleura, mediastinal fat, heart, aorta, oesophagus, abdomen under the diaphragm with liver
and a stomach gas bubble), ribs, sternum and a spine with discs and a spinal canal, then the lungs
(about -850 HU, denser posteriorly) with a branching vessel tree, and the airway (trachea and main
bronchi, label 3). Everything is vectorised numpy; memory is a few arrays of one subject's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Anatomy", "build_anatomy", "LEFT_LUNG", "RIGHT_LUNG", "AIRWAY", "MIN_SIZE"]

LEFT_LUNG, RIGHT_LUNG, AIRWAY = 1, 2, 3
MIN_SIZE = 16  # voxels per axis below which lungs and airway no longer resolve

_AIR, _FAT, _MUSCLE, _PLEURA, _MEDIASTINAL_FAT = -1000.0, -100.0, 40.0, 20.0, -80.0
_BLOOD, _LIVER, _STOMACH, _OESOPHAGUS = 40.0, 55.0, 30.0, 35.0
_RIB, _STERNUM, _VERTEBRA, _CORTEX, _DISC, _CSF = 500.0, 400.0, 250.0, 650.0, 90.0, 15.0
_LUNG, _LUNG_GRADIENT, _VESSEL = -850.0, 25.0, 40.0
# Texture amplitude (HU per unit of the seeded texture field) by tissue.
_TEXTURE = {"air": 0.0, "fat": 8.0, "soft": 10.0, "bone": 60.0, "lung": 22.0}
_EXPONENT = 2.4  # superellipse exponent: a chest section is between an ellipse and a rectangle


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One subject's anatomy, independent of clinical attributes and of noise.

    Attributes
    ----------
    labels : ndarray of int16, shape (n_x, n_y, n_z)
        0 background, 1 left lung, 2 right lung, 3 airway (trachea and main bronchi).
    base : ndarray of float32, shape (n_x, n_y, n_z)
        Noise-free image in HU.
    texture : ndarray of float32, shape (n_x, n_y, n_z)
        Amplitude in HU of the seeded texture field at each voxel (set by tissue).
    """

    labels: np.ndarray
    base: np.ndarray
    texture: np.ndarray


@dataclass(frozen=True)
class _Grid:
    """Normalised coordinates as broadcastable float32 axes, and the voxel size in them."""

    x: np.ndarray  # (n_x, 1, 1)
    y: np.ndarray  # (1, n_y, 1)
    z: np.ndarray  # (1, 1, n_z)
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, shape: tuple[int, int, int]) -> _Grid:
        axes = [((np.arange(n) - (n - 1) / 2) / (n / 2)).astype(np.float32) for n in shape]
        return cls(axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :],
                   tuple(shape))

    @property
    def voxel(self) -> np.ndarray:
        """Voxel size along (x, y, z) in normalised units."""
        return 2.0 / np.asarray(self.shape, dtype=np.float64)

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Nearest voxel index of normalised points, shape (n, 3) -> int64 (n, 3)."""
        n = np.asarray(self.shape, dtype=np.float64)
        return np.rint(points * (n / 2) + (n - 1) / 2).astype(np.int64)


def _superellipse(u, v) -> np.ndarray:
    """``|u|^e + |v|^e``: <= 1 inside the superellipse with unit half-axes."""
    return np.abs(u) ** _EXPONENT + np.abs(v) ** _EXPONENT


def _segment_distance(grid: _Grid, start, end) -> np.ndarray:
    """Distance (normalised units) from every voxel to the segment ``start``-``end``."""
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    d = end - start
    dx, dy, dz = grid.x - start[0], grid.y - start[1], grid.z - start[2]
    t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / float(d @ d), 0.0, 1.0)
    return np.sqrt((dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2)


def _sample_params(rng: np.random.Generator) -> dict:
    """Subject-specific sizes and positions (normalised units)."""
    p = {
        "cx": rng.uniform(-0.05, 0.05), "cy": rng.uniform(-0.04, 0.04),
        "dz": rng.uniform(-0.06, 0.06),
        "body_a": rng.uniform(0.80, 0.93), "body_b": rng.uniform(0.56, 0.70),
        "fat": rng.uniform(0.03, 0.12), "muscle": rng.uniform(0.035, 0.06),
        "lung_top": rng.uniform(0.72, 0.88), "lung_base": rng.uniform(-0.62, -0.42),
        "dome": rng.uniform(0.12, 0.20),
        "heart_x": rng.uniform(-0.16, -0.08), "heart_y": rng.uniform(0.10, 0.18),
        "heart_a": rng.uniform(0.30, 0.38), "heart_b": rng.uniform(0.42, 0.52),
        "rib_pitch": rng.uniform(0.17, 0.20), "rib_slope": rng.uniform(0.25, 0.35),
        "rib_phase": rng.uniform(0.0, 1.0), "disc_pitch": rng.uniform(0.11, 0.13),
    }
    p["lung_top"] += p["dz"]
    p["lung_base"] += p["dz"]
    p["heart_z"] = p["lung_base"] + rng.uniform(0.25, 0.32)
    p["carina_z"] = p["lung_base"] + rng.uniform(0.50, 0.58) * (p["lung_top"] - p["lung_base"])
    return p


def _vessel_segments(rng: np.random.Generator, root: np.ndarray, targets: np.ndarray,
                     generations: int = 7) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A branching tree grown from a hilum into one lung.

    Each branch heads for a random point of the lung (``targets``, normalised coordinates,
    shape (n, 3)), blended with its parent's direction, so branches fan out and stay inside.
    Returns per generation ``(starts, ends, radii)`` with shapes (m, 3), (m, 3), (m,).
    """
    starts = np.repeat(root[None, :], 4, axis=0)
    directions = np.zeros_like(starts)
    length, radius = 0.32, 0.03
    segments = []
    for _ in range(generations):
        goal = targets[rng.integers(0, len(targets), len(starts))] - starts
        distance = np.linalg.norm(goal, axis=1, keepdims=True)
        heading = goal / np.maximum(distance, 1e-6) + directions
        heading += rng.normal(0.0, 0.2, heading.shape)
        heading /= np.linalg.norm(heading, axis=1, keepdims=True)
        step = np.minimum(length * rng.uniform(0.8, 1.2, (len(starts), 1)), 0.8 * distance)
        ends = starts + heading * step
        segments.append((starts, ends, np.full(len(starts), radius)))
        starts, directions = np.repeat(ends, 2, axis=0), np.repeat(heading, 2, axis=0)
        length, radius = length * 0.8, radius * 0.75
    return segments


def _vessel_fraction(grid: _Grid, lung: np.ndarray,
                     segments: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Fraction (0..1) of each lung voxel filled by vessel, with one voxel of partial volume."""
    out = np.zeros(lung.shape, np.float32)
    if not segments:
        return out
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1)
                for idx in (np.flatnonzero(lung.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))))
    offset = np.array([b.start for b in box])
    sub = lung[box]
    radius = np.zeros(sub.shape, np.float32)
    step = float(grid.voxel.min()) / 2
    for starts, ends, radii in segments:
        k = int(np.ceil(np.linalg.norm(ends - starts, axis=1).max() / step)) + 1
        t = np.linspace(0.0, 1.0, k)[None, :, None]
        points = (starts[:, None, :] + (ends - starts)[:, None, :] * t).reshape(-1, 3)
        idx = grid.to_index(points) - offset
        r = np.repeat(radii, k).astype(np.float32)
        inside = np.all((idx >= 0) & (idx < sub.shape), axis=1)
        idx, r = idx[inside], r[inside]
        keep = sub[idx[:, 0], idx[:, 1], idx[:, 2]]
        idx, r = idx[keep], r[keep]
        np.maximum.at(radius, (idx[:, 0], idx[:, 1], idx[:, 2]), r)
    if not radius.any():
        return out
    dist, nearest = ndimage.distance_transform_edt(radius == 0, sampling=grid.voxel,
                                                   return_indices=True)
    edge = float(grid.voxel.mean())
    fraction = np.clip((radius[tuple(nearest)] - dist) / edge + 0.5, 0.0, 1.0)
    out[box] = np.where(sub, fraction, 0.0)
    return out


def build_anatomy(shape: tuple[int, int, int], seed: int) -> Anatomy:
    """Draw one subject's chest anatomy.

    Parameters
    ----------
    shape : tuple of int
        ``(n_x, n_y, n_z)``, each at least :data:`MIN_SIZE`.
    seed : int
        Anatomy seed; the same seed and shape give the same anatomy.

    Returns
    -------
    Anatomy
    """
    rng = np.random.default_rng(seed)
    p = _sample_params(rng)
    g = _Grid.of(shape)
    xc, yc, z = g.x - np.float32(p["cx"]), g.y - np.float32(p["cy"]), g.z
    base = np.full(shape, _AIR, np.float32)
    texture = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int16)

    def paint(where, hu, tissue):
        where = np.broadcast_to(where, shape)
        base[where] = hu if np.isscalar(hu) else np.broadcast_to(hu, shape)[where]
        texture[where] = _TEXTURE[tissue]

    # 1. Body wall: fat, then muscle, then the thoracic cavity; slightly wider toward the shoulders.
    taper = 1.0 + 0.04 * z
    a, b = p["body_a"] * taper, p["body_b"]
    paint(_superellipse(xc / a, yc / b) <= 1, _FAT, "fat")
    a, b = a - p["fat"], b - p["fat"]
    paint(_superellipse(xc / a, yc / b) <= 1, _MUSCLE, "soft")
    a_c, b_c = a - p["muscle"], b - p["muscle"]
    cavity_r = _superellipse(xc / a_c, yc / b_c)
    cavity = cavity_r <= 1
    paint(cavity, _PLEURA, "soft")

    # 2. Diaphragm: a dome per hemithorax, the right one higher; abdomen below it.
    side = np.where(xc > 0, 1.0, -1.0).astype(np.float32)
    u = (side * xc - 0.5 * a_c) / (0.5 * a_c)
    v = yc / b_c
    diaphragm = (p["lung_base"] + 0.05 * (side > 0) + p["dome"] * (1 - u ** 2 - 0.5 * v ** 2)
                 + 0.08 * v)
    abdomen = cavity & (z < diaphragm)
    paint(abdomen, _STOMACH, "soft")
    paint(abdomen & (xc > -0.1), _LIVER, "soft")
    gas = ((xc + 0.3 * a_c) / 0.12) ** 2 + ((yc - 0.1) / 0.1) ** 2 \
        + ((z - diaphragm + 0.1) / 0.08) ** 2 <= 1
    paint(abdomen & gas & (xc < 0), _AIR, "air")
    thorax = cavity & ~abdomen
    del u, abdomen, gas

    # 3. Mediastinum: fat, heart, aorta, oesophagus.
    mediastinum_w = 0.07 + 0.07 * np.clip(v, 0, 1)
    paint(thorax & (np.abs(xc) < mediastinum_w + 0.06), _MEDIASTINAL_FAT, "fat")
    heart_r = (((xc - p["heart_x"]) / (p["heart_a"] * a_c)) ** 2
               + ((yc - p["heart_y"]) / (p["heart_b"] * b_c)) ** 2
               + ((z - p["heart_z"]) / 0.3) ** 2)
    paint(thorax & (heart_r <= 1), _BLOOD, "soft")
    r_v = 0.10
    y_v = -b_c + 0.6 * r_v
    aorta = (xc + 0.1 + 0.3 * r_v) ** 2 + (yc - y_v - 0.9 * r_v) ** 2 <= 0.06 ** 2
    ascending = ((xc - 0.04) ** 2 + (yc - 0.18) ** 2 <= 0.07 ** 2) & (z > p["heart_z"]) \
        & (z < p["carina_z"] + 0.1)
    paint(thorax & (aorta | ascending), _BLOOD, "soft")
    y_oes = y_v + r_v + 0.05
    paint(thorax & ((xc + 0.02) ** 2 + (yc - y_oes) ** 2 <= 0.035 ** 2), _OESOPHAGUS, "soft")

    # 4. Bones: ribs (oblique, so arcs in an axial slice), sternum, spine.
    radial = cavity_r ** (1 / _EXPONENT)
    posterior = np.abs(np.arctan2(v, xc / a_c) + np.pi / 2)
    phi = np.minimum(posterior, 2 * np.pi - posterior) / np.pi  # 0 at the spine, 1 at sternum
    rib_phase = np.mod((z + p["rib_slope"] * phi) / p["rib_pitch"] - p["rib_phase"], 1.0)
    paint((radial > 1.0) & (radial < 1.07) & (phi > 0.06) & (phi < 0.85) & (rib_phase < 0.35)
          & (z < p["lung_top"] + 0.05), _RIB, "bone")
    del radial, posterior, phi, rib_phase
    paint((np.abs(xc) < 0.06) & (yc > b_c) & (yc < b_c + 0.05) & (z > p["heart_z"] - 0.1)
          & (z < p["lung_top"] - 0.15), _STERNUM, "bone")
    spine_r = np.sqrt(xc ** 2 + (yc - y_v) ** 2)
    disc = np.mod((z - p["dz"]) / p["disc_pitch"], 1.0) < 0.22
    paint(spine_r <= r_v, _CORTEX, "bone")
    paint(spine_r <= r_v - 0.025, np.where(disc, _DISC, _VERTEBRA), "bone")
    y_canal = y_v - r_v - 0.05
    canal_r = np.sqrt(xc ** 2 + (yc - y_canal) ** 2)
    spinous = (np.abs(xc) < 0.022) & (yc < y_canal) & (yc > y_canal - 0.2)
    paint(~disc & ((canal_r <= 0.08) | spinous), _RIB, "bone")
    paint(canal_r <= 0.045, _CSF, "soft")
    del canal_r, spinous

    # 5. Lungs: the cavity above the diaphragm and below a domed apex, outside the mediastinum,
    #    heart, aorta and spine; denser posteriorly (gravity).
    inner = _superellipse(xc / (a_c - 0.03), yc / (b_c - 0.03)) <= 1
    lateral = (side * xc - 0.5 * a_c) / (0.5 * a_c)
    apex = p["lung_top"] - 0.5 * (lateral ** 2 + v ** 2)
    lung = (inner & thorax & (z < apex) & (side * xc > mediastinum_w) & (heart_r > 1.25)
            & ~aorta & (spine_r > r_v + 0.04))
    del inner, lateral, apex, heart_r, spine_r, aorta, thorax
    lung_hu = _LUNG - _LUNG_GRADIENT * v
    labels[lung & (side < 0)] = LEFT_LUNG
    labels[lung & (side > 0)] = RIGHT_LUNG

    # 6. Vessels from each hilum, blended into the lung with partial volume.
    y_trachea = y_oes + 0.035 + 0.06
    segments = []
    for s, label in ((-1, LEFT_LUNG), (1, RIGHT_LUNG)):
        hilum = np.array([p["cx"] + s * 0.2, p["cy"] + y_trachea, p["carina_z"] - 0.12])
        voxels = np.argwhere(labels == label)
        if len(voxels):
            voxels = voxels[rng.integers(0, len(voxels), 4000)]
            targets = (voxels - (np.asarray(shape) - 1) / 2) / (np.asarray(shape) / 2)
            segments += _vessel_segments(rng, hilum, targets)
    vessel = _vessel_fraction(g, lung, segments)
    paint(lung, lung_hu * (1 - vessel) + _VESSEL * vessel, "lung")
    del vessel, lung_hu

    # 7. Airway: trachea down to the carina, then the main bronchi (the right one steeper).
    min_r = 0.75 * float(g.voxel[:2].max())
    carina = np.array([p["cx"], p["cy"] + y_trachea, p["carina_z"]])
    tubes = [(np.array([p["cx"], p["cy"] + y_trachea, 1.1]), carina, max(0.055, min_r))]
    for s, reach, drop in ((-1, 0.17, 0.10), (1, 0.12, 0.16)):
        end = carina + np.array([s * reach, -0.04, -drop])
        tubes.append((carina, end, max(0.04, min_r)))
    for start, end, r in tubes:
        d = _segment_distance(g, start, end)
        paint((d <= r + 0.6 * min_r) & (labels == 0) & (base > _AIR), _MUSCLE, "soft")
        lumen = d <= r
        paint(lumen, _AIR, "air")
        labels[lumen] = AIRWAY
    return Anatomy(labels, base, texture)
