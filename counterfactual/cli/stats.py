"""``cfx stats``: region HU shifts of a sweep beside the noise floor, voxel maps, and the
observational comparison of a cohort's real CTs with its concordance to the counterfactual effect.

Three ways to call it::

    cfx stats RUN                              counterfactual: paired effects, noise floor, maps
    cfx stats --cohort DIR --attribute A       observational: Welch, Mann-Whitney, OLS on real CTs
    cfx stats RUN --cohort DIR                 both, and their concordance side by side

Every paired effect of a run goes out beside the same statistic in the negative-control regions
of :mod:`analysis.controls` (body, air outside the body, whole volume), a specificity verdict and
the body-adjusted effect (:mod:`analysis.stats.specificity`): in the terminal, ``effects.csv``,
``summary.json`` and, through them, every report. ``controls.csv`` holds the controls' full
statistics and ``control_regions.csv`` their per-volume metrics.

``--covariates`` adjusts the observational OLS; with a RUN but no ``--cohort`` the run's own
cohort (``settings.cohort`` of its manifest) supplies the real CTs and the clinical columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import typer
from rich import box
from rich.table import Table

from analysis.controls import CONTROL_REGIONS, control_labels
from analysis.permutation import one_sample_permutation
from analysis.regions import ZONES, RegionItem, region_table
from analysis.statmaps import FLOAT32_HU_RESOLUTION, StatMap, stat_maps
from analysis.stats.dose_response import PER_DECADE, dose_response
from analysis.stats.observational import cohort_effects, concordance
from analysis.stats.specificity import DEFAULT_RATIO, beside_controls, specificity_table
from counterfactual.atomic import check_writable, staged_dir
from counterfactual.attributes import DEFAULT_ATTRIBUTES, canonicalize_record
from counterfactual.cli.app import app
from counterfactual.cohort import Cohort, Subject, load_cohort
from counterfactual.errors import UserInputError
from counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary, load_vocabulary
from counterfactual.progress import console, stdout_console, track
from counterfactual.run_folder import NOT_VERIFIED, RunFolder
from counterfactual.sweep.manifest import write_json
from counterfactual.sweep.naming import value_label
from counterfactual.volume import (
    Volume,
    check_same_grid,
    read_labels,
    read_volume,
    write_stat_map,
)

_HEADLINE = ("mean", "pd15", "laa950")
_FORMAT = "cfx-stats/1"


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
    specificity_ratio: float = typer.Option(
        DEFAULT_RATIO, "--specificity-ratio",
        help="A run's effect is 'specific' when every negative control (body, air outside the "
             "body) stays below this fraction of it."),
    labels: Path | None = typer.Option(None, "--labels", help="Label vocabulary JSON file."),
    no_verify: bool = typer.Option(False, "--no-verify", metavar="",
                                   help="Read the run's volumes without checking them against "
                                        "the sha256 its manifest recorded (said in the output)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/stats, or "
                                                        "<cohort>/stats without a RUN)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="",
                               help="No progress bar or tables."),
) -> None:
    """Region metrics, paired effects of each value vs the reference beside the noise floor,
    voxelwise FWE maps, and observational tests of real CTs with their concordance."""
    # 1. check the options that need no file
    if run is None and cohort is None:
        raise UserInputError("give a RUN folder made by cfx sweep, --cohort DIR, or both")
    if permutations < 1:
        raise UserInputError(f"--permutations: must be >= 1, got {permutations}")
    if not 0 < specificity_ratio < 1:
        raise UserInputError(f"--specificity-ratio: must be a fraction in (0, 1), got "
                             f"{specificity_ratio}")
    if tfce and not voxelwise:
        raise UserInputError("--tfce: TFCE maps are voxelwise; add --voxelwise")
    if tail != "none" and not voxelwise:
        raise UserInputError("--tail: the tail fit is of the voxel maps' permutation maxima; add "
                             "--voxelwise")
    if run is None and voxelwise:
        raise UserInputError("--voxelwise: voxel maps compare the volumes of a run; give RUN")
    if run is None and attribute is None:
        raise UserInputError("--attribute: name the attribute to compare in --cohort, e.g. "
                             "--attribute smoking")
    vocabulary = DEFAULT_VOCABULARY if labels is None else load_vocabulary(labels)
    regions = {name: vocabulary.region_labels(name) for name in region}
    zone_regions = list(region) if zones else []
    adjust = _split(covariates)
    # 2. the run: its settings, the reference and the cohort it was made from
    folder = None
    if run is not None:
        folder = RunFolder.open(run, vocabulary, verify=not no_verify)
        folder.require_complete()
        if attribute is not None and attribute != folder.attribute:
            raise UserInputError(f"--attribute: the run sweeps {folder.attribute!r}, got "
                                 f"{attribute!r}; omit --attribute or use another run")
        attribute = folder.attribute
        run_reference = (folder.reference if reference is None
                         else _match(reference, folder.values, "--reference", str(run)))
        if cohort is None and adjust:
            cohort = folder.cohort
            if not any(s.ct is not None for s in load_cohort(cohort)):
                raise UserInputError(f"--covariates: they adjust the observational comparison, "
                                     f"which needs real CTs, and the run's cohort {cohort} has "
                                     "none; give --cohort DIR with CTs")
    plan = (None if cohort is None else
            _cohort_plan(cohort, attribute, adjust, reference if run is None else run_reference))
    destination = out if out is not None else (run if run is not None else cohort) / "stats"
    _check_destination(destination)
    if folder is not None:  # every volume read is checked against the manifest before any work
        folder.check(_run_files(folder, run_reference, voxelwise))
    # 3. counterfactual statistics of the run
    effects = dose = None
    if folder is not None:
        try:
            table, control_table = _run_tables(folder, run_reference, regions, zone_regions,
                                               quiet)
            effects, control_effects = specificity_table(table, control_table, run_reference,
                                                         ratio=specificity_ratio)
            dose = _dose_response(table, control_table, attribute, list(folder.values),
                                  specificity_ratio)
        except ValueError as exc:
            raise UserInputError(f"{run}: {exc}") from None
    # 4. observational statistics of the cohort's real CTs
    observed = cohort_table = None
    if plan is not None:
        cohort_table = _cohort_table(plan, regions, zone_regions, vocabulary, quiet)
        try:
            observed = cohort_effects(cohort_table, plan.clinical, attribute, adjust,
                                      reference=plan.reference)
        except ValueError as exc:
            raise UserInputError(f"{plan.cohort.source}: {exc}") from None
    agreement = (_concordance(effects, observed) if effects is not None and observed is not None
                 else None)
    # 5. write everything, then print the tables
    summary: dict = {"format": _FORMAT, "attribute": attribute, "regions": regions}
    with staged_dir(destination, replace=True) as staged:
        if effects is not None:
            table.to_csv(staged / "regions.csv", index=False)
            control_table.to_csv(staged / "control_regions.csv", index=False)
            effects.to_csv(staged / "effects.csv", index=False)
            control_effects.to_csv(staged / "controls.csv", index=False)
            if dose is not None:
                dose.to_csv(staged / "dose_response.csv", index=False)
                summary["dose_response"] = _records(dose)
            summary |= {"run": str(run), "verified": not no_verify, "reference": run_reference,
                        "n_seeds": len(folder.seeds), "specificity_ratio": specificity_ratio,
                        "control_regions": {r: CONTROL_REGIONS[r]
                                            for r in pd.unique(control_table["region"])},
                        "effects": _records(effects),
                        "controls": _records(control_effects)}
            if voxelwise:
                summary["voxelwise"] = _voxelwise(folder, staged, regions, run_reference,
                                                  permutations, tfce, quiet, tail)
        if observed is not None:
            cohort_table.to_csv(staged / "cohort_regions.csv", index=False)
            observed.to_csv(staged / "observational.csv", index=False)
            summary |= {"cohort": str(plan.cohort.source), "covariates": adjust,
                        "subjects": plan.counts, "observational": _records(observed)}
        if agreement is not None:
            agreement.to_csv(staged / "concordance.csv", index=False)
            summary["concordance"] = _records(agreement)
        write_json(staged / "summary.json", summary)
    if no_verify and folder is not None:
        console.print(f"warning: {NOT_VERIFIED}", markup=False, soft_wrap=True)
    if quiet:
        return
    shown = []
    if effects is not None:
        shown.append(_effects_table(effects, attribute, len(folder.seeds)))
        shown.append(_controls_table(effects, attribute))
        if dose is not None:
            shown.append(_dose_table(dose, attribute))
    if observed is not None:
        shown.append(_observed_table(observed, attribute, adjust, plan.counts))
    if agreement is not None:
        shown.append(_concordance_table(agreement, attribute, adjust))
    screen = stdout_console()
    for rendered, caption in shown:  # the caption as plain lines: a narrow table would wrap it
        screen.print(rendered)
        screen.print(caption, markup=False)
    then = f"; next: cfx audit {run}" if run is not None else ""
    console.print(f"statistics written to {destination}{then}", markup=False)


def _split(text: str | None) -> list[str]:
    if text is None:
        return []
    names = [name.strip() for name in text.split(",")]
    if "" in names or len(set(names)) < len(names):
        raise UserInputError(f"--covariates: {text!r} must be distinct comma-separated column "
                             "names, e.g. age,sex")
    return names


def _match(text: str, values: list, option: str, where: str):
    """The value of ``values`` that ``text`` names (as typed, as its file label, or as a number)."""
    for value in values:
        if text.strip() in (str(value), value_label(value)) or (
                isinstance(value, int | float) and _number(text) == value):
            return value
    raise UserInputError(f"{option}: {text!r} is not a value of {where}; its values are "
                         f"{', '.join(map(str, values))}")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _check_destination(folder: Path) -> None:
    """Refuse to replace a non-empty folder that is not an earlier ``cfx stats`` output."""
    if folder.is_file() or (folder.is_dir() and any(folder.iterdir())
                            and not (folder / "summary.json").is_file()):
        raise UserInputError(f"--out: {folder} exists and is not a cfx stats folder; choose a "
                             "new or empty folder")
    check_writable(folder, "--out", inside=False)


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


# --- the run ----------------------------------------------------------------------------------

def _run_files(run: RunFolder, reference, voxelwise: bool) -> list[Path]:
    """The run files :func:`_run_tables` and :func:`_voxelwise` read: every CT, and the
    difference maps when the voxel maps take them against the run's own reference."""
    keys = [(s, v, k) for s in run.subjects for k in run.seeds for v in run.values]
    files = [run.ct_path(*key) for key in keys]
    if voxelwise and reference == run.reference:
        files += [run.difference_path(*key) for key in keys if key[1] != reference]
    return files


def _run_tables(run: RunFolder, reference, regions: dict, zones: list[str],
                quiet: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Region metrics of every volume of the run in its target regions and in its control regions.

    The control regions of a subject and seed come from the volume the comparison is anchored
    to: the subject's own CT for a from-CT run, else the ``reference`` value's counterfactual.
    One subject's mask and one seed's volumes are in memory at a time.
    """
    from_ct = bool((run.sampling or {}).get("from_ct"))
    sources = {s.id: s.ct for s in load_cohort(run.cohort)} if from_ct else {}
    groups = [(name, seed) for name in run.subjects for seed in run.seeds]
    targets, controls = [], []
    subject = mask = None
    for name, seed in track(groups, "region metrics", quiet=quiet):
        if name != subject:
            subject, mask = name, run.mask(name)
        cts = {value: run.ct(name, value, seed) for value in run.values}
        for ct in cts.values():
            check_same_grid(ct, mask)
        anchor = _anchor(sources.get(name), cts[reference], mask) if from_ct else cts[reference]
        control = control_labels(anchor.data, mask.data)
        targets.append(region_table(
            [RegionItem(name, v, seed, ct.data, mask.data, ct.affine) for v, ct in cts.items()],
            regions, zones=zones))
        present = {region: members for region, members in CONTROL_REGIONS.items()
                   if np.isin(control, members).any()}
        controls.append(region_table(
            [RegionItem(name, v, seed, ct.data, control, ct.affine) for v, ct in cts.items()],
            present))
    controls = pd.concat(controls, ignore_index=True)
    complete = controls.groupby("region")["subject"].size() == len(controls[
        controls["region"] == "whole"])  # a control is kept when every volume has it
    if not complete.get("body", False):
        raise UserInputError(f"{run}: some volumes have no body voxels outside the lungs and "
                             "airway; the body control needs a field of view around the lungs")
    kept = complete[complete].index
    return (pd.concat(targets, ignore_index=True),
            controls[controls["region"].isin(kept)].reset_index(drop=True))


def _dose_response(table: pd.DataFrame, controls: pd.DataFrame, attribute: str, values: list,
                   ratio: float) -> pd.DataFrame | None:
    """Slopes of a numeric attribute swept at 3 or more values, each beside the same slope in
    the controls with a verdict (per decade for an attribute in years); None otherwise."""
    if len(values) < 3 or not all(isinstance(v, int | float) for v in values):
        return None
    kind = DEFAULT_ATTRIBUTES.attributes.get(attribute)
    unit = getattr(kind, "unit", "unit")
    options = {"per": PER_DECADE if unit == "years" else 1.0, "attribute_unit": unit}
    try:
        dose = dose_response(table, **options)
        control_dose = dose_response(controls, **options)
    except ValueError as exc:
        raise UserInputError(f"dose-response of {attribute}: {exc}") from None
    return beside_controls(dose, control_dose, ["slope", "slope_ci_low", "slope_ci_high"],
                           ["metric"], ratio)


def _anchor(path: Path | None, fallback: Volume, mask: Volume) -> Volume:
    """The subject's CT of a from-CT run (the reference counterfactual when it is gone)."""
    if path is None or not Path(path).is_file():
        return fallback
    ct = read_volume(path)
    check_same_grid(ct, mask)
    return ct


def _voxelwise(run: RunFolder, out: Path, regions: dict, reference, n_permutations: int,
               tfce: bool, quiet: bool, tail: str = "none") -> dict:
    """Sign-flip maps of every value vs ``reference`` over the union of the subjects' regions.

    Subjects are streamed: one volume is read at a time and only the tested voxels of each
    subject's seed-averaged difference are kept. Each map is written viewer-ready with its
    NIfTI intent and a JSON sidecar (:mod:`analysis.statmaps`: NaN t plus an ``exact`` map where
    t is infinite, -log10 p maps).
    """
    attribute, subjects, seeds = run.attribute, list(run.subjects), run.seeds
    members = sorted({label for labels in regions.values() for label in labels})
    grid = None
    for subject in subjects:  # the tested voxels: union of every subject's regions
        mask = run.mask(subject)
        if grid is None:
            grid, tested = mask, np.zeros(mask.shape, bool)
        _check_common_grid(grid, mask, subjects[0], subject)
        tested |= np.isin(mask.data, members)
    maps = {}
    for value in (v for v in run.values if v != reference):
        samples = np.empty((len(subjects), int(tested.sum())))
        for row, subject in enumerate(track(subjects, f"voxel maps {value}", quiet=quiet)):
            total = np.zeros(samples.shape[1])
            for seed in seeds:
                difference = run.difference(subject, value, seed, reference)
                _check_common_grid(grid, difference, subjects[0], subject)
                total += difference.data[tested]
            samples[row] = total / len(seeds)
        if tfce:
            _check_finite_t(samples)
            data = np.zeros((len(subjects),) + tested.shape)
            data[:, tested] = samples
            del samples
        else:
            data = samples
        try:
            result = one_sample_permutation(data, n_permutations=n_permutations, tfce=tfce,
                                            mask=tested if tfce else None, random_state=0,
                                            tail=tail)
        except ValueError as exc:
            raise UserInputError(f"--voxelwise: {exc}") from None
        contrast = f"{value_label(value)}-vs-{value_label(reference)}"
        described = (f"{attribute} {value} - {reference}, per subject, averaged over "
                     f"{len(seeds)} seed(s)")
        written = stat_maps(result, tested, description=described,
                            resolution=FLOAT32_HU_RESOLUTION)
        for stat_map in written:
            _write_stat_map(out / f"attr-{attribute}_contrast-{contrast}_stat-{stat_map.stat}",
                            stat_map, grid.affine)
        maps[contrast] = _voxelwise_summary(result, written, n_permutations)
        if not quiet:
            console.print(f"voxel maps {contrast}: {_flips_line(result)}", markup=False,
                          soft_wrap=True)
    return maps


def _write_stat_map(stem: Path, stat_map: StatMap, affine: np.ndarray) -> None:
    """``stem.nii.gz`` with the map's intent and ``stem.json`` with its sidecar."""
    write_stat_map(stem.with_name(stem.name + ".nii.gz"), stat_map.values, affine,
                   intent=stat_map.intent, intent_params=stat_map.intent_params,
                   intent_name=stat_map.intent_name)
    write_json(stem.with_name(stem.name + ".json"), stat_map.sidecar)


def _voxelwise_summary(result, written: list[StatMap], n_permutations: int) -> dict:
    """summary.json's entry for one contrast: flips, exhaustive or not, tail, counts."""
    t_sidecar = next(m.sidecar for m in written if m.stat == "t")
    entry = {"voxels_tested": t_sidecar["voxels_tested"],
             "voxels_exact": t_sidecar["voxels_exact"],
             "permutations": result.n_permutations, "permutations_requested": n_permutations,
             "exhaustive": result.exhaustive, "tail": result.tail,
             "tail_fit_accepted": None if result.tail_fit_t is None
             else result.tail_fit_t.accepted,
             "voxels_fwe_05": int(np.sum(result.p_fwe < 0.05)),
             "maps": [m.stat for m in written]}
    if result.tfce is not None:
        entry["voxels_tfce_fwe_05"] = int(np.sum(result.p_tfce < 0.05))
    return entry


def _flips_line(result) -> str:
    """How the sign flips were made, for the terminal."""
    if result.exhaustive:
        return (f"all {result.n_permutations} distinct sign flips of {result.n_subjects} "
                "subjects enumerated (exhaustive, exact p-values)")
    line = f"{result.n_permutations} random sign flips"
    if result.tail_fit_t is not None:
        line += (f", {result.tail} tail fit " + ("accepted" if result.tail_fit_t.accepted else
                                                 "rejected: p-values counted"))
    return line


def _check_finite_t(samples: np.ndarray) -> None:
    constant = np.all(samples == samples[:1], axis=0) & (samples[0] != 0)
    if constant.any():
        raise UserInputError(
            f"--tfce: {int(constant.sum())} tested voxels have the same non-zero difference in "
            "every subject (an exact generator such as the phantom oracle), so t is infinite and "
            "TFCE undefined; drop --tfce (the max-T maps handle it)")


def _check_common_grid(grid, volume, first: str, subject: str) -> None:
    if volume.shape != grid.shape or not np.allclose(volume.affine, grid.affine, atol=1e-3):
        raise UserInputError(f"--voxelwise: subject {subject} is on another grid than {first}; "
                             "voxelwise tests need subjects on a common grid (register them "
                             "first)")


# --- the cohort's real CTs --------------------------------------------------------------------

@dataclass(frozen=True)
class _CohortPlan:
    """The subjects of the observational comparison, their clinical frame and the reference."""

    cohort: Cohort
    used: list[Subject]
    attribute: str
    clinical: pd.DataFrame
    counts: dict
    reference: object


def _cohort_plan(path: Path, attribute: str, covariates: list[str], reference) -> _CohortPlan:
    """Check the cohort and its columns before any CT is read; subjects without the attribute or
    a CT are left out and counted."""
    cohort = load_cohort(path)
    cohort.check_columns([attribute], "--attribute")
    cohort.check_columns(covariates, "--covariates")
    if attribute in covariates:
        raise UserInputError(f"--covariates: {attribute!r} is the compared attribute; adjust for "
                             "other columns")
    if not any(s.ct is not None for s in cohort):
        raise UserInputError(f"{path}: the cohort has no CTs (ct/<id>.nii.gz or a 'ct' column); "
                             "the observational comparison needs real CTs")
    records = {s.id: canonicalize_record(s.record, DEFAULT_ATTRIBUTES, f"{cohort.source}, "
                                         f"subject {s.id}") for s in cohort}
    used = [s for s in cohort if s.ct is not None and attribute in records[s.id]]
    counts = {"total": len(cohort), "used": len(used),
              "without_attribute": sum(attribute not in records[s.id] for s in cohort),
              "without_ct": sum(s.ct is None for s in cohort)}
    clinical = pd.DataFrame([{"subject": s.id, **{c: records[s.id].get(c)
                                                  for c in (attribute, *covariates)}}
                             for s in used], columns=["subject", attribute, *covariates])
    clinical = clinical.infer_objects()
    return _CohortPlan(cohort, used, attribute, clinical, counts,
                       _level(reference, clinical[attribute], attribute))


def _cohort_table(plan: _CohortPlan, regions: dict, zones: list[str],
                  vocabulary: LabelVocabulary, quiet: bool) -> pd.DataFrame:
    """Region metrics of each used subject's CT, one subject in memory at a time."""
    values = dict(zip(plan.clinical["subject"], plan.clinical[plan.attribute], strict=True))

    def items() -> Iterator[RegionItem]:
        for subject in track(plan.used, "cohort CTs", quiet=quiet):
            ct, mask = read_volume(subject.ct), read_labels(subject.mask, vocabulary)
            check_same_grid(ct, mask)
            yield RegionItem(subject.id, values[subject.id], 0, ct.data, mask.data, ct.affine)

    try:
        table = region_table(items(), regions, zones=zones)
    except ValueError as exc:
        raise UserInputError(f"{plan.cohort.source}: {exc}") from None
    return table.drop(columns=["seed"]).rename(columns={"value": plan.attribute})


def _level(text, column: pd.Series, attribute: str):
    """The level of a categorical ``column`` that ``text`` names; None stays None."""
    if text is None or pd.api.types.is_numeric_dtype(column):
        return None  # a numeric attribute's effect is per unit: no reference level
    levels = sorted({str(v) for v in column.dropna()})
    match = [lv for lv in levels if lv == str(text) or lv.lower() == str(text).lower()]
    if not match:
        raise UserInputError(f"--reference: {text!r} is not a level of {attribute} in the cohort; "
                             f"levels: {', '.join(levels)}")
    return match[0]


def _concordance(effects: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    """Counterfactual vs adjusted observational effect per value x region x metric.

    A numeric attribute's observational slope is scaled to the run's contrast
    ``(value - reference)``; a categorical one is matched level by level.
    """
    blocks = []
    keys = ["region", "metric"]
    for value, cf in effects.groupby("value", sort=False):
        reference = cf["reference"].iloc[0]
        if observed["level"].isna().all():  # numeric attribute: effect per unit
            factor = float(value) - float(reference)
            obs = _scaled(observed, factor)
        else:
            obs = observed[observed["level"].astype(str) == str(value)]
        if obs.empty:
            continue
        joined = concordance(cf.set_index(keys), obs.set_index(keys)).reset_index()
        joined.insert(2, "unit", cf.set_index(keys).loc[list(zip(joined["region"],
                                                                   joined["metric"],
                                                                   strict=True)), "unit"].values)
        naive = obs.set_index(keys)[["naive_estimate", "naive_ci_low", "naive_ci_high"]]
        joined = joined.join(naive, on=keys)
        joined.insert(0, "reference", reference)
        joined.insert(0, "value", value)
        blocks.append(joined)
    if not blocks:
        values = list(effects["value"].unique())
        raise UserInputError(f"--cohort: none of the run's values {values} is a level of the "
                             f"cohort's attribute {sorted(map(str, observed['level'].unique()))}")
    return pd.concat(blocks, ignore_index=True)


def _scaled(observed: pd.DataFrame, factor: float) -> pd.DataFrame:
    scaled = observed.copy()
    for prefix in ("", "naive_"):
        low, high = scaled[f"{prefix}ci_low"] * factor, scaled[f"{prefix}ci_high"] * factor
        scaled[f"{prefix}estimate"] *= factor
        scaled[f"{prefix}ci_low"], scaled[f"{prefix}ci_high"] = (np.minimum(low, high),
                                                                 np.maximum(low, high))
    return scaled


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

