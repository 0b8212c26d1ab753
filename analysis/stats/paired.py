"""Paired statistics of per-subject differences Delta = value - reference.

For one vector of Delta (one entry per subject): mean with a t-based 95 % CI and bootstrap
percentile and BCa CIs, the paired t-test, the Wilcoxon signed-rank test, the exact sign test, the
effect size d_z and the share of subjects with Delta > 0.

Degenerate Delta
----------------
Delta is treated as *constant* when its standard deviation is at most ``1e-6`` times its largest
absolute value (a d_z above a million: an exact oracle, or the voxel count of a shared mask). The
table is then still complete and says why in ``note``: the mean is reported, every CI has the
width the data give (0 for an exactly constant Delta; BCa falls back to the percentile interval),
``t``, ``p_t`` and ``d_z`` are NaN (the t statistic divides by the spread), and the Wilcoxon and
sign tests are computed from the signs and ranks, which stay defined unless every Delta is 0.
Subjects with Delta exactly 0 are left out of the Wilcoxon and sign tests (Wilcoxon's
``zero_method="wilcox"``) and counted in ``n``. A single subject, or a non-finite Delta, is an
error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["PairedTest", "paired_test", "paired_tests", "CONSTANT_RTOL"]

CONSTANT_RTOL = 1e-6


@dataclass(frozen=True)
class PairedTest:
    """Paired statistics of one Delta vector (units of Delta unless said otherwise).

    Attributes
    ----------
    n : int
        Subjects.
    estimate : float
        Mean Delta.
    sd : float
        Standard deviation of Delta (``ddof=1``).
    ci_low, ci_high : float
        t-based CI of the mean: ``estimate -/+ t_{n-1} * sd / sqrt(n)``.
    boot_low, boot_high : float
        Bootstrap percentile CI of the mean (``scipy.stats.bootstrap``'s resamples).
    bca_low, bca_high : float
        Bootstrap bias-corrected and accelerated (BCa) CI of the mean, by
        ``scipy.stats.bootstrap(method="BCa")`` on the same resamples.
    t, p_t : float
        Paired (one-sample) t statistic and its two-sided p-value; NaN when Delta is constant.
    wilcoxon_w, p_wilcoxon : float
        Wilcoxon signed-rank statistic (scipy's) and two-sided p-value; NaN when every Delta is 0.
    n_positive, n_negative : int
        Subjects with Delta > 0 and Delta < 0.
    p_sign : float
        Exact two-sided sign test (binomial, p = 1/2, zeros left out); NaN when every Delta is 0.
    d_z : float
        Effect size ``estimate / sd``, unitless; NaN when Delta is constant.
    share_positive : float
        ``n_positive / n``, in [0, 1].
    note : str
        Empty, or why a statistic is undefined or what was left out.
    """

    n: int
    estimate: float
    sd: float
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    bca_low: float
    bca_high: float
    t: float
    p_t: float
    wilcoxon_w: float
    p_wilcoxon: float
    n_positive: int
    n_negative: int
    p_sign: float
    d_z: float
    share_positive: float
    note: str


def paired_test(
    delta,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    random_state: int | np.random.Generator | None = 0,
) -> PairedTest:
    """All paired statistics of one vector of per-subject differences.

    Parameters
    ----------
    delta : array_like of float, shape (n_subjects,)
        Per-subject Delta = value - reference, in the metric's unit.
    confidence : float
        Level of every CI, in (0, 1).
    n_bootstrap : int
        Bootstrap resamples of the subjects, at least 100.
    random_state : int, numpy.random.Generator or None
        Seeds the bootstrap (``numpy.random.default_rng(random_state)``), which
        :func:`scipy.stats.bootstrap` draws as ``rng.integers(0, n_subjects, (n_bootstrap,
        n_subjects))``.

    Returns
    -------
    PairedTest

    Raises
    ------
    ValueError
        If ``delta`` is not 1-D, holds a non-finite value, has fewer than 2 subjects, or
        ``confidence`` / ``n_bootstrap`` are out of range.
    """
    delta = np.asarray(delta, dtype=np.float64)
    if delta.ndim != 1:
        raise ValueError(f"delta: expected one value per subject (1-D), got shape {delta.shape}")
    _check_settings(delta.shape[0], confidence, n_bootstrap)
    if not np.isfinite(delta).all():
        raise ValueError(f"delta: holds {np.count_nonzero(~np.isfinite(delta))} non-finite "
                         f"value(s); expected finite per-subject differences")
    return _paired_test(delta, confidence, n_bootstrap, np.random.default_rng(random_state))


def paired_tests(
    deltas,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    random_state: int = 0,
) -> pd.DataFrame:
    """:func:`paired_test` on every column of a subjects x tests matrix.

    Every column is bootstrapped with a generator seeded with ``random_state``, so all tests of
    the family resample the same subjects (the bootstrap keeps their correlation).

    Parameters
    ----------
    deltas : DataFrame or array_like of float, shape (n_subjects, n_tests)
        Per-subject Delta, one column per test (e.g. per region x metric).
    confidence, n_bootstrap
        As in :func:`paired_test`.
    random_state : int
        Seed of each column's bootstrap generator.

    Returns
    -------
    DataFrame, shape (n_tests, len(PairedTest fields))
        One row per column (index: the columns of ``deltas`` when it is a DataFrame, else
        0..n_tests-1), one column per :class:`PairedTest` field.

    Raises
    ------
    ValueError
        As :func:`paired_test`, and if ``deltas`` is not 2-D.
    """
    index = deltas.columns if isinstance(deltas, pd.DataFrame) else None
    matrix = np.asarray(deltas, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"deltas: expected a subjects x tests matrix (2-D), got shape "
                         f"{matrix.shape}")
    _check_settings(matrix.shape[0], confidence, n_bootstrap)
    bad = ~np.isfinite(matrix).all(axis=0)
    if bad.any():
        names = list(index[bad]) if index is not None else np.flatnonzero(bad).tolist()
        raise ValueError(f"deltas: columns {names[:5]} hold non-finite values; expected finite "
                         f"per-subject differences")
    rows = [asdict(_paired_test(column, confidence, n_bootstrap,
                                np.random.default_rng(random_state)))
            for column in matrix.T]
    return pd.DataFrame(rows, columns=[f.name for f in fields(PairedTest)], index=index)


def _check_settings(n_subjects: int, confidence: float, n_bootstrap: int) -> None:
    if n_subjects < 2:
        raise ValueError(f"delta: got {n_subjects} subject(s); paired statistics need at least 2")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 100:
        raise ValueError(f"n_bootstrap: expected an integer >= 100, got {n_bootstrap}")


def _paired_test(delta: np.ndarray, confidence: float, n_bootstrap: int,
                 rng: np.random.Generator) -> PairedTest:
    n = delta.size
    mean = float(delta.mean())
    sd = float(delta.std(ddof=1))
    scale = float(np.abs(delta).max())
    constant = sd <= CONSTANT_RTOL * scale
    alpha = (1.0 - confidence) / 2.0
    half = stats.t.ppf(1.0 - alpha, n - 1) * sd / np.sqrt(n)
    notes = []

    # scipy draws rng.integers(0, n, (n_bootstrap, n)); BCa is undefined for a constant Delta
    boot = stats.bootstrap((delta,), np.mean, n_resamples=int(n_bootstrap),
                           confidence_level=confidence, method="percentile" if constant else "BCa",
                           rng=rng)
    boot_low, boot_high = np.quantile(boot.bootstrap_distribution, [alpha, 1.0 - alpha])
    bca_low, bca_high = (boot_low, boot_high) if constant else boot.confidence_interval

    if constant:
        t = p_t = d_z = np.nan
    else:
        t = mean / (sd / np.sqrt(n))
        p_t = float(2.0 * stats.t.sf(abs(t), n - 1))
        d_z = mean / sd

    n_positive = int(np.count_nonzero(delta > 0))
    n_negative = int(np.count_nonzero(delta < 0))
    n_zero = n - n_positive - n_negative
    if n_zero == n:
        w = p_wilcoxon = p_sign = np.nan
        notes.append("Delta is 0 for every subject: no difference; t, Wilcoxon and sign tests "
                     "and d_z are undefined")
    else:
        result = stats.wilcoxon(delta)
        w, p_wilcoxon = float(result.statistic), float(result.pvalue)
        p_sign = float(stats.binomtest(n_positive, n_positive + n_negative, 0.5).pvalue)
        if constant:
            notes.append(f"Delta is {mean:+.6g} for every subject (sd {sd:.2g}): CIs have the "
                         f"width the data give, t-test and d_z are undefined")
        if n_zero:
            notes.append(f"{n_zero} subject(s) with Delta = 0 left out of the Wilcoxon and sign "
                         f"tests")
    return PairedTest(
        n=n, estimate=mean, sd=sd, ci_low=float(mean - half), ci_high=float(mean + half),
        boot_low=float(boot_low), boot_high=float(boot_high),
        bca_low=float(bca_low), bca_high=float(bca_high),
        t=float(t), p_t=float(p_t), wilcoxon_w=float(w), p_wilcoxon=float(p_wilcoxon),
        n_positive=n_positive, n_negative=n_negative, p_sign=float(p_sign), d_z=float(d_z),
        share_positive=n_positive / n, note="; ".join(notes),
    )

