"""The effect table of a counterfactual sweep: every value vs the reference, every region x metric.

One call from the tidy region table to the headline table: paired statistics of the per-subject
Delta (value - reference at the same seed, averaged over seeds), Holm and Benjamini-Hochberg
corrections across the whole family (all values x regions x metrics), and, when the sweep has
several seeds, the mixed model of the paired differences (subject random intercept,
:mod:`cfx.analysis.stats.mixed`) and the noise floor beside every effect.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pandas as pd

from cfx.analysis.stats.correction import adjust_pvalues
from cfx.analysis.stats.grid import REQUIRED_COLUMNS, SweepGrid
from cfx.analysis.stats.mixed import mixed_effects
from cfx.analysis.stats.noise_floor import noise_floor
from cfx.analysis.stats.paired import paired_tests

__all__ = ["effect_table", "NOISE_COLUMNS"]

NOISE_COLUMNS = ("estimate", "sd", "ci_low", "ci_high", "p_t", "d_z")
_CORRECTED = ("p_t", "p_wilcoxon")


def effect_table(
    table: pd.DataFrame,
    reference: Hashable,
    values: Sequence[Hashable] | None = None,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    random_state: int = 0,
    mixed: bool = True,
) -> pd.DataFrame:
    """Paired counterfactual effects with corrections, mixed model and noise floor.

    Parameters
    ----------
    table : DataFrame
        Tidy region metrics, as :func:`cfx.analysis.regions.region_table` returns (columns
        ``subject``, ``value``, ``seed``, ``region``, ``metric``, ``estimate``, optionally
        ``unit``). Every subject must have every compared value at every seed.
    reference : hashable
        The reference value (e.g. ``"no"``).
    values : sequence of hashable, optional
        Values to compare with ``reference``; by default every other value of the table, in order
        of appearance.
    confidence : float
        Level of every CI, in (0, 1).
    n_bootstrap : int
        Bootstrap resamples of the subjects (at least 100).
    random_state : int
        Seed of the bootstrap; every row resamples the same subjects.
    mixed : bool
        Fit the mixed model when the sweep has several seeds (one fit per row: turn off for
        speed on large families).

    Returns
    -------
    DataFrame
        One row per value x region x metric, in the metric's unit unless said otherwise:

        ================================= ========================================================
        column                            meaning
        ================================= ========================================================
        value, reference, region, metric  what is compared
        unit                              the metric's unit ("" when the table has none)
        n_subjects, n_seeds               sample sizes
        estimate, sd                      mean and SD of the per-subject Delta
        ci_low, ci_high                   t-based CI of the mean Delta
        boot_low, boot_high               bootstrap percentile CI
        bca_low, bca_high                 bootstrap BCa CI
        t, p_t                            paired t-test
        wilcoxon_w, p_wilcoxon            Wilcoxon signed-rank test
        n_positive, n_negative, p_sign    exact sign test
        d_z                               standardised effect (unitless)
        share_positive                    share of subjects with Delta > 0
        p_t_holm, p_t_fdr                 ``p_t`` adjusted over the family (Holm, BH)
        p_wilcoxon_holm, p_wilcoxon_fdr   ``p_wilcoxon`` adjusted likewise
        mixed_estimate, mixed_ci_low,     mean Delta of the mixed model of the per-seed
        mixed_ci_high, mixed_p            differences (subject random intercept; t test on
                                          n_subjects - 1 dof; NaN p when exact); several seeds
                                          and ``mixed`` only
        noise_estimate, noise_sd,         the same statistics on seed-vs-seed differences at
        noise_ci_low, noise_ci_high,      equal value, pooled over every compared value and the
        noise_p_t, noise_d_z              reference (several seeds only)
        note                              why a statistic is undefined, what was left out
        ================================= ========================================================

        Undefined statistics are NaN with the reason in ``note`` (see
        :mod:`cfx.analysis.stats.paired`); they are left out of the corrections.

    Raises
    ------
    ValueError
        If the table lacks a column, ``reference`` or a value is not in it, no value is left to
        compare, the pairing is incomplete (see :meth:`SweepGrid.from_table`), or there are fewer
        than 2 subjects.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"table: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
    present = list(pd.unique(table["value"]))
    if reference not in present:
        raise ValueError(f"reference: {reference!r} is not in the table's values {present}")
    values = [v for v in present if v != reference] if values is None else list(values)
    if not values or reference in values:
        raise ValueError(f"values: expected one or more values other than the reference "
                         f"{reference!r}, got {values}")
    grid = SweepGrid.from_table(table, [reference, *values])
    settings = {"confidence": confidence, "n_bootstrap": n_bootstrap,
                "random_state": random_state}
    several_seeds = grid.n_seeds > 1
    noise = noise_floor(grid, **settings) if several_seeds else None

    blocks = []
    for value in values:
        block = paired_tests(grid.deltas(value, reference), **settings)
        notes = [block.pop("note")]
        if several_seeds and mixed:
            fitted = mixed_effects(grid, value, reference, confidence=confidence)
            notes.append(fitted.pop("note"))
            block = block.join(fitted[["estimate", "ci_low", "ci_high", "p"]]
                               .add_prefix("mixed_"))
        if noise is not None:
            block = block.join(noise[list(NOISE_COLUMNS)].add_prefix("noise_"))
            notes.append(noise["note"].where(noise["note"] == "", "noise floor: " + noise["note"]))
        block["note"] = _join_notes(notes)
        block.insert(0, "unit", grid.units)
        block.insert(0, "n_seeds", grid.n_seeds)
        block.insert(0, "n_subjects", block.pop("n"))
        block.insert(0, "reference", [reference] * len(block))
        block.insert(0, "value", [value] * len(block))
        blocks.append(block)
    result = pd.concat(blocks).reset_index()
    for column in _CORRECTED:
        at = result.columns.get_loc(column) + 1
        result.insert(at, f"{column}_fdr", adjust_pvalues(result[column], "fdr"))
        result.insert(at, f"{column}_holm", adjust_pvalues(result[column], "holm"))
    front = ["value", "reference", "region", "metric"]
    return result[front + [c for c in result.columns if c not in front]]


def _join_notes(notes: list[pd.Series]) -> list[str]:
    rows = zip(*(n.tolist() for n in notes), strict=True)
    return ["; ".join(part for part in row if part) for row in rows]
