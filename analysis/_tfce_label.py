"""TFCE by labelling at every threshold (scipy), for the first small call of a cold process.

The statistic of :mod:`cfx.analysis.tfce`, computed as nilearn and fslmaths do: at each threshold
``h_j`` the clusters of ``{t >= h_j}`` are labelled with :func:`scipy.ndimage.label` and every
voxel of a cluster of ``size`` voxels gains ``size ** E * h_j ** H``. It needs no compiled code,
so where the numba kernel of :mod:`cfx.analysis._tfce_kernel` is neither compiled in this process
nor in its cache (the first call after an install, or a read-only install), one 50^3 map takes
~0.3 s here instead of ~1.3 s of compiling. It agrees with the kernel to ~1e-15 relative
(summation order).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["tfce_maps_labelled"]


def tfce_maps_labelled(stats, thresholds, extent_power, height_power, connectivity, two_sided):
    """TFCE of each map of a batch by labelling the clusters above every threshold.

    Parameters
    ----------
    stats : ndarray of float64, shape (n_maps, n_x, n_y, n_z)
    thresholds : ndarray of float64, shape (n_maps, n_steps)
        Per map, increasing heights (all ``inf`` for a map without signal).
    extent_power, height_power : float
        ``E`` and ``H``.
    connectivity : {6, 18, 26}
    two_sided : bool
        Score negative voxels too (as minus the score of ``-stats``).

    Returns
    -------
    ndarray of float64, shape (n_maps, n_x, n_y, n_z)
    """
    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    out = np.zeros(stats.shape)
    for m, stat in enumerate(stats):
        for sign in (1.0, -1.0) if two_sided else (1.0,):
            signed = sign * stat
            for height in thresholds[m]:
                above = signed >= height
                if not above.any():  # inf, or above the map's top: no higher cluster either
                    break
                labels, _ = ndimage.label(above, structure)
                sizes = np.bincount(labels.ravel()).astype(np.float64)
                gain = sizes ** extent_power * height ** height_power
                gain[0] = 0.0
                out[m] += sign * gain[labels]
    return out
