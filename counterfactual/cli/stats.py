"""``cfx stats``: region HU shifts of a sweep beside the noise floor, voxel maps, and the
observational comparison of a cohort's real CTs with its concordance to the counterfactual effect.

Three ways to call it::

    cfx stats RUN                              counterfactual: paired effects, noise floor, maps
    cfx stats --cohort DIR --attribute A       observational: Welch, Mann-Whitney, OLS on real CTs
    cfx stats RUN --cohort DIR                 both, and their concordance side by side

Every paired effect of a run goes out beside the same statistic in the negative-control regions
of :mod:`cfx.analysis.controls` (body, air outside the body, whole volume), a specificity verdict
and the body-adjusted effect (:mod:`cfx.analysis.stats.specificity`): in the terminal,
``effects.csv``, ``summary.json`` and, through them, every report. ``controls.csv`` holds the
controls' full statistics and ``control_regions.csv`` their per-volume metrics.

``--covariates`` adjusts the observational OLS; with a RUN but no ``--cohort`` the run's own
cohort (``settings.cohort`` of its manifest) supplies the real CTs and the clinical columns.

This module parses the options and prints the tables; :func:`cfx.counterfactual.stats.run_stats`
computes and writes everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import typer
from rich import box
from rich.table import Table

from cfx.analysis.regions import ZONES
from cfx.analysis.stats.specificity import DEFAULT_RATIO
from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import (
    device_option,
    label_vocabulary,
    labels_option,
    no_verify_option,
    quiet_option,
)
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.progress import console, stdout_console
from cfx.counterfactual.run_folder import NOT_VERIFIED
from cfx.counterfactual.stats import StatsConfig, StatsResult, run_stats

_HEADLINE = ("mean", "pd15", "laa950")


@app.command()
def stats(
    run: Path | None = typer.Argument(None, help="Run folder made by cfx sweep (optional when "
                                                 "--cohort is given)."),
    cohort: Path | None = typer.Option(
        None, "--cohort", help="Cohort with real CTs (ct/<id>.nii.gz): observational comparison "
                               "of the attribute; with RUN also its concordance with the "
                               "counterfactual effect."),
    attribute: str | None = typer.Option(
        None, "--attribute", "-a", help="Attribute compared in --cohort (default: the run's)."),
    region: list[str] = typer.Option(["lung"], "--region", help="Region to measure (repeatable)."),
    zones: bool = typer.Option(True, "--zones/--no-zones", metavar="",
                               help="Also upper/middle/lower thirds of each region."),
    reference: str | None = typer.Option(
        None, "--reference", help="Value every other value is compared with (default: the run's "
                                  "reference; for --cohort alone the first level in sort order)."),
    covariates: str | None = typer.Option(
        None, "--covariates", help="Comma-separated clinical columns, e.g. age,sex, adjusting the "
                                   "observational OLS. The paired counterfactual tests need no "
                                   "adjustment (each subject is its own control). With RUN and no "
                                   "--cohort, the run's cohort supplies the real CTs."),
    voxelwise: bool = typer.Option(False, "--voxelwise", metavar="",
                                   help="Sign-flip permutation maps "
                                                              "of the run."),
    permutations: int = typer.Option(5000, "--permutations", help="Sign flips for voxel maps "
                                                                  "(all distinct ones, exact, "
                                                                  "when they are fewer)."),
    tail: Literal["none", "gamma", "gpd"] = typer.Option(
        "none", "--tail", help="Fit a tail to the permutation maxima (max-T and TFCE) for "
                               "FWE p-values below 1/permutations; counting when the fit is "
                               "poor (needs >= 100 permutations)."),
    tfce: bool = typer.Option(False, "--tfce", metavar="", help="Also TFCE with its own FWE p-map "
                                                    "(needs --voxelwise)."),
    device: str = device_option("Where the voxel maps' max-T sign-flip products run: cuda on a "
                                "GPU (torch), cpu in numpy; auto: a GPU if one is visible."),
    specificity_ratio: float = typer.Option(
        DEFAULT_RATIO, "--specificity-ratio",
        help="A run's effect is 'specific' when every negative control (body, air outside the "
             "body) stays below this fraction of it."),
    labels: Path | None = labels_option(),
    no_verify: bool = no_verify_option(),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/stats, or "
                                                        "<cohort>/stats without a RUN)."),
    quiet: bool = quiet_option("No progress bar or tables."),
) -> None:
    """Region metrics, paired effects of each value vs the reference beside the noise floor,
    voxelwise FWE maps, and observational tests of real CTs with their concordance."""
    config = StatsConfig(
        run=run, cohort=cohort, attribute=attribute, regions=tuple(region), zones=zones,
        reference=reference, covariates=tuple(_split(covariates)), voxelwise=voxelwise,
        permutations=permutations, tail=tail, tfce=tfce, device=device,
        specificity_ratio=specificity_ratio,
        labels=label_vocabulary(labels), verify=not no_verify, out=out, quiet=quiet)
    result = run_stats(config, note=None if quiet else (
        lambda line: console.print(line, markup=False, soft_wrap=True)))
    if no_verify and run is not None:
        console.print(f"warning: {NOT_VERIFIED}", markup=False, soft_wrap=True)
    if quiet:
        return
    _show(result)
    then = f"; next: cfx audit {run}" if run is not None else ""
    console.print(f"statistics written to {result.destination}{then}", markup=False)


def _split(text: str | None) -> list[str]:
    if text is None:
        return []
    names = [name.strip() for name in text.split(",")]
    if "" in names or len(set(names)) < len(names):
        raise UserInputError(f"--covariates: {text!r} must be distinct comma-separated column "
                             "names, e.g. age,sex")
    return names


def _show(result: StatsResult) -> None:
    """The tables of ``result`` on stdout, each followed by its caption."""
    attribute, adjust = result.attribute, list(result.covariates)
    shown = []
    if result.effects is not None:
        shown.append(_effects_table(result.effects, attribute, result.n_seeds))
        shown.append(_controls_table(result.effects, attribute))
        if result.dose is not None:
            shown.append(_dose_table(result.dose, attribute))
    if result.observed is not None:
        shown.append(_observed_table(result.observed, attribute, adjust, result.counts))
    if result.agreement is not None:
        shown.append(_concordance_table(result.agreement, attribute, adjust))
    screen = stdout_console()
    for rendered, caption in shown:  # the caption as plain lines: a narrow table would wrap it
        screen.print(rendered)
        screen.print(caption, markup=False)


# --- tables on an 80-column terminal ----------------------------------------------------------

def _interval(estimate: float, low: float, high: float) -> str:
    if pd.isna(estimate):
        return "n/a"
    low, estimate, high = (round(x, 1) + 0.0 for x in (low, estimate, high))  # no "-0.0"
    return f"{estimate:+.1f} [{low:+.1f}, {high:+.1f}]"


def _headline(frame: pd.DataFrame) -> pd.DataFrame:
    """The headline metrics; each region followed by its zones, then :data:`_HEADLINE` order."""
    rows = frame[frame["metric"].isin(_HEADLINE)]
    base = rows["region"].str.replace(r"-(upper|middle|lower)$", "", regex=True)
    zone = rows["region"].str.extract(r"-(upper|middle|lower)$")[0].map(
        {z: i + 1 for i, z in enumerate(ZONES)}).fillna(0)
    order = {name: i for i, name in enumerate(pd.unique(base))}
    key = (base.map(order) * 4 + zone) * len(_HEADLINE) + rows["metric"].map(
        {m: i for i, m in enumerate(_HEADLINE)})
    return rows.iloc[np.argsort(key.to_numpy(), kind="stable")]


def _p(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.2g}"


def _metric(metric: str, unit: str) -> str:
    return f"{metric} {unit}".strip()


def _table(title: str) -> Table:
    """A table without side borders, so five columns of intervals fit 80 columns."""
    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def _effects_table(effects: pd.DataFrame, attribute: str,
                   n_seeds: int) -> tuple[Table, str]:
    rows = _headline(effects)
    several = rows["value"].nunique() > 1
    title = f"{attribute}: paired Δ (value - {rows['reference'].iloc[0]}), 95 % CI"
    if not several:
        title = f"{attribute}: {rows['value'].iloc[0]} - {rows['reference'].iloc[0]}, paired Δ"
    ratio = rows["specificity_ratio"].iloc[0]
    caption = (f"verdict: specific = body and outside air stay below {ratio:.0%} of Δ "
               "(table below)\n")
    if (rows["verdict"] == "by construction").any():
        caption += ("verdict: by construction = the sweep held every voxel outside the edit "
                    "region to the subject's CT (--keep-outside): the controls are 0 by design, "
                    "no evidence of specificity\n")
    caption += ("noise floor: seed-vs-seed Δ at equal value, ± half its 95 % CI" if n_seeds > 1
                else "noise floor: the run has one seed; sweep with --seeds 0,1,... to measure it")
    noted = int((rows["note"] != "").sum())
    if noted:
        caption += f"\n{noted} row(s) have a note: see effects.csv"
    table = _table(title)
    if several:
        table.add_column("value")
    for column in ("region", "metric", "Δ [95% CI]", "p Holm", "verdict"):
        table.add_column(column, no_wrap=True)
    if n_seeds > 1:
        table.add_column("noise", no_wrap=True)
    for row in rows.itertuples():
        cells = [str(row.value)] if several else []
        cells += [row.region, _metric(row.metric, row.unit),
                  _interval(row.estimate, row.ci_low, row.ci_high), _p(row.p_t_holm),
                  row.verdict]
        if n_seeds > 1:
            cells.append(_spread(row.noise_estimate, row.noise_ci_low, row.noise_ci_high))
        table.add_row(*cells)
    return table, caption


def _controls_table(effects: pd.DataFrame, attribute: str) -> tuple[Table, str]:
    rows = _headline(effects)
    several = rows["value"].nunique() > 1
    table = _table(f"{attribute}: the same Δ in the negative controls, ± half the 95 % CI")
    if several:
        table.add_column("value")
    for column in ("region", "metric", "body", "outside body", "whole", "adjusted Δ"):
        table.add_column(column, no_wrap=True)
    for _, row in rows.iterrows():
        cells = [str(row["value"])] if several else []
        cells += [row["region"], _metric(row["metric"], row["unit"])]
        cells += [_spread(*(row.get(f"{prefix}_{s}", np.nan) for s in ("estimate", "ci_low",
                                                                        "ci_high")))
                  for prefix in ("body", "outside_body", "whole", "adjusted")]
        table.add_row(*cells)
    caption = ("body: inside the body outline less lungs and airway (+2 voxels)\n"
               "outside body: air connected to the volume's faces; whole: every voxel\n"
               "adjusted Δ: Δ region - Δ body, paired per subject (the raw Δ is the headline)")
    if "outside_body_estimate" not in effects:
        caption += "\noutside body: n/a, some volumes have no air around the body"
    return table, caption


def _dose_table(dose: pd.DataFrame, attribute: str) -> tuple[Table, str]:
    rows = _headline(dose.assign(note=dose["note"].fillna("")))
    table = _table(f"{attribute}: dose-response, {rows['slope_unit'].iloc[0]}, 95 % CI")
    for column in ("region", "metric", "slope [95% CI]", "p", "linear p", "body", "verdict"):
        table.add_column(column, no_wrap=True)
    for _, row in rows.iterrows():
        table.add_row(row["region"], row["metric"],
                      _interval(row["slope"], row["slope_ci_low"], row["slope_ci_high"]),
                      _p(row["slope_p"]), _p(row["linearity_f_p"]),
                      _spread(row.get("body_slope", np.nan), row.get("body_slope_ci_low", np.nan),
                              row.get("body_slope_ci_high", np.nan)), row["verdict"])
    caption = ("slope: mixed model, subject random intercept; linear p: lack-of-fit F test "
               "(small: not a line)\nbody: the same slope in the body control; verdict as "
               "above; all rows in dose_response.csv")
    exact = int(rows["note"].str.startswith("exact").sum())
    if exact:
        caption += f"\n{exact} row(s) are exact (no variance): no p-value"
    return table, caption


def _spread(estimate: float, low: float, high: float) -> str:
    """``estimate ± half-width`` of a CI, or n/a."""
    if pd.isna(estimate) or pd.isna(low) or pd.isna(high):
        return "n/a"
    return f"{round(estimate, 1) + 0.0:+.1f} ± {round((high - low) / 2, 1) + 0.0:.1f}"


def _observed_table(observed: pd.DataFrame, attribute: str, covariates: list[str],
                    counts: dict) -> tuple[Table, str]:
    rows = _headline(observed)
    categorical = not rows["level"].isna().all()
    left_out = counts["total"] - counts["used"]
    caption = (f"real CTs of {counts['used']}/{counts['total']} subjects; {left_out} left out "
               f"({counts['without_attribute']} no {attribute}, {counts['without_ct']} no CT)")
    noted = int((rows["note"] != "").sum())
    if noted:
        caption += f"\n{noted} row(s) have a note: see observational.csv"
    adjusted = f"adj. {','.join(covariates)}" if covariates else "OLS"
    title = (f"{attribute} observed: level - {rows['reference'].iloc[0]}" if categorical else
             f"{attribute} observed: Δ per unit")
    table = _table(title)
    if categorical and rows["level"].nunique() > 1:
        table.add_column("level")
    for column in ("region", "metric", "naive Δ [95% CI]", f"{adjusted} Δ", "p Holm"):
        table.add_column(column, no_wrap=True)
    for row in rows.itertuples():
        cells = [str(row.level)] if categorical and rows["level"].nunique() > 1 else []
        cells += [row.region, _metric(row.metric, row.unit),
                  _interval(row.naive_estimate, row.naive_ci_low, row.naive_ci_high),
                  _interval(row.estimate, row.ci_low, row.ci_high), _p(row.p_holm)]
        table.add_row(*cells)
    return table, caption


def _concordance_table(agreement: pd.DataFrame, attribute: str,
                       covariates: list[str]) -> tuple[Table, str]:
    rows = _headline(agreement)
    adjust = f"adj. {','.join(covariates)}" if covariates else "unadjusted"
    table = _table(f"{attribute}: counterfactual vs observed ({adjust}), 95 % CI")
    several = rows["value"].nunique() > 1
    if several:
        table.add_column("value")
    for column in ("region", "metric", "counterfactual", "observed", "overlap"):
        table.add_column(column, no_wrap=True)
    for row in rows.itertuples():
        cells = [str(row.value)] if several else []
        cells += [row.region, _metric(row.metric, row.unit),
                  _interval(row.cf_estimate, row.cf_ci_low, row.cf_ci_high),
                  _interval(row.obs_estimate, row.obs_ci_low, row.obs_ci_high),
                  "yes" if row.cis_overlap else "no"]
        table.add_row(*cells)
    return table, "overlap: whether the two 95 % CIs overlap"

