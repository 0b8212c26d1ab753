"""The complete subject x seed x value grid of a sweep's region metrics, checked for pairing.

A paired comparison needs every subject at every seed for every value compared, for every region
and metric. :meth:`SweepGrid.from_table` turns the tidy table of
:func:`cfx.analysis.regions.region_table` into dense arrays and refuses a table with holes or
repeats (a subject missing a value, a seed missing for one subject), naming what is missing, rather
than silently dropping pairs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SweepGrid", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("subject", "value", "seed", "region", "metric", "estimate")
_KEYS = ["subject", "seed", "value", "region", "metric"]


@dataclass(frozen=True, eq=False)
class SweepGrid:
    """Region metrics of a sweep as dense arrays.

    Attributes
    ----------
    subjects : tuple
        Subject ids, sorted.
    seeds : tuple of int
        Seeds, sorted; ``seeds[0]`` is the baseline of the noise floor.
    values : tuple
        Attribute values held, in the order asked for.
    columns : pandas.MultiIndex
        ``(region, metric)`` of each test column, sorted.
    units : tuple of str
        Unit of each column (empty strings when the table has no ``unit`` column).
    data : dict of value to ndarray of float64, shape (n_subjects, n_seeds, n_columns)
        The estimates.
    """

    subjects: tuple
    seeds: tuple
    values: tuple
    columns: pd.MultiIndex
    units: tuple
    data: dict

    @classmethod
    def from_table(cls, table: pd.DataFrame, values: Sequence[Hashable]) -> SweepGrid:
        """Build the grid of ``values`` from a tidy region table.

        Parameters
        ----------
        table : DataFrame
            Columns ``subject``, ``value``, ``seed``, ``region``, ``metric``, ``estimate``
            (float, finite) and optionally ``unit``; one row per subject x value x seed x region x
            metric, as :func:`cfx.analysis.regions.region_table` returns. Rows of other values are
            ignored.
        values : sequence of hashable
            The attribute values to hold, at least one, all distinct.

        Returns
        -------
        SweepGrid

        Raises
        ------
        ValueError
            If a column is missing, a value is absent from the table or repeated, a
            subject/seed/value/region/metric appears twice, an estimate is not finite, or the grid
            has holes (mismatched pairing: a subject missing a value or a seed, a region or metric
            missing for some items).
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"table: missing column(s) {missing}; expected "
                             f"{list(REQUIRED_COLUMNS)}, as cfx.analysis.regions.region_table "
                             "returns")
        values = list(values)
        if not values or len(set(values)) != len(values):
            raise ValueError(f"values: expected one or more distinct values, got {values}")
        present = list(pd.unique(table["value"]))
        absent = [v for v in values if v not in present]
        if absent:
            raise ValueError(f"values: {absent} not in the table's values {present}")
        rows = table[table["value"].isin(values)]
        repeated = rows.duplicated(_KEYS)
        if repeated.any():
            first = rows.loc[repeated, _KEYS].iloc[0].to_dict()
            raise ValueError(f"table: {int(repeated.sum())} row(s) repeat a subject/seed/value/"
                             f"region/metric, e.g. {first}; each must appear once")
        estimate = rows["estimate"].to_numpy(dtype=np.float64)
        if not np.isfinite(estimate).all():
            first = rows.loc[~np.isfinite(estimate), _KEYS].iloc[0].to_dict()
            raise ValueError(f"table: {int((~np.isfinite(estimate)).sum())} estimate(s) are not "
                             f"finite, e.g. {first}")
        return cls._from_rows(rows, values)

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def deltas(self, value: Hashable, reference: Hashable) -> pd.DataFrame:
        """Per-subject Delta = value - reference at the same seed, averaged over seeds.

        Returns
        -------
        DataFrame of float64, shape (n_subjects, n_columns)
            Index: subjects; columns: ``(region, metric)``; in the metric's unit.
        """
        delta = (self.data[value] - self.data[reference]).mean(axis=1)
        return pd.DataFrame(delta, index=pd.Index(self.subjects, name="subject"),
                            columns=self.columns)

    def seed_deltas(self, values: Sequence[Hashable]) -> pd.DataFrame:
        """Per-subject seed-vs-seed Delta at equal value: the noise floor's input.

        For each subject: the mean over ``values`` and over seeds ``k = seeds[1:]`` of
        ``metric(value, seed k) - metric(value, seeds[0])``. It has the same shape as
        :meth:`deltas` and would be centred on 0 if nothing but the seed moved the metric.

        Returns
        -------
        DataFrame of float64, shape (n_subjects, n_columns)

        Raises
        ------
        ValueError
            If the grid holds a single seed.
        """
        if self.n_seeds < 2:
            raise ValueError(f"seeds: the noise floor needs at least 2 seeds per subject, the "
                             f"table has {list(self.seeds)}")
        stacked = np.stack([self.data[v] for v in values])
        delta = (stacked[:, :, 1:, :] - stacked[:, :, :1, :]).mean(axis=(0, 2))
        return pd.DataFrame(delta, index=pd.Index(self.subjects, name="subject"),
                            columns=self.columns)

    @classmethod
    def _from_rows(cls, rows: pd.DataFrame, values: list) -> SweepGrid:
        subjects = sorted(rows["subject"].drop_duplicates().tolist())
        seeds = sorted(rows["seed"].drop_duplicates().tolist())
        columns = pd.MultiIndex.from_frame(
            rows[["region", "metric"]].drop_duplicates().sort_values(["region", "metric"]))
        full = pd.MultiIndex.from_product([subjects, seeds, values], names=_KEYS[:3])
        wide = (rows.set_index(_KEYS)["estimate"].unstack(["region", "metric"])
                .reindex(index=full, columns=columns))
        holes = wide.isna()
        if holes.any().any():
            where = holes.stack(["region", "metric"])
            where = where[where].index[:3].tolist()
            raise ValueError(
                f"table: mismatched pairing, {int(holes.sum().sum())} subject/seed/value/region/"
                f"metric combination(s) are missing, e.g. (subject, seed, value, region, metric) "
                f"= {where}; every subject needs every value at every seed"
            )
        cube = wide.to_numpy().reshape(len(subjects), len(seeds), len(values), len(columns))
        units = ("",) * len(columns)
        if "unit" in rows.columns:
            unit = rows.drop_duplicates(["region", "metric"]).set_index(["region", "metric"])
            units = tuple(str(u) for u in unit["unit"].reindex(columns))
        return cls(tuple(subjects), tuple(seeds), tuple(values), columns, units,
                   {v: cube[:, :, i, :] for i, v in enumerate(values)})
