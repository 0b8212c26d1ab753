"""Rendering a phantom CT: anatomy + seeded texture and noise + planted effects, in HU.

The texture and noise depend on the seed and the anatomy only, never on clinical attributes, and
the effect map is added last, so two renders with one seed differ by exactly the difference of
their effect maps (up to float32 rounding), and are identical wherever both maps are zero.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cfx.counterfactual.phantom.anatomy import Anatomy

__all__ = ["noise_field", "render", "NOISE_SD_HU"]

NOISE_SD_HU = (15.0, 25.0)  # range of the per-render noise standard deviation
_TEXTURE_SIGMA = 1.2  # voxels: parenchymal / tissue texture grain
_NOISE_SIGMA = 0.6  # voxels: the slight correlation of reconstructed CT noise


def _unit_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation, float32."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    field /= np.float32(field.std())
    return field


def noise_field(anatomy: Anatomy, seed: int) -> np.ndarray:
    """Texture plus noise for one seed.

    Parameters
    ----------
    anatomy : Anatomy
        Gives the shape and the texture amplitude per voxel.
    seed : int
        Noise seed.

    Returns
    -------
    ndarray of float32, shape (n_x, n_y, n_z)
        HU to add to ``anatomy.base``: texture (amplitude by tissue) and noise with a standard
        deviation drawn from :data:`NOISE_SD_HU`.
    """
    rng = np.random.default_rng(seed)
    sd = np.float32(rng.uniform(*NOISE_SD_HU))
    shape = anatomy.base.shape
    out = _unit_field(rng, shape, _TEXTURE_SIGMA)
    out *= anatomy.texture
    out += sd * _unit_field(rng, shape, _NOISE_SIGMA)
    return out


def render(anatomy: Anatomy, effect_map: np.ndarray, seed: int) -> np.ndarray:
    """One CT of ``anatomy`` with ``effect_map`` planted and the texture/noise of ``seed``.

    Parameters
    ----------
    anatomy : Anatomy
    effect_map : ndarray of float32, shape (n_x, n_y, n_z)
        HU added on top (see :meth:`Effects.effect_map`).
    seed : int

    Returns
    -------
    ndarray of float32, shape (n_x, n_y, n_z)
        Unrounded HU.
    """
    out = noise_field(anatomy, seed)
    out += anatomy.base
    out += effect_map
    return out
