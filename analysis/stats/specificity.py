"""Specificity of a counterfactual effect: the target region's Δ beside its negative controls.

A learned edit can move the whole image (a global darkening) and still give a lung Δ with a tiny
p-value. Every target effect is therefore reported with the same statistic in the control
regions of :mod:`cfx.analysis.controls`, a verdict, and a shift-adjusted effect.

Verdict
-------
For one target row (value x region x metric) with mean Δ ``T`` and CI ``[t_low, t_high]``, and
the same metric's Δ in the controls that exclude the target (``outside-body`` and ``body``: the
``whole`` volume holds the target and is reported for scale only), each with mean ``C`` and
CI ``[c_low, c_high]``; ``r`` is the specificity ratio (default 0.25):

================ ============================================================================
verdict          when
================ ============================================================================
specific         the target's CI excludes 0 and every control's CI bound
                 ``max(|c_low|, |c_high|)`` is below ``r * |T|``
global shift     the target's CI excludes 0 and every control moves with it: same sign as
                 ``T`` and ``|C| >= (1 - r) * |T|``
leaky            the target's CI excludes 0 and neither of the above holds; or the target's CI
                 holds 0 while a control's CI excludes 0 (change only where it should not be)
no effect        the target's CI and every control's CI hold 0
n/a              a CI is undefined, or the metric is not in HU: a size (``n_voxels``,
                 ``volume``) the generator cannot change, or a share of voxels past a lung
                 threshold (``laa950``, ``band900_750``), which means something else in air
                 at -1000 HU or in soft tissue; judge those rows by the HU rows of the region
by construction  what would be ``specific`` when the controls were *held* to the input while
                 generating (keep-mask editing, ``held=True``): their Δ is 0 by design, so it
                 is no evidence that the effect stays where the attribute acts
================ ============================================================================

The *shift-adjusted* effect is the paired statistic of the per-subject difference
``Δ_target - Δ_body`` (same subject, value, seed and metric): what is left of the effect once a
shift the body shares is taken off. The raw Δ stays the headline.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd

from cfx.analysis.stats.effects import effect_table

__all__ = [
    "CONTROLS_JUDGED",
    "DEFAULT_RATIO",
    "JUDGED_UNITS",
    "VERDICTS",
    "adjusted_table",
    "beside_controls",
    "specificity_table",
    "verdict",
]

DEFAULT_RATIO = 0.25
CONTROLS_JUDGED = ("outside-body", "body")
VERDICTS = ("specific", "global shift", "leaky", "no effect", "n/a", "by construction")
JUDGED_UNITS = ("HU",)
_ADJUSTED_BY = "body"


def verdict(target: tuple[float, float, float], controls: Sequence[tuple[float, float, float]],
            ratio: float = DEFAULT_RATIO) -> str:
    """The specificity verdict of one effect (rule in the module docstring).

    Parameters
    ----------
    target : tuple of 3 float
        ``(estimate, ci_low, ci_high)`` of the target's mean Δ, in the metric's unit.
    controls : sequence of tuple of 3 float
        The same for each control region, in the same unit.
    ratio : float
        Specificity ratio ``r``, in (0, 1).

    Returns
    -------
    str
        One of :data:`VERDICTS`.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"ratio: expected a fraction in (0, 1), got {ratio}")
    values = np.asarray([target, *controls], dtype=np.float64)
    if not controls or not np.isfinite(values).all():
        return "n/a"
    estimate, low, high = values[0]
    controls = values[1:]
    holds_zero = (controls[:, 1] <= 0) & (controls[:, 2] >= 0)
    if low <= 0 <= high:
        return "no effect" if holds_zero.all() else "leaky"
    size = abs(estimate)
    bound = np.abs(controls[:, 1:]).max(axis=1)
    if (bound < ratio * size).all():
        return "specific"
    if ((np.sign(controls[:, 0]) == np.sign(estimate))
            & (np.abs(controls[:, 0]) >= (1 - ratio) * size)).all():
        return "global shift"
    return "leaky"


def adjusted_table(table: pd.DataFrame, controls: pd.DataFrame,
                   by: str = _ADJUSTED_BY) -> pd.DataFrame:
    """Tidy table of each target region's metric minus the control region ``by``'s.

    Parameters
    ----------
    table : DataFrame
        Tidy target-region metrics (columns of :data:`cfx.analysis.regions.TABLE_COLUMNS`).
    controls : DataFrame
        Tidy control-region metrics of the same subjects, values and seeds.
    by : str
        The control region subtracted.

    Returns
    -------
    DataFrame
        ``table``'s columns and rows (those with a matching control row), ``estimate`` replaced
        by target minus control, in the metric's unit.
    """
    keys = ["subject", "value", "seed", "metric"]
    control = controls.loc[controls["region"] == by, [*keys, "estimate"]]
    if control.empty:
        raise ValueError(f"controls: no rows of region {by!r}")
    joined = table.merge(control, on=keys, suffixes=("", "_control"), validate="many_to_one")
    joined["estimate"] = joined["estimate"] - joined.pop("estimate_control")
    return joined[list(table.columns)]


def specificity_table(
    table: pd.DataFrame,
    controls: pd.DataFrame,
    reference: Hashable,
    *,
    ratio: float = DEFAULT_RATIO,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    random_state: int = 0,
    held: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Target effects with their controls' Δ, a verdict and the shift-adjusted Δ.

    Parameters
    ----------
    table : DataFrame
        Tidy target-region metrics, as :func:`cfx.analysis.regions.region_table` returns.
    controls : DataFrame
        Tidy metrics of the control regions of the same subjects, values and seeds, e.g. from
        :func:`cfx.analysis.controls.control_labels` label maps: ``body`` (required) and any of
        ``outside-body`` and ``whole``. The verdict judges the :data:`CONTROLS_JUDGED` that are
        present (a volume cropped inside the body has no outside-body air).
    reference : hashable
        The reference value.
    ratio : float
        Specificity ratio ``r`` of the verdict, in (0, 1).
    confidence, n_bootstrap, random_state
        As in :func:`cfx.analysis.stats.effects.effect_table`.
    held : bool
        The judged controls were held to the input while generating: ``specific`` reads
        ``by construction``.

    Returns
    -------
    effects : DataFrame
        :func:`~cfx.analysis.stats.effects.effect_table` of ``table`` (corrections over the target
        family only), then for each control region ``c`` (hyphens written as underscores):
        ``<c>_estimate``, ``<c>_ci_low``, ``<c>_ci_high`` (mean Δ and CI, in the metric's unit),
        ``adjusted_estimate``, ``adjusted_ci_low``, ``adjusted_ci_high`` (Δ target − Δ body),
        ``verdict`` (one of :data:`VERDICTS`) and ``specificity_ratio``.
    control_effects : DataFrame
        :func:`~cfx.analysis.stats.effects.effect_table` of ``controls`` (every statistic of the
        control regions, corrected over their own family).
    """
    if not 0 < ratio < 1:
        raise ValueError(f"ratio: expected a fraction in (0, 1), got {ratio}")
    if _ADJUSTED_BY not in set(controls["region"]):
        raise ValueError(f"controls: no rows of region {_ADJUSTED_BY!r}; it adjusts the effects")
    settings = {"confidence": confidence, "n_bootstrap": n_bootstrap,
                "random_state": random_state}
    effects = effect_table(table, reference, **settings)
    control_effects = effect_table(controls, reference, mixed=False, **settings)
    adjusted = effect_table(adjusted_table(table, controls), reference, mixed=False, **settings)
    keys = ["value", "region", "metric"]
    shown = ["estimate", "ci_low", "ci_high"]
    effects = beside_controls(effects, control_effects, shown, ["value", "metric"], ratio)
    effects = effects.merge(adjusted[[*keys, *shown]].rename(
        columns={c: "adjusted_" + c for c in shown}), on=keys, how="left")
    effects["specificity_ratio"] = ratio
    if held:
        effects["verdict"] = effects["verdict"].replace("specific", "by construction")
    return effects, control_effects


def beside_controls(frame: pd.DataFrame, controls: pd.DataFrame, columns: Sequence[str],
                    on: Sequence[str], ratio: float = DEFAULT_RATIO) -> pd.DataFrame:
    """Put each control region's statistic beside the target's and add the verdict.

    Parameters
    ----------
    frame : DataFrame
        Target rows with ``unit`` and ``columns``: an estimate and its CI, e.g.
        ``("estimate", "ci_low", "ci_high")`` or ``("slope", "slope_ci_low", "slope_ci_high")``.
    controls : DataFrame
        The same statistic of the control regions, with a ``region`` column.
    columns : sequence of 3 str
        Names of the estimate and its CI bounds, in both frames.
    on : sequence of str
        Columns that match a target row with its control rows (e.g. ``("value", "metric")``).
    ratio : float
        Specificity ratio of :func:`verdict`.

    Returns
    -------
    DataFrame
        ``frame`` with ``<region>_<column>`` for every control region (hyphens written as
        underscores) and ``verdict`` (:data:`VERDICTS`; ``"n/a"`` outside :data:`JUDGED_UNITS`).
    """
    columns, on = list(columns), list(on)
    regions = list(pd.unique(controls["region"]))
    for region in regions:
        block = controls.loc[controls["region"] == region, [*on, *columns]]
        prefix = region.replace("-", "_") + "_"
        frame = frame.merge(block.rename(columns={c: prefix + c for c in columns}), on=on,
                            how="left")
    judged = [[f"{region.replace('-', '_')}_{c}" for c in columns] for region in CONTROLS_JUDGED
              if region in regions]
    frame["verdict"] = [
        verdict(tuple(row[columns]), [tuple(row[names]) for names in judged], ratio)
        if row["unit"] in JUDGED_UNITS else "n/a"
        for _, row in frame.iterrows()]
    return frame
