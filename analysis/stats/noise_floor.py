"""The noise floor: what changing only the seed does to a region metric.

A counterfactual shift is only evidence if it is larger than what the generator's randomness alone
produces. The noise floor applies the very statistics of
:func:`cfx.analysis.stats.paired.paired_test` to seed-vs-seed differences at equal value (see
:meth:`cfx.analysis.stats.grid.SweepGrid.seed_deltas`: per subject, the mean over values and over
seeds ``k >= 1`` of ``metric(seed k) - metric(seed 0)``), so every effect can be printed beside its
chance-only counterpart.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pandas as pd

from cfx.analysis.stats.grid import SweepGrid
from cfx.analysis.stats.paired import paired_tests

__all__ = ["noise_floor"]


def noise_floor(
    grid: SweepGrid,
    values: Sequence[Hashable] | None = None,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    random_state: int = 0,
) -> pd.DataFrame:
    """Paired statistics of seed-vs-seed differences, per region x metric.

    Parameters
    ----------
    grid : SweepGrid
        With at least 2 seeds and 2 subjects.
    values : sequence of hashable, optional
        Values whose seed-vs-seed differences are pooled; all of the grid's values by default.
    confidence, n_bootstrap, random_state
        As in :func:`cfx.analysis.stats.paired.paired_tests`.

    Returns
    -------
    DataFrame, shape (n_columns, len(PairedTest fields))
        Index: ``(region, metric)``; columns: the :class:`~cfx.analysis.stats.paired.PairedTest`
        fields, in the metric's unit. ``estimate`` near 0 with a CI covering 0 is what a sound
        generator gives; the CI width is the resolution below which an effect is noise.

    Raises
    ------
    ValueError
        If the grid has a single seed, ``values`` names a value the grid lacks, or as
        :func:`~cfx.analysis.stats.paired.paired_tests`.
    """
    values = list(grid.values if values is None else values)
    unknown = [v for v in values if v not in grid.values]
    if not values or unknown:
        raise ValueError(f"values: expected values among the grid's {list(grid.values)}, got "
                         f"{values}")
    return paired_tests(grid.seed_deltas(values), confidence=confidence,
                        n_bootstrap=n_bootstrap, random_state=random_state)
