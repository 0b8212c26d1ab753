"""The ``cfx stats`` recipe: region HU shifts of a sweep beside its negative controls and noise
floor, voxel maps, and the observational comparison of a cohort's real CTs with its concordance
to the counterfactual effect.

:func:`run_stats` takes a :class:`StatsConfig` (what ``cfx stats`` parsed) and runs numbered
steps: check the options, open the run and plan the cohort, check every volume it will read,
run the counterfactual statistics, the observational ones and their concordance, then write
``stats/`` at once (a staged folder: all or nothing) and return a :class:`StatsResult` whose
tables the CLI prints. The statistics themselves live in :mod:`analysis` (region tables,
specificity, dose-response, permutation maps, observational tests); this module reads files,
streams volumes into them and writes their outputs.

Every paired effect goes out beside the same statistic in the negative-control regions of
:mod:`cfx.analysis.controls` (body, air outside the body, whole volume), a specificity verdict and
the body-adjusted effect: ``effects.csv``, ``summary.json``; ``controls.csv`` holds the controls'
full statistics and ``control_regions.csv`` their per-volume metrics.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cfx.analysis.controls import CONTROL_REGIONS, control_labels
from cfx.analysis.permutation import one_sample_permutation
from cfx.analysis.regions import RegionItem, region_table
from cfx.analysis.statmaps import FLOAT32_HU_RESOLUTION, StatMap, stat_maps
from cfx.analysis.stats.dose_response import PER_DECADE, dose_response
from cfx.analysis.stats.observational import cohort_effects, concordance_by_value
from cfx.analysis.stats.specificity import DEFAULT_RATIO, beside_controls, specificity_table
from cfx.counterfactual.atomic import check_writable, staged_dir
from cfx.counterfactual.attributes import DEFAULT_ATTRIBUTES, canonicalize_record
from cfx.counterfactual.cohort import Cohort, Subject, load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.progress import track
from cfx.counterfactual.run_folder import RunFolder
from cfx.counterfactual.sweep.executors import DEVICES, resolve_device
from cfx.counterfactual.sweep.manifest import write_json
from cfx.counterfactual.sweep.naming import value_label
from cfx.counterfactual.volume import (
    Volume,
    check_same_grid,
    read_labels,
    read_volume,
    write_stat_map,
)

__all__ = ["StatsConfig", "StatsResult", "TAILS", "run_stats", "check_stats_options"]

TAILS = ("none", "gamma", "gpd")
"""Tail fits of the permutation maxima (``--tail``)."""

_FORMAT = "cfx-stats/1"

_GPU_DEVICE_FILES = ("/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")
"""On Linux, torch can see a GPU only with one of these: the NVIDIA driver, WSL2's GPU, ROCm."""


@dataclass(frozen=True)
class StatsConfig:
    """What ``cfx stats`` computes (already parsed).

    Attributes
    ----------
    run : Path, optional
        Run folder made by ``cfx sweep``; with ``cohort`` alone only the observational part runs.
    cohort : Path, optional
        Cohort with real CTs for the observational comparison (with ``run``: and its
        concordance). With a run, no cohort and some ``covariates``, the run's own cohort.
    attribute : str, optional
        The compared attribute; a run's own by default (another one is refused).
    regions : tuple of str
        Named regions of ``labels`` to measure.
    zones : bool
        Also the upper, middle and lower thirds of each region.
    reference : str, optional
        The value every other one is compared with, as typed (default: the run's reference; for
        a cohort alone the first level in sort order).
    covariates : tuple of str
        Clinical columns adjusting the observational OLS.
    voxelwise : bool
        Sign-flip permutation maps of the run.
    permutations : int
        Sign flips of the maps (all distinct ones when they are fewer), >= 1.
    tail : {"none", "gamma", "gpd"}
        Tail fit of the permutation maxima (needs ``voxelwise``).
    tfce : bool
        Also TFCE with its own FWE p-map (needs ``voxelwise``).
    device : {"auto", "cpu", "cuda"}
        Where the max-T null's sign-flip products run: ``cuda`` on a CUDA GPU (torch),
        ``cpu`` in numpy, ``auto`` a GPU when one is visible, else numpy.
    specificity_ratio : float
        An effect is specific when every negative control stays below this fraction of it, in
        (0, 1).
    labels : LabelVocabulary, optional
        The user's ``--labels``; default: the run's (the built-in one without a run). With a
        run its labels must be the run's; its regions are used.
    verify : bool
        Check every run volume against the sha256 its manifest recorded before reading it.
    out : Path, optional
        Output folder; default ``RUN/stats`` (``<cohort>/stats`` without a run).
    quiet : bool
        No progress bars.
    """

    run: Path | None = None
    cohort: Path | None = None
    attribute: str | None = None
    regions: tuple[str, ...] = ("lung",)
    zones: bool = True
    reference: str | None = None
    covariates: tuple[str, ...] = ()
    voxelwise: bool = False
    permutations: int = 5000
    tail: str = "none"
    tfce: bool = False
    device: str = "auto"
    specificity_ratio: float = DEFAULT_RATIO
    labels: LabelVocabulary | None = None
    verify: bool = True
    out: Path | None = None
    quiet: bool = False


@dataclass(frozen=True)
class StatsResult:
    """What :func:`run_stats` wrote, and the tables the terminal shows.

    Attributes
    ----------
    destination : Path
        The folder written (``summary.json`` and the CSVs).
    attribute : str
        The compared attribute.
    summary : dict
        The content of ``summary.json``.
    n_seeds : int, optional
        Seeds per subject and value of the run; None without a run.
    effects : DataFrame, optional
        ``effects.csv``: paired effects beside the controls, with verdicts (with a run).
    dose : DataFrame, optional
        ``dose_response.csv``: slopes of a numeric attribute swept at >= 3 values.
    observed : DataFrame, optional
        ``observational.csv``: the cohort's Welch / Mann-Whitney / OLS effects.
    agreement : DataFrame, optional
        ``concordance.csv``: counterfactual vs observational effect per value.
    covariates : tuple of str
        The OLS's adjustment.
    counts : dict, optional
        Subjects of the cohort: ``total``, ``used``, ``without_attribute``, ``without_ct``.
    """

    destination: Path
    attribute: str
    summary: dict
    n_seeds: int | None = None
    effects: pd.DataFrame | None = None
    dose: pd.DataFrame | None = None
    observed: pd.DataFrame | None = None
    agreement: pd.DataFrame | None = None
    covariates: tuple[str, ...] = ()
    counts: dict | None = None


def check_stats_options(config: StatsConfig) -> None:
    """Refuse options that contradict each other or are out of range, before any file is read.

    Raises
    ------
    UserInputError
        One line naming the option, the value and what to do.
    """
    if config.run is None and config.cohort is None:
        raise UserInputError("give a RUN folder made by cfx sweep, --cohort DIR, or both")
    if config.permutations < 1:
        raise UserInputError(f"--permutations: must be >= 1, got {config.permutations}")
    if not 0 < config.specificity_ratio < 1:
        raise UserInputError(f"--specificity-ratio: must be a fraction in (0, 1), got "
                             f"{config.specificity_ratio}")
    if config.device not in DEVICES:
        raise UserInputError(f"--device: {config.device!r} is not one of {', '.join(DEVICES)}")
    if config.device == "cuda" and not config.voxelwise:
        raise UserInputError("--device cuda: only the voxel maps use a GPU; add --voxelwise or "
                             "drop --device")
    if config.tail not in TAILS:
        raise UserInputError(f"--tail: {config.tail!r} is not one of {', '.join(TAILS)}")
    if config.tfce and not config.voxelwise:
        raise UserInputError("--tfce: TFCE maps are voxelwise; add --voxelwise")
    if config.tail != "none" and not config.voxelwise:
        raise UserInputError("--tail: the tail fit is of the voxel maps' permutation maxima; add "
                             "--voxelwise")
    if config.run is None and config.voxelwise:
        raise UserInputError("--voxelwise: voxel maps compare the volumes of a run; give RUN")
    if config.run is None and config.attribute is None:
        raise UserInputError("--attribute: name the attribute to compare in --cohort, e.g. "
                             "--attribute smoking")


def run_stats(config: StatsConfig, note: Callable[[str], None] | None = None) -> StatsResult:
    """Compute and write the statistics ``config`` asks for.

    Parameters
    ----------
    config : StatsConfig
    note : callable, optional
        Called with one line per voxel-map contrast (how its sign flips were made).

    Returns
    -------
    StatsResult

    Raises
    ------
    UserInputError
        Bad options, a run that is incomplete or whose volumes differ from their recorded
        sha256, a cohort without the attribute, covariates or CTs, an output folder that is not
        an earlier ``cfx stats`` output: all before anything is written; and statistics that
        cannot be computed (one line naming the run or cohort). Nothing is written then.
    """
    # 1. check the options that need no file
    check_stats_options(config)
    vocabulary = DEFAULT_VOCABULARY if config.labels is None else config.labels
    zone_regions = list(config.regions) if config.zones else []
    adjust = list(config.covariates)
    device = _voxel_device(config.device) if config.voxelwise else None
    run, cohort, attribute = config.run, config.cohort, config.attribute
    # 2. the run: its settings, the reference and the cohort it was made from
    folder = run_reference = None
    if run is not None:
        folder = RunFolder.open(run, config.labels, verify=config.verify)
        vocabulary = folder.labels  # the run's (--labels may only change its regions)
        folder.require_complete()
        if attribute is not None and attribute != folder.attribute:
            raise UserInputError(f"--attribute: the run sweeps {folder.attribute!r}, got "
                                 f"{attribute!r}; omit --attribute or use another run")
        attribute = folder.attribute
        run_reference = (folder.reference if config.reference is None
                         else _match(config.reference, folder.values, "--reference", str(run)))
        if cohort is None and adjust:
            cohort = folder.cohort
            if not any(s.ct is not None for s in load_cohort(cohort)):
                raise UserInputError(f"--covariates: they adjust the observational comparison, "
                                     f"which needs real CTs, and the run's cohort {cohort} has "
                                     "none; give --cohort DIR with CTs")
    regions = {name: vocabulary.region_labels(name) for name in config.regions}
    # 3. the cohort: its columns and subjects, before any CT is read
    plan = (None if cohort is None else
            _cohort_plan(cohort, attribute, adjust,
                         config.reference if run is None else run_reference))
    destination = (config.out if config.out is not None
                   else (run if run is not None else cohort) / "stats")
    _check_destination(destination)
    if folder is not None:  # every volume read is checked against the manifest before any work
        folder.check(_run_files(folder, run_reference, config.voxelwise))
    # 4. counterfactual statistics of the run
    effects = dose = table = control_table = control_effects = None
    if folder is not None:
        try:
            table, control_table = _run_tables(folder, run_reference, regions, zone_regions,
                                               config.quiet)
            effects, control_effects = specificity_table(
                table, control_table, run_reference, ratio=config.specificity_ratio,
                held="keep_outside" in (folder.sampling or {}))
            dose = _dose_response(table, control_table, attribute, list(folder.values),
                                  config.specificity_ratio)
        except ValueError as exc:
            raise UserInputError(f"{run}: {exc}") from None
    # 5. observational statistics of the cohort's real CTs, and their concordance
    observed = cohort_table = agreement = None
    if plan is not None:
        cohort_table = _cohort_table(plan, regions, zone_regions, vocabulary, config.quiet)
        try:
            observed = cohort_effects(cohort_table, plan.clinical, attribute, adjust,
                                      reference=plan.reference)
        except ValueError as exc:
            raise UserInputError(f"{plan.cohort.source}: {exc}") from None
    if effects is not None and observed is not None:
        try:
            agreement = concordance_by_value(effects, observed)
        except ValueError as exc:
            raise UserInputError(f"--cohort: {exc}") from None
    # 6. write everything at once (a staged folder), voxel maps included
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
            summary |= {"run": str(run), "verified": config.verify, "reference": run_reference,
                        "n_seeds": len(folder.seeds),
                        "specificity_ratio": config.specificity_ratio,
                        "control_regions": {r: CONTROL_REGIONS[r]
                                            for r in pd.unique(control_table["region"])},
                        "effects": _records(effects),
                        "controls": _records(control_effects)}
            if config.voxelwise:
                summary["voxelwise"] = _voxelwise(folder, staged, regions, run_reference,
                                                  config.permutations, config.tfce,
                                                  config.quiet, config.tail, device, note)
        if observed is not None:
            cohort_table.to_csv(staged / "cohort_regions.csv", index=False)
            observed.to_csv(staged / "observational.csv", index=False)
            summary |= {"cohort": str(plan.cohort.source), "covariates": adjust,
                        "subjects": plan.counts, "observational": _records(observed)}
        if agreement is not None:
            agreement.to_csv(staged / "concordance.csv", index=False)
            summary["concordance"] = _records(agreement)
        write_json(staged / "summary.json", summary)
    # 7. the result the terminal shows
    return StatsResult(destination=destination, attribute=attribute, summary=summary,
                       n_seeds=None if folder is None else len(folder.seeds), effects=effects,
                       dose=dose, observed=observed, agreement=agreement,
                       covariates=tuple(adjust), counts=None if plan is None else plan.counts)


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


def _voxel_device(device: str) -> str | None:
    """The torch device of the max-T products (``"cuda"``), or None for numpy on the CPU.

    ``auto`` asks torch only where a GPU can exist (:data:`_GPU_DEVICE_FILES` on Linux):
    importing torch takes seconds on a CPU-only machine, longer than a small run's maps.
    """
    if device == "cpu" or (device == "auto" and sys.platform.startswith("linux") and not any(
            Path(name).exists() for name in _GPU_DEVICE_FILES)):
        return None
    return "cuda" if resolve_device(device) == "cuda" else None


def _voxelwise(run: RunFolder, out: Path, regions: dict, reference, n_permutations: int,
               tfce: bool, quiet: bool, tail: str, device: str | None,
               note: Callable[[str], None] | None) -> dict:
    """Sign-flip maps of every value vs ``reference`` over the union of the subjects' regions.

    Subjects are streamed: one volume is read at a time and only the tested voxels of each
    subject's seed-averaged difference are kept. Each map is written viewer-ready with its
    NIfTI intent and a JSON sidecar (:mod:`cfx.analysis.statmaps`: NaN t plus an ``exact`` map where
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
                                            tail=tail, device=device)
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
        maps[contrast]["device"] = device or "cpu"
        if note is not None:
            on = "" if device is None else f"; max-T products on {device}"
            note(f"voxel maps {contrast}: {_flips_line(result)}{on}")
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
