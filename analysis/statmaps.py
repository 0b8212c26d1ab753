"""Viewer-ready statistic maps of a sign-flip test: finite values, NIfTI intents, sidecars.

:func:`stat_maps` turns a :class:`~cfx.analysis.permutation.PermutationResult` into the maps a
viewer (FSLeyes, ITK-SNAP, nilearn's ``plot_stat_map``) opens right, each with what its NIfTI
header and its JSON sidecar should say. Writing them is the caller's job (arrays in, arrays
out).

Rules
-----
- **Infinite t.** A voxel whose difference is the same non-zero value in every subject (an
  exact generator such as the phantom oracle) has t = +-inf; when the values agree only up to
  the rounding of the stored volumes, t is finite but meaningless (~1e7 for float32 HU). Both
  are *exact* voxels: a standard deviation across subjects at most ``resolution`` (in the
  data's units; :data:`FLOAT32_HU_RESOLUTION` for differences of float32 HU volumes) with a
  non-zero mean. The t map holds NaN there, never a clipped or float32-max value (which breaks
  every viewer's auto-windowing), and a separate ``exact`` map holds the sign of the mean
  (+1 or -1; 0 elsewhere); it is made only when some voxel is exact. Their p-values are
  finite (as small as the flips allow), so the p and -log10 p maps show those voxels.
- **Outside the tested voxels** every map holds its "nothing here" value: 0 for the mean, t,
  TFCE, -log10 p and exact maps, 1 for p-value maps. The sidecar states it.
- **-log10 p** (nilearn's convention; larger is more significant) is written for each FWE
  p-value. Its intent is NIFTI_INTENT_NONE with the name ``-log10 p``: the NIfTI code
  NIFTI_INTENT_LOG10PVAL (24) means log10 p, which is negative.
- **Intents.** t: NIFTI_INTENT_TTEST with its degrees of freedom (``n_subjects - 1``); p and q:
  NIFTI_INTENT_PVAL; mean: NIFTI_INTENT_ESTIMATE; TFCE and exact: NIFTI_INTENT_NONE, named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfx.analysis.permutation import PermutationResult

__all__ = ["StatMap", "stat_maps", "FLOAT32_HU_RESOLUTION"]

FLOAT32_HU_RESOLUTION = 1e-3
"""HU: a standard deviation at or below it is rounding, not variance, for float32 HU volumes
(the float32 spacing is 2.4e-4 HU at 3000 HU, 6e-5 HU at -850 HU)."""

_P_FLOOR = np.finfo(np.float64).tiny  # -log10 of a p-value is at most ~308


@dataclass(frozen=True, eq=False)
class StatMap:
    """One map to write, with its NIfTI intent and its JSON sidecar.

    Attributes
    ----------
    stat : str
        Short name, the BIDS ``stat-`` entity: mean, t, exact, pfwe, logpfwe, qfdr, tfce,
        ptfce, logptfce.
    values : ndarray of float32, shape (n_x, n_y, n_z)
        Finite everywhere except NaN where t is infinite (t map only).
    intent : str
        nibabel's name of the NIfTI intent code: "t test", "p value", "estimate" or "none".
    intent_params : tuple of float
        The intent's parameters (the degrees of freedom for "t test").
    intent_name : str
        At most 16 characters, shown by viewers beside the intent.
    sidecar : dict
        JSON-ready description: the test, flips, exhaustive or not, tail method, correction.
    """

    stat: str
    values: np.ndarray
    intent: str
    intent_params: tuple
    intent_name: str
    sidecar: dict


def stat_maps(result: PermutationResult, tested, *, units: str = "HU", description: str = "",
              resolution: float = 0.0) -> list[StatMap]:
    """The viewer-ready maps of a one-sample sign-flip result.

    Parameters
    ----------
    result : PermutationResult
        From :func:`cfx.analysis.permutation.one_sample_permutation`, on 4-D data (maps of shape
        ``tested.shape``) or on the tested voxels only (maps of shape ``(n_tested,)``).
    tested : array_like of bool, shape (n_x, n_y, n_z)
        The tested voxels.
    units : str, default "HU"
        Units of the data (of the mean map).
    description : str, optional
        What was tested, e.g. "smoking yes - no, per subject, averaged over seeds"; copied into
        every sidecar.
    resolution : float, default 0
        Standard deviation across subjects (in ``units``) at or below which a voxel with a
        non-zero mean is exact: NaN in the t map, its sign in the exact map. 0 makes only
        infinite t exact.

    Returns
    -------
    list of StatMap
        mean, t, (exact), pfwe, logpfwe, qfdr, and with TFCE tfce, ptfce, logptfce.

    Raises
    ------
    ValueError
        If ``tested`` does not match the result's maps.
    """
    tested = np.asarray(tested, dtype=bool)
    grid = {name: _on_grid(getattr(result, name), tested, name)
            for name in ("mean", "t", "p_fwe", "q_fdr")}
    common = {
        "description": description,
        "test": "one-sample sign-flip permutation test (mean = 0)",
        "alternative": result.alternative,
        "n_subjects": result.n_subjects,
        "degrees_of_freedom": result.n_subjects - 1,
        "permutations": result.n_permutations,
        "exhaustive": result.exhaustive,
        "voxels_tested": int(tested.sum()),
    }
    t, mean = grid["t"], grid["mean"]
    with np.errstate(divide="ignore", invalid="ignore"):  # sd = |mean| sqrt(n) / |t|
        sd = np.abs(mean) * np.sqrt(result.n_subjects) / np.abs(t)
    exact = np.where(tested & (mean != 0) & (sd <= resolution), np.sign(mean), 0.0)
    n_exact = int(np.count_nonzero(exact))
    maps = [
        _map("mean", grid["mean"], tested, 0.0, "estimate", (), "mean",
             common | {"units": units, "correction": "none"}),
        _map("t", np.where(exact != 0, np.nan, t), tested, 0.0, "t test",
             (float(result.n_subjects - 1),), "t", common | {
                 "correction": "none", "voxels_exact": n_exact, "exact_resolution": resolution,
                 "nonfinite": ("NaN where t is infinite or meaningless: the difference is the "
                               "same non-zero value in every subject, up to exact_resolution "
                               f"{units} standard deviation; see the exact map")}),
    ]
    if n_exact:
        maps.append(_map("exact", exact, tested, 0.0, "none", (), "sign of inf t", common | {
            "meaning": "+1 / -1 where the mean is positive / negative with no "
                       "variance across subjects (t infinite), 0 elsewhere",
            "voxels_exact": n_exact}))
    smallest = 1.0 / (result.n_permutations + (not result.exhaustive))
    common["smallest_counted_p"] = smallest  # below it only from an accepted tail fit
    maps += _p_maps("fwe", grid["p_fwe"], tested, result.tail_fit_t, result.tail,
                    common | {"correction": "FWE, max-T over the tested voxels"})
    maps.append(_map("qfdr", grid["q_fdr"], tested, 1.0, "p value", (), "q FDR", common | {
        "correction": "FDR, Benjamini-Hochberg over the tested voxels (parametric t p-values)"}))
    if result.tfce is not None:
        tfce = _on_grid(result.tfce, tested, "tfce")
        maps.append(_map("tfce", tfce, tested, 0.0, "none", (), "TFCE", common | {
            "correction": "none", "tfce": {"extent_power": 0.5, "height_power": 2.0,
                                           "n_steps": 100, "connectivity": 6}}))
        maps += _p_maps("tfce", _on_grid(result.p_tfce, tested, "p_tfce"), tested,
                        result.tail_fit_tfce, result.tail,
                        common | {"correction": "FWE, max-TFCE over the tested voxels"})
    return maps


def _p_maps(kind, p, tested, fit, tail, sidecar):
    """The p-value map of an FWE correction and its -log10."""
    sidecar = sidecar | {"tail": tail, "tail_fit_accepted": None if fit is None else fit.accepted}
    label = "FWE" if kind == "fwe" else "TFCE"
    return [
        _map(f"p{kind}", p, tested, 1.0, "p value", (), f"p {label}", sidecar),
        _map(f"logp{kind}", -np.log10(np.maximum(p, _P_FLOOR)), tested, 0.0, "none", (),
             f"-log10 p {label}", sidecar | {"transform": "-log10(p)"}),
    ]


def _map(stat, values, tested, outside, intent, params, name, sidecar):
    volume = np.where(tested, values, outside).astype(np.float32)
    sidecar = sidecar | {"stat": stat, "outside_tested_value": outside,
                         "nifti_intent": intent, "nifti_intent_name": name}
    return StatMap(stat, volume, intent, params, name, sidecar)


def _on_grid(values, tested, name):
    values = np.asarray(values, dtype=np.float64)
    if values.shape == tested.shape:
        return values
    if values.shape == (int(tested.sum()),):
        grid = np.zeros(tested.shape)
        grid[tested] = values
        return grid
    raise ValueError(f"tested: shape {tested.shape} with {int(tested.sum())} voxels does not "
                     f"match the result's {name} map of shape {values.shape}.")
