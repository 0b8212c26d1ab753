"""Voxelwise one-sample inference by sign flipping: t-map, max-T FWE, FDR and TFCE.

For paired counterfactual differences (one map per subject), the null hypothesis "no effect"
makes each subject's difference map symmetric around zero, so flipping the sign of whole
subjects gives the permutation distribution (Nichols & Holmes 2002; nilearn's ``permuted_ols``
with a tested intercept does the same).

The null distribution holds one maximum per random sign-flip draw (``n_permutations`` of them);
the unpermuted data are *not* stored in it but enter every p-value through the ``1 +``:

    p_fwe(v) = (1 + #{b : max_w T_b(w) >= T(v)}) / (1 + n_permutations)

which is exactly nilearn's ``(n_perm + 1 - #{h0 < T}) / (n_perm + 1)``. Ties are judged with a
relative tolerance of 1e-10, so a draw that reproduces the data (all +1, or all -1 when
two-sided) counts as a tie whatever the floating-point rounding.

Exhaustive mode: n subjects allow only 2^n distinct sign flips, and when two-sided a flip and
its negative give the same maxima (|t| and |TFCE| are unchanged by negating every subject), so
2^(n-1) flips hold the whole distribution. When that number (2^n when one-sided) is at most
``n_permutations`` and no flips are given, every distinct flip is enumerated exactly once
(the first, all +1, being the data), and the p-values are the exact ones,

    p_fwe(v) = #{b : max_w T_b(w) >= T(v)} / n_flips,

no smaller than ``1 / n_flips``; ``PermutationResult.exhaustive`` says so (FSL randomise does
the same). Random draws would only repeat flips.

Tail approximation (``tail="gpd"`` or ``"gamma"``, :mod:`cfx.analysis.permutation_tail`): a model
fitted to the null maxima gives the p-values above its threshold, resolving p below
``1 / (1 + n_permutations)``; counted p-values are kept below the threshold and wherever the
fit fails its goodness-of-fit check. Not used in exhaustive mode (the p-values are exact).

Speed: the sum of squares of a voxel is the same under every sign flip, so a permuted t is a
monotone function of ``s @ x / |x|`` (s the flips, x the voxel's values) and every permuted
t-map comes from one matrix product ``signs @ normalised_data``, computed in float32 voxel chunks
of at most 32 MiB; only the maximum over voxels is kept for each draw, recomputed in float64 at
its voxel. Memory stays bounded by the chunk size whatever the number of voxels. With ``device``
(a torch device, e.g. ``"cuda"``) the products and the max reductions run in torch there
(:mod:`cfx.analysis.permutation_torch`, torch imported only then); the float64 recompute stays here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from cfx.analysis.permutation_tail import TAIL_METHODS, TailFit, fit_tail, tail_p_values
from cfx.analysis.tfce import tfce as tfce_transform

__all__ = ["PermutationResult", "one_sample_permutation", "ALTERNATIVES"]

ALTERNATIVES = ("two-sided", "greater", "less")
"""Allowed alternatives: mean != 0, mean > 0, mean < 0."""

_CHUNK_BYTES = 32 * 2**20  # size of one (n_permutations, n_voxels_chunk) float32 block
_TIE_TOLERANCE = 1e-10


@dataclass(frozen=True, eq=False)
class PermutationResult:
    """Maps and null distributions of a one-sample sign-flip test.

    Maps have the layout of the input (``(n_x, n_y, n_z)`` for 4-D data, ``(n_voxels,)`` for
    2-D data) and hold NaN outside ``mask``.

    Attributes
    ----------
    mean : ndarray of float64
        Mean over subjects, in the data's units (HU for CT differences).
    t : ndarray of float64
        One-sample t statistic, ``mean / (sd / sqrt(n_subjects))`` with ``sd`` using
        ``ddof=1``; 0 where every subject is 0, +-inf where the values are constant but not 0.
    p_uncorrected : ndarray of float64
        Parametric p-value of ``t`` (Student t with ``n_subjects - 1`` degrees of freedom), the
        same as ``scipy.stats.ttest_1samp`` for the chosen alternative.
    q_fdr : ndarray of float64
        Benjamini-Hochberg adjusted ``p_uncorrected`` over the tested voxels.
    p_fwe : ndarray of float64
        Max-T family-wise corrected permutation p-value, in ``[1 / (1 + n_permutations), 1]``
        when counted, ``[1 / n_permutations, 1]`` when exhaustive; smaller where an accepted
        tail fit gives it.
    h0_max_t : ndarray of float64, shape (n_permutations,)
        Maximum over tested voxels of the permuted statistic (``|t|`` when two-sided), per draw
        (exhaustive: per distinct flip, the data's own first).
    n_permutations : int
        Number of sign flips used: the draws, or every distinct flip when exhaustive (which
        can be fewer than asked).
    alternative : str
        One of ``ALTERNATIVES``.
    n_subjects : int
        Number of subjects (the t statistic has ``n_subjects - 1`` degrees of freedom).
    exhaustive : bool
        True when every distinct sign flip was enumerated once and the p-values are exact.
    tail : str
        The tail method asked for (one of ``TAIL_METHODS``); "none" when exhaustive.
    tail_fit_t : TailFit or None
        The tail fit of ``h0_max_t`` (its ``accepted`` says whether ``p_fwe`` used it).
    tfce : ndarray of float64 or None
        TFCE of the t-map (signed like ``t``), when asked.
    p_tfce : ndarray of float64 or None
        Family-wise corrected p-value of ``tfce`` (max-TFCE over voxels per draw), when asked.
    h0_max_tfce : ndarray of float64, shape (n_permutations,), or None
        Maximum of the permuted TFCE (``|tfce|`` when two-sided) per draw, when asked.
    tail_fit_tfce : TailFit or None
        The tail fit of ``h0_max_tfce``, when TFCE and a tail method were asked.
    """

    mean: np.ndarray
    t: np.ndarray
    p_uncorrected: np.ndarray
    q_fdr: np.ndarray
    p_fwe: np.ndarray
    h0_max_t: np.ndarray
    n_permutations: int
    alternative: str
    n_subjects: int
    exhaustive: bool = False
    tail: str = "none"
    tail_fit_t: TailFit | None = None
    tfce: np.ndarray | None = None
    p_tfce: np.ndarray | None = None
    h0_max_tfce: np.ndarray | None = None
    tail_fit_tfce: TailFit | None = None


def one_sample_permutation(
    data,
    n_permutations: int = 1000,
    tfce: bool = False,
    mask=None,
    random_state=0,
    *,
    alternative: str = "two-sided",
    sign_flips=None,
    tail: str = "none",
    device: str | None = None,
) -> PermutationResult:
    """One-sample sign-flip permutation test at every voxel, with max-T FWE and optional TFCE.

    Parameters
    ----------
    data : array_like of float, shape (n_subjects, n_voxels) or (n_subjects, n_x, n_y, n_z)
        One map per subject, e.g. counterfactual minus reference in HU. Tested voxels must be
        finite.
    n_permutations : int, default 1000
        Number of random sign-flip draws (>= 1). When the distinct flips are no more than this
        (2^(n_subjects - 1) two-sided, 2^n_subjects one-sided), each is enumerated once instead
        and the p-values are exact (``PermutationResult.exhaustive``).
    tfce : bool, default False
        Also compute TFCE of the t-map (6-connectivity, E = 0.5, H = 2, 100 steps, as nilearn)
        and its max-TFCE FWE p-values. Needs 4-D data.
    mask : array_like of bool, shape data.shape[1:], optional
        Voxels to test; all voxels when omitted. For TFCE, voxels outside the mask count as
        t = 0 (they never join a cluster).
    random_state : int or numpy.random.Generator, default 0
        Seed of ``numpy.random.default_rng`` drawing the sign flips.
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        Two-sided ranks ``|t|`` against the maximum of ``|t|`` (and ``|tfce|``); one-sided
        ranks ``t`` (or ``-t``) against the maximum of ``t`` (or ``-t``).
    sign_flips : array_like of +-1, shape (n_permutations, n_subjects), optional
        Pre-drawn sign flips used instead of random ones (e.g. to reproduce another tool's
        draws); ``random_state`` is then unused and the mode is never exhaustive.
    tail : {"none", "gpd", "gamma"}, default "none"
        Tail approximation of the max-T (and max-TFCE) null distribution for the p-values
        above its threshold (:mod:`cfx.analysis.permutation_tail`); needs at least 100 flips and
        is skipped when exhaustive.
    device : str, optional
        None (default): the max-T products run in numpy. A torch device (``"cuda"``,
        ``"cuda:1"``, ``"cpu"``): the flips x data products and the max reductions of the max-T
        null run in torch there, float32 like numpy, each draw's maximum recomputed in float64
        at its voxel (:mod:`cfx.analysis.permutation_torch`); the maxima equal the numpy path's
        except where two voxels tie within float32 rounding (then within ~1e-6 relative). TFCE
        runs on the CPU either way.

    Returns
    -------
    PermutationResult
        Maps in the input layout (NaN outside the mask) and the null distributions.

    Raises
    ------
    ValueError
        On fewer than 2 subjects, a wrong number of dimensions, a mask of the wrong shape or
        empty, non-finite tested values, all tested voxels constant, TFCE on 2-D data,
        ``n_permutations < 1``, an unknown alternative, an unknown tail method or one with
        fewer than 100 flips, bad ``sign_flips``, or a ``device`` torch cannot use here.
    """
    values = np.asarray(data, dtype=np.float64)
    _check_inputs(values, n_permutations, tfce, alternative, tail)
    if device is not None:
        from cfx.analysis.permutation_torch import check_torch_device

        check_torch_device(device)
    tested = _sanitize_mask(mask, values.shape[1:])
    flips, exhaustive = _sanitize_sign_flips(sign_flips, n_permutations, values.shape[0],
                                             random_state, alternative)
    if exhaustive:
        tail = "none"
    elif tail != "none" and flips.shape[0] < 100:
        raise ValueError(f"tail: {tail!r} fits the null maxima and needs at least 100 flips; "
                         f"got n_permutations={flips.shape[0]}.")
    # the exact p is at least one over the distinct flips: the floor of fitted p-values
    floor = 0.5 ** (values.shape[0] - (alternative == "two-sided"))
    samples = values[:, tested]  # (n_subjects, n_tested)
    _check_samples(samples)

    # 1. observed statistics
    n_subjects = samples.shape[0]
    mean = samples.mean(axis=0)
    norm = np.sqrt(np.einsum("ij,ij->j", samples, samples))
    centred = samples - mean
    sd = np.sqrt(np.einsum("ij,ij->j", centred, centred) / (n_subjects - 1))
    del centred
    t_obs = _t_statistic(mean, sd, n_subjects)
    p_unc = _parametric_p(t_obs, n_subjects - 1, alternative)
    # 2. max-T null distribution, chunked over voxels
    normalised = np.divide(samples, norm, out=np.zeros_like(samples), where=norm > 0)
    h0_t = _max_t_null(flips, normalised, alternative, device)
    p_fwe, fit_t = _corrected_p(_oriented(t_obs, alternative), h0_t, exhaustive, tail, floor)
    fields = {
        "mean": mean,
        "t": t_obs,
        "p_uncorrected": p_unc,
        "q_fdr": stats.false_discovery_control(p_unc, method="bh"),
        "p_fwe": p_fwe,
    }
    # 3. TFCE and its null distribution
    h0_tfce = fit_tfce = None
    if tfce:
        if not np.all(np.isfinite(t_obs)):
            raise ValueError(
                f"tfce: {int(np.sum(~np.isfinite(t_obs)))} tested voxels are constant but "
                "not 0 across subjects (t is infinite); TFCE needs finite t. Mask them out."
            )
        box = tested[_bounding_box(tested)]  # TFCE is 0 outside the mask: a smaller grid
        # the null first: its batches compile the kernel when needed, which the data's map reuses
        h0_tfce = _max_tfce_null(flips, normalised, box, alternative)
        tfce_obs = _tfce_of(t_obs[np.newaxis], box, alternative)[0]
        fields["tfce"] = tfce_obs
        fields["p_tfce"], fit_tfce = _corrected_p(np.abs(tfce_obs), h0_tfce, exhaustive, tail,
                                                  floor)
    maps = {name: _unmask(v, tested) for name, v in fields.items()}
    return PermutationResult(
        **maps,
        h0_max_t=h0_t,
        n_permutations=flips.shape[0],
        alternative=alternative,
        n_subjects=n_subjects,
        exhaustive=exhaustive,
        tail=tail,
        tail_fit_t=fit_t,
        h0_max_tfce=h0_tfce,
        tail_fit_tfce=fit_tfce,
    )


def _check_inputs(values, n_permutations, tfce, alternative, tail) -> None:
    if values.ndim not in (2, 4):
        raise ValueError(
            f"data: got an array with shape {values.shape}; expected (n_subjects, n_voxels) "
            "or (n_subjects, n_x, n_y, n_z)."
        )
    if values.shape[0] < 2:
        raise ValueError(
            f"data: got {values.shape[0]} subject(s); a one-sample test needs at least 2."
        )
    if isinstance(n_permutations, bool) or int(n_permutations) != n_permutations or (
        n_permutations < 1
    ):
        raise ValueError(f"n_permutations: got {n_permutations!r}; expected an integer >= 1.")
    if tfce and values.ndim != 4:
        raise ValueError(
            f"tfce: needs 3-D maps, data of shape (n_subjects, n_x, n_y, n_z); got data of "
            f"shape {values.shape}."
        )
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative: got {alternative!r}; expected one of {ALTERNATIVES}.")
    if tail not in TAIL_METHODS:
        raise ValueError(f"tail: got {tail!r}; expected one of {TAIL_METHODS}.")


def _sanitize_mask(mask, shape):
    """Boolean mask of tested voxels, shape ``shape``."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(
            f"mask: got shape {mask.shape}; expected the shape of one subject's map, {shape}."
        )
    if mask.dtype != bool:
        raise ValueError(f"mask: got dtype {mask.dtype}; expected a boolean array.")
    if not mask.any():
        raise ValueError("mask: selects no voxel; nothing to test.")
    return mask


def _n_distinct_flips(n_subjects, alternative):
    """Sign flips giving distinct maxima: 2^(n-1) two-sided (s and -s agree), else 2^n."""
    return 2 ** (n_subjects - 1) if alternative == "two-sided" else 2**n_subjects


def _all_sign_flips(n_subjects, alternative):
    """Every distinct flip once, (n_flips, n_subjects) float64; the first is all +1.

    Two-sided, the first subject keeps +1 (the other half are the negatives of these).
    """
    n_free = n_subjects - 1 if alternative == "two-sided" else n_subjects
    bits = (np.arange(2**n_free)[:, np.newaxis] >> np.arange(n_free)) & 1
    flips = 1.0 - 2.0 * bits
    if alternative == "two-sided":
        flips = np.hstack([np.ones((flips.shape[0], 1)), flips])
    return flips


def _sanitize_sign_flips(sign_flips, n_permutations, n_subjects, random_state, alternative):
    """(n_flips, n_subjects) float64 of +-1 (drawn, enumerated or checked) and exhaustive."""
    if sign_flips is None:
        if _n_distinct_flips(n_subjects, alternative) <= n_permutations:
            return _all_sign_flips(n_subjects, alternative), True
        rng = np.random.default_rng(random_state)
        draws = rng.integers(0, 2, size=(int(n_permutations), n_subjects), dtype=np.int8)
        return (2.0 * draws - 1.0).astype(np.float64), False
    flips = np.asarray(sign_flips, dtype=np.float64)
    if flips.shape != (n_permutations, n_subjects):
        raise ValueError(
            f"sign_flips: got shape {flips.shape}; expected (n_permutations, n_subjects) = "
            f"({n_permutations}, {n_subjects})."
        )
    if not np.all(np.abs(flips) == 1):
        raise ValueError("sign_flips: got values other than +1 and -1.")
    return flips, False


def _check_samples(samples) -> None:
    if not np.all(np.isfinite(samples)):
        bad = int(np.sum(~np.all(np.isfinite(samples), axis=0)))
        raise ValueError(
            f"data: {bad} tested voxels hold NaN or infinite values; mask them out or fix them."
        )
    if np.all(samples == samples[:1]):
        raise ValueError(
            f"data: all {samples.shape[1]} tested voxels are constant across subjects; "
            "there is nothing to test."
        )


def _t_statistic(mean, sd, n_subjects):
    """mean / (sd / sqrt(n)); 0 where sd = mean = 0, +-inf where only sd = 0."""
    t = np.divide(mean, sd / np.sqrt(n_subjects), out=np.zeros_like(mean), where=sd > 0)
    constant = (sd == 0) & (mean != 0)
    t[constant] = np.copysign(np.inf, mean[constant])
    return t


def _t_from_correlation(r, n_subjects):
    """t from ``r = sum(x) / (sqrt(n) |x|)``: ``t = r sqrt((n - 1) / (1 - r^2))``.

    Equal to ``mean / (sd / sqrt(n))`` because ``|x|^2 = (n - 1) sd^2 + n mean^2``.
    """
    residual = np.maximum(1.0 - r * r, 0.0)
    with np.errstate(divide="ignore"):
        return r * np.sqrt((n_subjects - 1) / residual)


def _parametric_p(t, dof, alternative):
    if alternative == "two-sided":
        return 2.0 * stats.t.sf(np.abs(t), dof)
    if alternative == "greater":
        return stats.t.sf(t, dof)
    return stats.t.cdf(t, dof)


def _oriented(statistic, alternative):
    """The statistic ranked against the null maxima: |s|, s or -s."""
    if alternative == "two-sided":
        return np.abs(statistic)
    return statistic if alternative == "greater" else -statistic


def _max_t_null(flips, normalised, alternative, device=None):
    """Per draw, the maximum over voxels of the oriented permuted t; shape (n_permutations,).

    The products run in float32 (4x faster), in numpy (``device`` None) or in torch on
    ``device`` (:mod:`cfx.analysis.permutation_torch`); the winning voxel of each draw is then
    recomputed in float64 here, so the maxima are float64 values of the data (the winner can
    only differ from the float64 one when two voxels tie to within float32 precision, ~1e-6
    relative).
    """
    n_subjects = flips.shape[1]
    if device is None:
        chunks = _winners(flips, normalised, alternative)
    else:
        from cfx.analysis.permutation_torch import winners_torch

        chunks = winners_torch(flips, normalised, alternative, device)
    best = np.full(flips.shape[0], -np.inf)
    for block, winner in chunks:
        exact = np.einsum("bn,nb->b", flips, block[:, winner])
        np.maximum(best, _oriented(exact, alternative), out=best)
    # t is increasing in r, so the maximum of t is t of the maximum of r
    return _t_from_correlation(best / np.sqrt(n_subjects), n_subjects)


def _winners(flips, normalised, alternative):
    """Per voxel chunk of at most 32 MiB of products: the chunk and each draw's peak voxel."""
    n_perm = flips.shape[0]
    chunk = max(1, _CHUNK_BYTES // (4 * n_perm))
    flips32 = flips.astype(np.float32)
    draws = np.arange(n_perm)
    for start in range(0, normalised.shape[1], chunk):
        block = normalised[:, start : start + chunk]
        r = flips32 @ block.astype(np.float32)  # (n_perm, chunk) = s.x / |x|
        if alternative == "less":
            winner = r.argmin(axis=1)
        else:
            winner = r.argmax(axis=1)
            if alternative == "two-sided":
                lowest = r.argmin(axis=1)
                flip = -r[draws, lowest] > r[draws, winner]
                winner[flip] = lowest[flip]
        yield block, winner


def _corrected_p(observed, null_max, exhaustive, tail, floor):
    """FWE p-values of ``observed`` against ``null_max`` and the tail fit (None without one)."""
    counted = _fwe_p(observed, null_max, exhaustive)
    if tail == "none":
        return counted, None
    fit = fit_tail(null_max, tail)
    return tail_p_values(observed, null_max, fit, floor, counted=counted), fit


def _fwe_p(observed, null_max, exhaustive=False):
    """Counted FWE p-values, ties within a relative 1e-10.

    Random draws: ``(1 + #{null >= observed}) / (1 + n_null)``. Exhaustive: the data are one of
    the flips, so ``#{null >= observed} / n_null``, at least ``1 / n_null``.
    """
    ordered = np.sort(null_max)
    slack = _TIE_TOLERANCE * np.abs(observed)
    threshold = observed - np.where(np.isfinite(slack), slack, 0.0)
    n_at_least = ordered.size - np.searchsorted(ordered, threshold, side="left")
    if exhaustive:
        return np.maximum(n_at_least, 1) / ordered.size
    return (1.0 + n_at_least) / (1.0 + ordered.size)


def _bounding_box(tested):
    """Slices of the smallest box holding every tested voxel.

    Voxels outside the mask have t = 0 and never join a cluster, so TFCE on the box equals TFCE
    on the whole grid, and a boolean mask lists the same voxels in the same (C) order in both.
    For lungs in a chest grid the box holds about a fifth of the voxels.
    """
    sides = []
    for axis in range(tested.ndim):
        others = tuple(a for a in range(tested.ndim) if a != axis)
        present = np.flatnonzero(tested.any(axis=others))
        sides.append(slice(present[0], present[-1] + 1))
    return tuple(sides)


def _tfce_of(t_tested, tested, alternative):
    """Signed TFCE of tested t-values (n_maps, n_tested), returned as (n_maps, n_tested)."""
    grids = np.zeros((t_tested.shape[0],) + tested.shape)
    grids[:, tested] = t_tested if alternative != "less" else -t_tested
    scores = tfce_transform(grids, two_sided=alternative == "two-sided")[:, tested]
    return -scores if alternative == "less" else scores


def _max_tfce_null(flips, normalised, tested, alternative, batch=16):
    """Per draw, the maximum over voxels of the permuted |TFCE|; shape (n_permutations,).

    The permuted t-maps come from one matrix product per block of draws (at most 32 MiB of
    them): BLAS threads keep spinning a while after each product and, called once per small
    batch, took the cores from TFCE (a run on 2 cores ran 2.3x slower). They then go to TFCE
    ``batch`` maps at a time, which spreads them over threads.
    """
    n_flips, n_subjects = flips.shape
    per_block = max(1, _CHUNK_BYTES // (8 * normalised.shape[1] * batch)) * batch
    out = np.empty(n_flips)
    buffer = np.zeros((min(batch, n_flips),) + tested.shape)  # untested voxels stay 0
    for block in range(0, n_flips, per_block):
        signs = flips[block:block + per_block]
        t_block = _t_from_correlation(signs @ normalised / np.sqrt(n_subjects), n_subjects)
        for start in range(0, len(signs), batch):
            t_perm = t_block[start:start + batch]
            grids = buffer[:len(t_perm)]
            grids[:, tested] = t_perm if alternative != "less" else -t_perm
            scores = tfce_transform(grids, two_sided=alternative == "two-sided")
            first = block + start
            out[first:first + len(t_perm)] = np.abs(scores).reshape(len(t_perm), -1).max(axis=1)
    return out


def _unmask(values, tested):
    out = np.full(tested.shape, np.nan)
    out[tested] = values
    return out
