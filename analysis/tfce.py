"""Threshold-free cluster enhancement (TFCE) of 3-D statistic maps, many maps at a time.

The statistic is nilearn's ``calculate_tfce`` (itself following fslmaths): for a map ``t`` with
``n_steps`` thresholds ``h_j = j * max|t| / n_steps`` (``j = 1..n_steps``, from
``numpy.linspace(0, max|t|, n_steps + 1)``), a voxel ``v`` with ``t(v) > 0`` receives

    TFCE(v) = sum over h_j <= t(v) of  size_j(v) ** E * h_j ** H

where ``size_j(v)`` is the number of voxels in the connected component of ``{t >= h_j}`` holding
``v`` (the step ``dh`` is *not* multiplied in, as in fslmaths and nilearn). Negative voxels get
minus the same quantity computed on ``-t``. One-sided (``two_sided=False``): thresholds run up to
``max t`` and only positive voxels are enhanced. The values equal nilearn's up to floating-point
summation order (relative differences ~1e-12).

Instead of labelling the whole volume at every threshold (``n_steps`` calls of
``scipy.ndimage.label`` per sign, what nilearn does), one union-find sweep per map adds voxels
from the top level down, both signs at once (a cluster never mixes signs), crediting each
component lazily between events (see :mod:`cfx.analysis._tfce_kernel`, compiled with numba); a batch
of maps is spread over threads. Measured on a 2-core CPU at 50^3
(``benchmarks/tfce_vs_nilearn.py``): nilearn ~240-310 ms per map, one map ~15 ms, a batch of 4
~11.5 ms per map (~27x).

First call: numba compiles the kernel once and caches it beside the module (or, where that folder
is not writable, in the user's cache folder, ``~/.cache/numba``), so only the first process after
an install pays ~1.0-1.5 s on 2 CPU cores (~0.4 s of it numba initialising its compiler, which a
cached kernel pays too); later processes load it in ~0.3 s. A call that would have to compile
and is small (at most ``3e7`` voxel-thresholds: one 50^3 map) labels the clusters at every
threshold with scipy instead (:mod:`cfx.analysis._tfce_label`, nilearn's method, ~0.3 s for that
map), so one map in a cold process, or wherever the cache cannot be written, does not wait for
the compiler; larger calls compile. Both routes agree to ~1e-15 relative.
``benchmarks/tfce_cold_start.py`` measures where a fresh process spends its time.
"""

from __future__ import annotations

import numpy as np

from cfx.analysis._tfce_kernel import kernel_ready, tfce_maps
from cfx.analysis._tfce_label import tfce_maps_labelled

__all__ = ["tfce", "CONNECTIVITIES"]

CONNECTIVITIES = (6, 18, 26)
"""Allowed neighbourhoods: faces (6), faces and edges (18), faces, edges and corners (26)."""

_LABEL_BUDGET = 3e7
"""Voxels x thresholds x signs scipy labels in ~0.5 s on 2 cores, against ~1.0-1.5 s for numba to
compile the kernel: smaller calls with a kernel not yet compiled nor cached are labelled."""


def tfce(
    stat_maps: np.ndarray,
    *,
    extent_power: float = 0.5,
    height_power: float = 2.0,
    n_steps: int = 100,
    connectivity: int = 6,
    two_sided: bool = True,
) -> np.ndarray:
    """Threshold-free cluster enhancement of one or many 3-D statistic maps.

    Parameters
    ----------
    stat_maps : ndarray of float, shape (n_x, n_y, n_z) or (n_maps, n_x, n_y, n_z)
        Statistic maps (e.g. t-maps). Voxels outside the analysed region should hold 0.
        Must be finite.
    extent_power : float, default 0.5
        ``E``, exponent of the cluster size (in voxels).
    height_power : float, default 2.0
        ``H``, exponent of the threshold height.
    n_steps : int, default 100
        Number of thresholds between 0 and the map's maximum (nilearn and fslmaths use 100).
    connectivity : {6, 18, 26}, default 6
        Voxel neighbourhood defining clusters (6: shared face, as nilearn's TFCE).
    two_sided : bool, default True
        Enhance positive and negative clusters (thresholds up to ``max|t|``); otherwise only
        positive ones (thresholds up to ``max t``).

    Returns
    -------
    ndarray of float64, same shape as ``stat_maps``
        TFCE scores, signed like the statistic; 0 where the statistic is 0 (or negative, when
        one-sided).

    Raises
    ------
    ValueError
        If ``stat_maps`` is not 3-D or 4-D or holds non-finite values, or a parameter is out of
        range.
    """
    maps = np.asarray(stat_maps, dtype=np.float64)
    _check_tfce_inputs(maps, extent_power, height_power, n_steps, connectivity)
    batch = maps[np.newaxis] if maps.ndim == 3 else maps
    scores = _tfce_batch(
        batch, extent_power, height_power, int(n_steps), int(connectivity), bool(two_sided)
    )
    return scores[0] if maps.ndim == 3 else scores


def _check_tfce_inputs(maps, extent_power, height_power, n_steps, connectivity) -> None:
    if maps.ndim not in (3, 4):
        raise ValueError(
            f"stat_maps: got an array with shape {maps.shape}; expected (n_x, n_y, n_z) or "
            "(n_maps, n_x, n_y, n_z)."
        )
    if not np.all(np.isfinite(maps)):
        raise ValueError("stat_maps: contains NaN or infinite values; TFCE needs finite maps.")
    if not extent_power > 0 or not height_power > 0:
        raise ValueError(
            f"extent_power, height_power: got {extent_power}, {height_power}; both must be > 0."
        )
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps: got {n_steps!r}; expected an integer >= 1.")
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity: got {connectivity!r}; expected one of {CONNECTIVITIES}.")


def _tfce_batch(maps, extent_power, height_power, n_steps, connectivity, two_sided):
    """TFCE of ``maps`` (n_maps, X, Y, Z) float64; returns the same shape, float64."""
    top = np.abs(maps).max(axis=(1, 2, 3)) if two_sided else maps.max(axis=(1, 2, 3))
    top = np.maximum(top, 0.0)
    # exactly nilearn's thresholds: linspace(0, max, n_steps + 1)[1:]; none for an empty map
    thresholds = np.linspace(np.zeros_like(top), top, n_steps + 1, axis=1)[:, 1:]
    thresholds[top <= 0] = np.inf
    if maps.size * n_steps * (1 + two_sided) <= _LABEL_BUDGET and not kernel_ready():
        return tfce_maps_labelled(maps, thresholds, extent_power, height_power, connectivity,
                                  two_sided)
    half = np.array(_neighbour_offsets(connectivity), dtype=np.int64)
    offsets = np.concatenate([half, -half])
    weights = np.zeros((len(maps), n_steps + 1))
    weights[:, 1:] = np.cumsum(np.where(top[:, None] > 0, thresholds, 0.0) ** height_power, axis=1)
    return tfce_maps(np.ascontiguousarray(maps), thresholds, weights, float(extent_power),
                     offsets, two_sided)


def _neighbour_offsets(connectivity):
    """Half of the neighbourhood: offsets (dx, dy, dz) whose first non-zero entry is +1."""
    offsets = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                step = (dx, dy, dz)
                n_nonzero = sum(abs(s) for s in step)
                first = next((s for s in step if s), 0)
                if first == 1 and n_nonzero <= {6: 1, 18: 2, 26: 3}[connectivity]:
                    offsets.append(step)
    return offsets
