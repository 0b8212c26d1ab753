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
``scipy.ndimage.label`` per sign, what nilearn does), the component tree over the integer
threshold levels is built once with a union-find that processes, level by level from the top,
only the voxels and neighbour edges that enter at that level. The score of a voxel is then the
sum, over the tree nodes on its path to the root, of ``size ** E`` times the sum of ``h_j ** H``
over the levels that node spans. Measured on a 2-core CPU at 50^3: ~46 ms per map against ~285 ms
for nilearn (~6x); the cost is numpy's per-element work, so stacking several maps in one call
gives the same result but no speed-up.

Measured and not faster (same machine, loaded; nilearn 630 ms, this module 93 ms per map in that
run): a batch of 4 maps in one pass (128 ms per map: larger arrays, worse cache use), two threads
over maps (no gain on 2 busy cores), ``scipy.sparse.csgraph.connected_components`` per level
(~0.8 ms per call, x 100 levels), ``scipy.ndimage.label`` for the crowded low levels (~6 ms per
call). Most voxels enter at the lowest levels (80 % below level 30 for null t-maps), where the
union-find does most of its work.
"""

from __future__ import annotations

import numpy as np

__all__ = ["tfce", "CONNECTIVITIES"]

CONNECTIVITIES = (6, 18, 26)
"""Allowed neighbourhoods: faces (6), faces and edges (18), faces, edges and corners (26)."""


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
    n_maps = maps.shape[0]
    if two_sided:
        top = np.abs(maps).max(axis=(1, 2, 3))
        tails = (maps, -maps)
    else:
        top = maps.max(axis=(1, 2, 3))
        tails = (maps,)
    top = np.maximum(top, 0.0)
    # thresholds (n_maps, n_steps): exactly nilearn's linspace(0, max, n_steps + 1)[1:]
    thresholds = np.linspace(np.zeros(n_maps), top, n_steps + 1, axis=1)[:, 1:]
    # level of a voxel = number of thresholds it reaches (0: never above threshold)
    dtype = np.uint16 if n_steps > 255 else np.uint8
    levels = np.stack([_levels(tail, thresholds, top, n_steps) for tail in tails]).astype(dtype)
    # cumulative height weight per map and level: weight[m, k] = sum_{j <= k} h_j ** H
    weight = np.zeros((n_maps, n_steps + 1))
    weight[:, 1:] = np.cumsum(thresholds**height_power, axis=1)
    scores = _tfce_levels(
        levels.reshape((-1,) + maps.shape[1:]),
        np.tile(weight, (len(tails), 1)),
        extent_power,
        n_steps,
        connectivity,
    ).reshape(levels.shape)
    return scores[0] - scores[1] if two_sided else scores[0]


def _levels(values, thresholds, top, n_steps):
    """Number of thresholds each voxel reaches: searchsorted(thresholds[m], v, 'right').

    values (n_maps, X, Y, Z) float64, thresholds (n_maps, n_steps) increasing, top (n_maps,).
    Returns int64 levels in [0, n_steps]; maps with top == 0 are all 0.
    """
    n_maps = values.shape[0]
    scale = np.divide(n_steps, top, out=np.zeros(n_maps), where=top > 0)
    guess = np.clip(values * scale[:, None, None, None], 0, n_steps).astype(np.int64)
    # bounds[m, j] = j-th threshold between -inf and +inf, so the guess can be corrected exactly
    low, high = np.full((n_maps, 1), -np.inf), np.full((n_maps, 1), np.inf)
    flat_bounds = np.concatenate([low, thresholds, high], axis=1).reshape(-1)
    row = (np.arange(n_maps) * (n_steps + 2))[:, None, None, None]
    guess -= values < flat_bounds[row + guess]
    guess += values >= flat_bounds[row + guess + 1]
    guess[top <= 0] = 0
    return guess


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


def _edges(levels, connectivity):
    """Neighbour pairs active at some level: (weight, a, b) with weight = min level, a, b flat."""
    n_maps, nx, ny, nz = levels.shape
    weight = np.zeros_like(levels)
    weights, first, second = [], [], []
    for dx, dy, dz in _neighbour_offsets(connectivity):
        pairs = tuple(zip((dx, dy, dz), (nx, ny, nz), strict=True))
        src = (slice(None),) + tuple(slice(max(0, -d), n - max(0, d)) for d, n in pairs)
        dst = (slice(None),) + tuple(slice(max(0, d), n - max(0, -d)) for d, n in pairs)
        weight[...] = 0
        np.minimum(levels[src], levels[dst], out=weight[src])
        a = np.flatnonzero(weight)
        weights.append(weight.reshape(-1)[a])
        first.append(a)
        second.append(a + (dx * ny * nz + dy * nz + dz))
    return np.concatenate(weights), np.concatenate(first), np.concatenate(second)


def _group_by_level_descending(keys, n_steps):
    """Order of ``keys`` by decreasing level, the end of each level's block and its size."""
    order = np.argsort(n_steps - keys, kind="stable")  # radix sort on small unsigned ints
    counts = np.bincount(keys, minlength=n_steps + 1)
    # block of level k is [end[k] - counts[k], end[k]) in the ordering
    end = np.cumsum(counts[::-1])[::-1]
    return order, end, counts


def _find(parent, items):
    """Union-find roots of ``items`` with path compression of the queried items."""
    roots = parent[items]
    while True:
        up = parent[roots]
        if np.array_equal(up, roots):
            break
        roots = up
    parent[items] = roots
    return roots


def _distinct(items, scratch):
    """Distinct values of ``items`` (non-negative ints < scratch.size), without sorting."""
    position = np.arange(items.size)
    scratch[items] = position  # one position per value survives the scatter
    return items[scratch[items] == position]


def _link(parent, roots_a, roots_b, comp_size):
    """Union the components of each pair of roots, hooking the smaller under the larger.

    Components are ordered by (size, root index), a strict order that stays fixed while
    linking, so hooks never form a cycle; pairs hooked to the same root in one round leave
    losers that the next round links again.
    """
    scale = comp_size.size
    while True:
        differ = roots_a != roots_b
        if not differ.any():
            return
        roots_a, roots_b = roots_a[differ], roots_b[differ]
        key_a = comp_size[roots_a] * scale + roots_a
        key_b = comp_size[roots_b] * scale + roots_b
        a_small = key_a < key_b
        parent[np.where(a_small, roots_a, roots_b)] = np.where(a_small, roots_b, roots_a)
        roots_a, roots_b = _find(parent, roots_a), _find(parent, roots_b)


def _tfce_levels(levels, weight, extent_power, n_steps, connectivity):
    """TFCE of maps given as integer levels.

    levels : (n_maps, X, Y, Z) unsigned int, level of each voxel (0 = inactive).
    weight : (n_maps, n_steps + 1) float64, cumulative height weight per level.
    Returns (n_maps, X, Y, Z) float64, the positive-tail TFCE of each map.
    """
    n_maps = levels.shape[0]
    n_vox = levels[0].size
    flat = levels.reshape(-1)
    edge_level, edge_a, edge_b = _edges(levels, connectivity)
    edge_order, edge_end, edge_count = _group_by_level_descending(edge_level, n_steps)
    edge_a, edge_b = edge_a[edge_order], edge_b[edge_order]
    active = np.flatnonzero(flat)
    vert_order, vert_end, vert_count = _group_by_level_descending(flat[active], n_steps)
    vertices = active[vert_order]

    parent = np.arange(flat.size)  # union-find over voxels; a root stands for its component
    comp_size = np.ones(flat.size, dtype=np.int64)
    node_of_root = np.empty(flat.size, dtype=np.int64)
    leaf = np.empty(flat.size, dtype=np.int64)
    scratch = np.empty(flat.size, dtype=np.int64)
    max_nodes = active.size + 1  # every node holds at least one voxel entering at its level
    node_parent = np.full(max_nodes, max_nodes - 1, dtype=np.int64)  # last node: a zero sentinel
    node_level = np.zeros(max_nodes, dtype=np.int64)
    node_size = np.zeros(max_nodes, dtype=np.int64)
    node_map = np.zeros(max_nodes, dtype=np.int64)
    level_first_node = np.zeros(n_steps + 2, dtype=np.int64)
    n_nodes = 0
    # 1. build the component tree from the highest level down
    for k in range(n_steps, 0, -1):
        level_first_node[k] = n_nodes
        new = vertices[vert_end[k] - vert_count[k] : vert_end[k]]
        e0, e1 = edge_end[k] - edge_count[k], edge_end[k]
        if e1 == e0:
            ids = n_nodes + np.arange(new.size)
            leaf[new] = ids
            node_of_root[new] = ids
            node_level[ids] = k
            node_size[ids] = 1
            node_map[ids] = new // n_vox
            n_nodes += new.size
            continue
        roots_a, roots_b = _find(parent, edge_a[e0:e1]), _find(parent, edge_b[e0:e1])
        involved = _distinct(np.concatenate([roots_a, roots_b, new]), scratch)
        old_sizes = comp_size[involved]
        _link(parent, roots_a, roots_b, comp_size)
        final = _find(parent, involved)
        rep = _distinct(final, scratch)
        n_comp = rep.size
        scratch[rep] = np.arange(n_comp)
        comp = scratch[final]
        sizes = np.bincount(comp, weights=old_sizes, minlength=n_comp).astype(np.int64)
        ids = n_nodes + np.arange(n_comp)
        was_root = flat[involved] > k
        node_parent[node_of_root[involved[was_root]]] = n_nodes + comp[was_root]
        comp_size[rep] = sizes
        node_of_root[rep] = ids
        leaf[new] = n_nodes + scratch[parent[new]]
        node_level[ids] = k
        node_size[ids] = sizes
        node_map[ids] = rep // n_vox
        n_nodes += n_comp
    level_first_node[0] = n_nodes
    # 2. score of a node: size ** E times the height weight of the levels it spans
    ids = np.arange(n_nodes)
    span_low = node_level[node_parent[ids]]
    value = np.zeros(max_nodes)
    value[ids] = node_size[ids] ** extent_power * (
        weight[node_map[ids], node_level[ids]] - weight[node_map[ids], span_low]
    )
    # 3. accumulate from the roots (lowest levels, created last) towards the leaves
    for k in range(1, n_steps + 1):
        block = slice(level_first_node[k], level_first_node[k - 1])
        value[block] += value[node_parent[block]]
    out = np.zeros(flat.size)
    out[active] = value[leaf[active]]
    return out.reshape((n_maps,) + levels.shape[1:])
