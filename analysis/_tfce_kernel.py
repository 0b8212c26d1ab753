"""Compiled kernel of :mod:`cfx.analysis.tfce`: one union-find sweep per map, from the top level
down.

Voxels enter in decreasing level order; a component's score grows lazily: its size is constant
between two events (a voxel joining, two components merging), so at each event the levels since
the last one are credited at once from cumulative height weights. When a component is hooked
under another, it keeps the difference of the two running totals, so a voxel's score is the sum
along its path to the root (depth O(log n) with union by size).

A fresh process with an empty numba cache compiles the kernel before its first map, so it is
kept quick to compile: one signature for every call, plain loops over scratch arrays that the
caller allocates once per thread, no numpy function and no builtin that numba compiles as its
own function (``min``, ``int`` of a float: ``math.floor`` and an ``if`` instead), no
``parallel=True``. First map at 50^3 in a fresh process with an empty ``NUMBA_CACHE_DIR``, on the
shared 2-core CPU (load ~1.5): 1.2-1.3 s, of which ~0.45 s is numba compiling anything at all
(a 3-line function); the previous kernel took 4.4-6.8 s (under load ~5) and compiled twice in a
permutation run. With the cache written (``__pycache__`` beside this file, or the user's cache
folder when that is not writable), the first map takes 0.3-0.4 s. Inlining the helpers at the
numba IR level (``inline="always"``) compiled no faster and ran ~10 % slower.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

__all__ = ["tfce_maps", "kernel_ready"]

_GROUND = np.int32(0)  # level 0 typed like the levels (int32): a literal 0 compiles _flush twice


@numba.njit
def _root(parent, acc, v):
    """Root of ``v``, halving the path; a skipped node's frozen total moves to its child."""
    while parent[v] != v:
        p = parent[v]
        g = parent[p]
        if g != p:
            acc[v] += acc[p]
            parent[v] = g
        v = g
    return v


@numba.njit
def _flush(r, k, size, top, acc, weight, extent_power):
    """Credit component ``r`` with its size for the levels (k, top[r]]."""
    if top[r] > k:
        grown = math.sqrt(size[r]) if extent_power == 0.5 else float(size[r]) ** extent_power
        acc[r] += grown * (weight[top[r]] - weight[k])
        top[r] = k


@numba.njit(cache=True, nogil=True)
def _sweep(stat, thresholds, weight, extent_power, steps, two_sided, flat, parent, size, top,
           count, order, hooked, acc, out):
    """TFCE of one map; both tails in one sweep (a cluster never mixes signs).

    Parameters
    ----------
    stat : ndarray of float64, shape (n_x, n_y, n_z)
    thresholds : ndarray of float64, shape (n_steps,)
        Evenly spaced increasing heights ``h_1..h_n`` (all ``inf`` for a map without signal).
    weight : ndarray of float64, shape (n_steps + 1,)
        ``weight[k]`` = sum of ``h_j ** H`` for ``j <= k``; ``weight[0] = 0``.
    extent_power : float
        ``E``.
    steps : ndarray of int64, shape (n_neighbours,)
        Flat index steps to every neighbour (both directions) on the padded grid
        ``(n_x + 2, n_y + 2, n_z + 2)``, whose border of inactive voxels spares bounds checks.
    two_sided : bool
        Score negative voxels too (as minus the score of ``-stat``).
    flat, parent, size, top : ndarray of int32, shape (n_padded,)
        Scratch (any content in): signed level (+k / -k for the positive / negative tail),
        union-find parent, component size, lowest level credited so far.
    count : ndarray of int64, shape (n_steps + 1,)
        Scratch: voxels per level, then where each level's block starts.
    order, hooked : ndarray of int64, shape (n_padded,)
        Scratch: active voxels by decreasing level; voxels in the order they stopped being roots.
    acc : ndarray of float64, shape (n_padded,)
        Scratch: running scores.
    out : ndarray of float64, shape (n_x, n_y, n_z)
        The signed TFCE scores are written here.
    """
    nx, ny, nz = stat.shape
    py, pz = ny + 2, nz + 2
    n_steps = thresholds.size
    highest = thresholds[n_steps - 1]
    scale = n_steps / highest if highest < np.inf else 0.0
    # 1. signed level of each voxel (+k / -k: k thresholds reached by t / -t), counted per level
    for v in range(flat.size):
        flat[v] = 0
        parent[v] = v
        size[v] = 1
        top[v] = 0  # a voxel of the current level not entered yet credits nothing
        acc[v] = 0.0
    for k in range(n_steps + 1):
        count[k] = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                t = stat[x, y, z]
                if t > 0 or (two_sided and t < 0):
                    a = t if t > 0 else -t
                    k = math.floor(a * scale)  # a guess, corrected exactly
                    if k > n_steps:
                        k = n_steps
                    while k > 0 and thresholds[k - 1] > a:
                        k -= 1
                    while k < n_steps and thresholds[k] <= a:
                        k += 1
                    if k > 0:
                        flat[((x + 1) * py + y + 1) * pz + z + 1] = k if t > 0 else -k
                        count[k] += 1
    # 2. counting sort of the active voxels, highest level first
    running = 0
    for k in range(n_steps, 0, -1):
        n_level = count[k]
        count[k] = running
        running += n_level
    for v in range(flat.size):
        k = abs(flat[v])
        if k > 0:
            order[count[k]] = v
            count[k] += 1
    # 3. the sweep: each voxel joins the components of its neighbours at or above its level
    n_hooked = 0
    for i in range(running):
        v = order[i]
        signed = flat[v]
        k = abs(signed)
        top[v] = k
        rv = _root(parent, acc, v)  # v may already hang under a voxel of its own level
        for j in range(steps.size):
            u = v + steps[j]
            if (signed > 0 and flat[u] < k) or (signed < 0 and flat[u] > -k):
                continue
            ru = _root(parent, acc, u)
            if ru == rv:
                continue
            _flush(ru, k, size, top, acc, weight, extent_power)
            _flush(rv, k, size, top, acc, weight, extent_power)
            if size[ru] < size[rv]:
                ru, rv = rv, ru
            parent[rv] = ru  # rv keeps acc[rv] - acc[ru]: its own past, not ru's
            acc[rv] -= acc[ru]
            size[ru] += size[rv]
            hooked[n_hooked] = rv
            n_hooked += 1
            rv = ru
    for i in range(running):
        v = order[i]
        if parent[v] == v:
            _flush(v, _GROUND, size, top, acc, weight, extent_power)
    # 4. a voxel's score is the sum of acc up its path: parents were hooked later (or are roots),
    # so walking the hooks backwards completes every parent before its children
    for i in range(n_hooked - 1, -1, -1):
        v = hooked[i]
        acc[v] += acc[parent[v]]
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                u = ((x + 1) * py + y + 1) * pz + z + 1
                out[x, y, z] = acc[u] if flat[u] >= 0 else -acc[u]


def kernel_ready() -> bool:
    """Whether the kernel runs without compiling: compiled in this process, or in numba's cache.

    The cache is asked through numba's own index of ``_sweep`` (its entries for the current
    source), read without initialising numba's compiler (~0.4 s); if that internal API changes,
    the answer is True (compile, as before).
    """
    if _sweep.signatures:
        return True
    try:
        return bool(_sweep._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - any failure of the private probe means "just compile"
        return True


def tfce_maps(stats, thresholds, weights, extent_power, offsets, two_sided):
    """TFCE of each map of a batch, maps spread over threads.

    Parameters
    ----------
    stats : ndarray of float64, shape (n_maps, n_x, n_y, n_z)
    thresholds : ndarray of float64, shape (n_maps, n_steps)
        Per map, evenly spaced increasing heights (all ``inf`` for a map without signal).
    weights : ndarray of float64, shape (n_maps, n_steps + 1)
        Per map, ``weights[m, k]`` = sum of ``h_j ** H`` for ``j <= k``.
    extent_power : float
    offsets : ndarray of int64, shape (n_neighbours, 3)
        The full neighbourhood (both directions), steps of at most 1 per axis.
    two_sided : bool

    Returns
    -------
    ndarray of float64, shape (n_maps, n_x, n_y, n_z)

    Notes
    -----
    Plain Python threads (``numba.get_num_threads()`` of them) over the GIL-free kernel rather
    than a ``parallel=True`` one: the same speed, and a parallel wrapper alone took ~10 s to
    compile. Each thread allocates its scratch once and reuses it for its maps (fresh
    megabyte-sized arrays per map cost ~3 ms of page faults, a fifth of a map).
    """
    # one compiled signature only: C-contiguous float64 everywhere (a row of a column slice
    # would be typed as another layout and compiled a second time)
    stats, thresholds, weights = (np.ascontiguousarray(a, dtype=np.float64)
                                  for a in (stats, thresholds, weights))
    n_maps, nx, ny, nz = stats.shape
    n = (nx + 2) * (ny + 2) * (nz + 2)
    steps = np.ascontiguousarray(
        (offsets[:, 0] * (ny + 2) + offsets[:, 1]) * (nz + 2) + offsets[:, 2], dtype=np.int64
    )
    out = np.empty(stats.shape, np.float64)
    workers = max(1, min(numba.get_num_threads(), n_maps))

    def run(first):
        small = np.empty((4, n), np.int32)
        large = np.empty((2, n), np.int64)
        count = np.empty(thresholds.shape[1] + 1, np.int64)
        acc = np.empty(n, np.float64)
        for m in range(first, n_maps, workers):
            _sweep(stats[m], thresholds[m], weights[m], extent_power, steps, two_sided,
                   *small, count, *large, acc, out[m])

    if workers == 1:
        run(0)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, range(workers)))
    return out
