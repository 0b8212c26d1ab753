"""Multiple-testing correction across a family of p-values (Holm, Benjamini-Hochberg)."""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

__all__ = ["METHODS", "adjust_pvalues"]

METHODS = {"holm": "holm", "fdr": "fdr_bh"}


def adjust_pvalues(pvalues, method: str) -> np.ndarray:
    """Adjust a family of p-values; undefined (NaN) entries stay NaN and are not counted.

    Parameters
    ----------
    pvalues : array_like of float, shape (n_tests,)
        p-values in [0, 1]; NaN marks a test that could not be computed, which is left out of the
        family (it neither gets nor changes an adjusted value).
    method : {"holm", "fdr"}
        ``"holm"``: Holm step-down, controls the family-wise error rate. ``"fdr"``:
        Benjamini-Hochberg step-up q-values, controls the false discovery rate. Both from
        :func:`statsmodels.stats.multitest.multipletests`.

    Returns
    -------
    ndarray of float64, shape (n_tests,)
        Adjusted p-values (q-values for ``"fdr"``), NaN where the input was NaN.

    Raises
    ------
    ValueError
        If ``method`` is unknown or a p-value lies outside [0, 1].
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    defined = ~np.isnan(p)
    if ((p[defined] < 0) | (p[defined] > 1)).any():
        raise ValueError(f"pvalues: expected values in [0, 1] or NaN, got min {np.nanmin(p)} and "
                         f"max {np.nanmax(p)}")
    out = np.full(p.shape, np.nan)
    if defined.any():
        out[defined] = multipletests(p[defined], method=METHODS[method])[1]
    return out
