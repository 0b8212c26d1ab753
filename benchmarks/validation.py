"""End-to-end validation on a fresh phantom cohort: cfx phantom, train, sweep, stats and audit.

Does a model trained with ``cfx train`` (the GAN, or ``--arch diffusion``) recover the effects
planted in a fresh phantom cohort, judged by ``cfx stats`` and ``cfx audit`` against the exact
oracle?

Run from the repository root with the project's interpreter::

    python benchmarks/validation.py [--effects FILE|default] [--quick] [--subjects N] [--seed 0]
                                    [--shape N] [--steps N] [--arch gan|diffusion]
                                    [--channels C1,C2,...] [--patch N]
                                    [--train-options='OPTIONS'] [--checkpoint DIR]
                                    [--sweep-options='OPTIONS'] [--threads 1] [--out DIR]
                                    [--update-card]

Every stage is the real command line, ``cfx`` with the arguments a user would type, invoked
through its typer app in this one process: the command line and the model stack (torch, MONAI,
the text encoder's library) are imported once, timed as ``startup``, where a user running each
command in a shell pays that import per command (about 2 s for ``cfx`` alone, more with torch):

1. ``cfx phantom``: a training cohort and a held-out cohort (master seeds ``seed`` and
   ``seed + 1``) with the planted effects (``--effects``: a JSON file as ``cfx phantom`` reads it,
   or ``default``); ``planted.json`` summarises them and the contrasts below;
2. ``cfx train --arch gan|diffusion --cohort <training cohort>`` for a fixed number of steps;
3. ``cfx sweep`` of the held-out subjects at noise seeds 0 and 1, with the trained checkpoint and
   with ``phantom-oracle`` (the exact reference), one contrast per attribute with a planted effect
   (categorical: the value with the largest shift against the reference, or against a value
   without effect when the reference is the ``none`` baseline; age: 80 against 40) and one null
   contrast, an attribute with nothing planted (its planted effect is 0);
4. ``cfx stats RUN`` and ``cfx audit RUN --cohort <training cohort>`` of every sweep (the
   attribute predictor of the audit's effectiveness learns from the training cohort's CTs; the
   audit regenerates with the checkpoint folder the run's manifest records).

The figures are read from what the stages write, per model and contrast:

- planted lung-mean Δ (HU): the oracle's lung-mean difference, averaged over the audit's
  difference maps (``audit.json``: ``oracle_agreement.oracle_region_mean``);
- recovered lung-mean Δ (HU): the paired effect of ``cfx stats`` (``stats/effects.csv``, region
  ``lung``, metric ``mean``), and the ratio recovered / planted;
- off-lung mean ``|Δ|`` (HU): ``minimality.mean_abs_outside_lung`` (nothing is planted there);
- the same paired Δ in the body and in the air outside it, and the specificity verdict of the
  lung mean (``body_estimate``, ``outside_body_estimate``, ``verdict`` of ``effects.csv``);
- noise floor (HU): the seed-vs-seed lung-mean Δ at equal value with its 95 % CI
  (``noise_estimate``, ``noise_ci_low``, ``noise_ci_high`` of ``effects.csv``);
- r: voxelwise correlation with the oracle's difference maps
  (``oracle_agreement.correlation``; undefined for the null contrast, whose oracle map is 0);
- the wall time (s) of the sweep, stats and audit of the row, then of each stage in total.

When it trains the model, it also says what the training cohort itself shows, per contrast: the
difference value − reference of each subject's mean HU in the lungs, the body and the air
outside it (the control regions of ``cfx stats``), from one least-squares fit over the training
subjects with every attribute as a covariate (a missing value is a category of its own; a
missing age is the cohort's mean with an indicator), with its standard error. Nothing is planted
off the lungs, so there the estimate is the cohort's chance association: a model faithful to its
training data is not expected to move the body by less than that.

The default size (40 training and 8 held-out subjects of 64³ voxels of 5 mm, 1200 steps of the
default network) should take about 22 minutes on a 2-core CPU that other work keeps busy (an
estimate from its measured parts: training about 1 s per step, each contrast about 35 s);
``--subjects N`` trains on N phantom subjects instead (issue 16 asks for 100 and 200);
``--shape N`` and ``--steps N`` change the grid (same field of view) and the training length,
``--channels`` and ``--patch`` the GAN's levels and its training patch side;
``--checkpoint DIR`` evaluates a model trained before on the same training cohort;
``--arch diffusion`` trains and evaluates the diffusion model (its default channels) instead of
the GAN; ``--train-options='--body --edit-weight 5'`` and ``--sweep-options='--from-ct'`` pass
more ``cfx train`` and ``cfx sweep`` options (written with ``=``);
``--quick`` (12 and 3 subjects of 32³ voxels of 10 mm, the same 320 mm field of view, a small
network, 40 steps) runs in under a minute, for CI. Torch runs on ``--threads`` threads, 1 by
default: on busy shared cores one thread is several times faster than one per core
(``--threads 0`` keeps torch's default). Outputs go to a temporary folder, or to ``--out DIR``
(new or empty) to keep the cohorts, checkpoint, runs and ``validation.json``.
``--update-card`` writes the table into the checkpoint's ``README.md`` (section
:data:`CARD_HEADING`, before the recovery section of ``benchmarks/recovery.py``): how a bundled
model's card reports its off-lung and null-attribute figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
import typer

from cfx.analysis.controls import BODY, OUTSIDE_BODY, control_labels
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY
from cfx.counterfactual.phantom.clinical import ATTRIBUTES, CATEGORIES
from cfx.counterfactual.phantom.effects import (
    BASELINE,
    CategoricalEffect,
    Effects,
    NumericEffect,
    load_effects,
)
from cfx.counterfactual.volume import read_labels, read_volume

STAGES = ("startup", "phantom", "train", "sweep", "stats", "audit")
_STACK = (
    "cfx.counterfactual.cli",
    "cfx.counterfactual.training",
    "cfx.counterfactual.sweep.learned",
)
NUMERIC_CONTRAST = (80, 40)  # value, reference of a numeric attribute (age, years)
SEEDS = (0, 1)  # noise seeds of every sweep: two give the noise floor
CARD_HEADING = "## Validation on held-out phantom subjects"
_RECOVERY_HEADING = "## Recovery of planted effects"  # benchmarks/recovery.py's section


class StageFailed(Exception):
    """A ``cfx`` command of the benchmark exited with an error (its command line and message)."""


@dataclass(frozen=True)
class Size:
    """Cohorts, grid and training budget of one benchmark size."""

    train_subjects: int
    held_out_subjects: int
    shape: int  # voxels per axis
    spacing_mm: float
    steps: int
    patch: int  # training patch side, voxels
    channels: tuple[int, ...]
    batch_size: int
    arch: str = "gan"  # cfx train --arch
    train_options: tuple[str, ...] = ()  # more cfx train options, e.g. ("--body",)
    sweep_options: tuple[str, ...] = ()  # more cfx sweep options of the learned model
    checkpoint: str | None = None  # a model trained before, evaluated instead of training one


DEFAULT = Size(train_subjects=40, held_out_subjects=8, shape=64, spacing_mm=5.0, steps=1200,
               patch=32, channels=(16, 32, 64, 64), batch_size=4)
QUICK = Size(train_subjects=12, held_out_subjects=3, shape=32, spacing_mm=10.0, steps=40,
             patch=16, channels=(8, 16, 16), batch_size=2)


@dataclass(frozen=True)
class Contrast:
    """One swept attribute: ``value`` against ``reference``, and what was planted."""

    attribute: str
    value: str | int
    reference: str | int
    planted: str  # the planted effect in words
    null: bool = False  # nothing planted: a control

    @property
    def name(self) -> str:
        return f"{self.attribute} {self.value} − {self.reference}"


@dataclass(frozen=True)
class Row:
    """Figures of one model on one contrast (HU unless stated; None where undefined)."""

    model: str
    attribute: str
    value: str | int
    reference: str | int
    planted: float
    recovered: float
    off_lung: float
    body: float  # the same paired Δ in the body control (cfx stats)
    outside_body: float | None  # ... and in the air outside the body (None when absent)
    verdict: str  # cfx stats' specificity verdict of the lung mean
    noise: float
    noise_low: float
    noise_high: float
    correlation: float | None
    effectiveness: str  # the audit's predictor on the counterfactuals: accuracy or MAE vs chance
    seconds: dict  # stage -> wall time (s) of this row's sweep, stats and audit

    @property
    def ratio(self) -> float | None:
        return self.recovered / self.planted if self.planted else None


@dataclass
class Validation:
    """Everything one run of the benchmark measured."""

    folder: Path
    size: Size
    contrasts: list[Contrast]
    threads: int = 0  # torch threads the models ran on
    rows: list[Row] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)  # one per command: stage, what, seconds
    associations: list = field(default_factory=list)  # Association per contrast (trained here)
    checkpoint: Path | None = None  # the model evaluated

    def stage_seconds(self) -> dict[str, float]:
        return {s: sum(e["seconds"] for e in self.stages if e["stage"] == s) for s in STAGES}


def _describe_shift(value: str, effect: CategoricalEffect) -> str:
    shift = effect.values.get(value)
    return "nothing" if shift is None else f"{shift.shift_hu:+g} HU over {shift.pattern}"


def _categorical(name: str, effect: CategoricalEffect) -> Contrast:
    ranked = sorted(effect.values, key=lambda v: -abs(effect.values[v].shift_hu))
    value, reference = ranked[0], effect.reference
    if reference == BASELINE:  # no subject has it: compare with a value of no (or least) effect
        unplanted = [v for v in CATEGORIES[name] if v not in effect.values]
        reference = unplanted[0] if unplanted else ranked[-1]
    return Contrast(name, value, reference, f"{value}: {_describe_shift(value, effect)}; "
                                            f"{reference}: {_describe_shift(reference, effect)}")


def contrasts(effects: Effects) -> list[Contrast]:
    """One contrast per attribute with a planted effect, then one null contrast.

    A categorical attribute compares its value of largest ``|shift_hu|`` with the reference, or,
    when the reference is the ``none`` baseline no subject has, with a value without effect if
    there is one, else with the value of smallest shift. A numeric one compares
    :data:`NUMERIC_CONTRAST`. The null contrast is the first categorical attribute with nothing
    planted (none when every attribute has an effect).
    """
    planted, unplanted = [], []
    for name in ATTRIBUTES:
        effect = effects.entries.get(name)
        if isinstance(effect, NumericEffect) and effect.slope_hu_per_unit:
            planted.append(Contrast(name, *NUMERIC_CONTRAST,
                                    f"{effect.slope_hu_per_unit:+g} HU per unit from "
                                    f"{effect.centre:g} over {effect.pattern}"))
        elif isinstance(effect, CategoricalEffect) and any(
                s.shift_hu for s in effect.values.values()):
            planted.append(_categorical(name, effect))
        elif name in CATEGORIES:
            first, second = CATEGORIES[name][:2]
            unplanted.append(Contrast(name, first, second, "nothing (null control)", null=True))
    return planted + unplanted[:1]


def _startup(validation: Validation, threads: int) -> None:
    """Import the command line and the model stack once, timed as the ``startup`` stage, and
    set torch's threads (0 keeps its default)."""
    start = time.perf_counter()
    for module in _STACK:
        importlib.import_module(module)
    torch = importlib.import_module("torch")  # imported by the stack: no time added
    if threads:
        torch.set_num_threads(threads)
    validation.threads = torch.get_num_threads()
    validation.stages.append({"stage": "startup", "what": "imports",
                              "seconds": time.perf_counter() - start})


def _run(validation: Validation, stage: str, what: str, args: list) -> float:
    """Run ``cfx ARGS`` through the CLI's typer app and record its wall time (s) under ``stage``."""
    args = [str(a) for a in args]
    app = importlib.import_module("cfx.counterfactual.cli").app
    start = time.perf_counter()
    try:
        code = app(args, prog_name="cfx", standalone_mode=False)
    except UserInputError as exc:
        code, message = 2, str(exc)
    except typer.TyperException as exc:  # a value the option parser rejected
        code, message = 2, exc.format_message()
    else:
        message = "stopped early"
    seconds = time.perf_counter() - start
    if code:
        raise StageFailed(f"{stage} ({what}) failed with exit code {code}: cfx "
                           f"{' '.join(args)}\n{message}")
    validation.stages.append({"stage": stage, "what": what, "seconds": seconds})
    return seconds


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _effectiveness(criterion: dict) -> str:
    """``acc 0.92 (chance 0.50)`` or ``MAE 8.1 (chance 14.0)``, or why it was skipped."""
    if criterion["status"] == "skipped":
        return "skipped"
    metrics = criterion["metrics"]
    name, label = ("accuracy", "acc") if "accuracy" in metrics else ("mae", "MAE")
    return (f"{label} {metrics[name]['value']:.2f} (chance "
            f"{metrics[name].get('chance', float('nan')):.2f})")


def _row(run: Path, model: str, contrast: Contrast, seconds: dict) -> Row:
    """The figures of one sweep, from ``stats/effects.csv`` and ``audit/audit.json``."""
    effects = pd.read_csv(run / "stats" / "effects.csv", keep_default_na=False, na_values=[""])
    lung = effects[(effects["region"] == "lung") & (effects["metric"] == "mean")
                   & (effects["value"].astype(str) == str(contrast.value))].iloc[0]
    criteria = json.loads((run / "audit" / "audit.json").read_text())["criteria"]
    oracle = criteria["oracle_agreement"]["metrics"]
    return Row(model, contrast.attribute, contrast.value, contrast.reference,
               planted=oracle["oracle_region_mean"]["value"],
               recovered=float(lung["estimate"]),
               off_lung=criteria["minimality"]["metrics"]["mean_abs_outside_lung"]["value"],
               body=float(lung["body_estimate"]),
               outside_body=_number(float(lung.get("outside_body_estimate", math.nan))),
               verdict=str(lung["verdict"]),
               noise=float(lung["noise_estimate"]), noise_low=float(lung["noise_ci_low"]),
               noise_high=float(lung["noise_ci_high"]),
               correlation=_number(oracle["correlation"]["value"]),
               effectiveness=_effectiveness(criteria["effectiveness"]), seconds=seconds)


@dataclass(frozen=True)
class Association:
    """What a training cohort shows for one contrast: per region, the least-squares difference
    value − reference of the subjects' mean HU, adjusted for the other attributes."""

    attribute: str
    value: str | int
    reference: str | int
    regions: dict  # region -> [estimate, standard error] (HU)


ASSOCIATION_REGIONS = ("lung", "body", "outside-body")


def region_means(cohort: Path) -> pd.DataFrame:
    """One row per subject of ``cohort`` (with CT): its record and the mean HU of each of
    :data:`ASSOCIATION_REGIONS`."""
    lung = DEFAULT_VOCABULARY.region_labels("lung")
    rows = []
    for subject in load_cohort(cohort):
        ct = read_volume(subject.ct).data
        labels = read_labels(subject.mask).data
        controls = control_labels(ct, labels)
        rows.append({**{a: subject.record.get(a) for a in ATTRIBUTES},
                     "lung": float(ct[np.isin(labels, lung)].mean()),
                     "body": float(ct[controls == BODY].mean()),
                     "outside-body": float(ct[controls == OUTSIDE_BODY].mean())})
    return pd.DataFrame(rows)


def _design(means: pd.DataFrame) -> pd.DataFrame:
    """Intercept, the numeric attributes (a missing one: the mean and an indicator) and one
    indicator per category of each categorical attribute but its first (missing: a category)."""
    columns = {"intercept": np.ones(len(means))}
    for attribute in ATTRIBUTES:
        values = means[attribute]
        if attribute not in CATEGORIES:
            numbers = pd.to_numeric(values, errors="coerce")
            columns[attribute] = numbers.fillna(numbers.mean()).to_numpy(float)
            if numbers.isna().any():
                columns[f"{attribute}=missing"] = numbers.isna().to_numpy(float)
            continue
        text = values.map(lambda v: "missing" if pd.isna(v) or v == "" else str(v))
        for level in sorted(set(text))[1:]:
            columns[f"{attribute}={level}"] = (text == level).to_numpy(float)
    return pd.DataFrame(columns)


def training_associations(means: pd.DataFrame, chosen: list[Contrast]) -> list[Association]:
    """Per contrast, :class:`Association` from :func:`region_means`' table."""
    design = _design(means)
    fits = {r: sm.OLS(means[r].to_numpy(float), design).fit() for r in ASSOCIATION_REGIONS}
    found = []
    for contrast in chosen:
        weights = pd.Series(0.0, index=design.columns)
        if contrast.attribute in CATEGORIES:
            for level, sign in ((contrast.value, 1.0), (contrast.reference, -1.0)):
                name = f"{contrast.attribute}={level}"
                if name in weights.index:  # the first category is the intercept's
                    weights[name] += sign
        else:
            weights[contrast.attribute] = float(contrast.value) - float(contrast.reference)
        regions = {}
        for region, fit in fits.items():
            test = fit.t_test(weights.to_numpy()[None])
            regions[region] = [float(np.squeeze(test.effect)), float(np.squeeze(test.sd))]
        found.append(Association(contrast.attribute, contrast.value, contrast.reference,
                                 regions))
    return found


def run_validation(folder: Path, size: Size, effects: str, seed: int = 0,
                   threads: int = 1) -> Validation:
    """Run every stage in ``folder`` (new or empty) and read the figures back.

    Parameters
    ----------
    folder : Path
        Where the cohorts, checkpoint, runs, ``planted.json`` and ``validation.json`` go.
    size : Size
        :data:`DEFAULT` or :data:`QUICK`.
    effects : str
        ``"default"`` or a JSON effects file (as ``cfx phantom --effects`` reads it).
    seed : int
        Master seed of the training cohort (the held-out cohort uses ``seed + 1``) and of
        training.
    threads : int
        Torch threads for training and generation; 0 keeps torch's default (one per core).

    Raises
    ------
    UserInputError
        If the effects cannot be read or plant nothing.
    StageFailed
        If a stage exits with an error (its command line and message).
    """
    # 1. the planted effects and the contrasts they give
    planted = load_effects(effects)
    chosen = contrasts(planted)
    if all(c.null for c in chosen):
        raise UserInputError(f"--effects: {effects} plants no effect; there is nothing to recover")
    validation = Validation(folder, size, chosen)
    _startup(validation, threads)
    effects_arg = "default" if effects == "default" else Path(effects).resolve()
    (folder / "planted.json").write_text(json.dumps(
        {"effects": planted.to_json(), "contrasts": [asdict(c) for c in chosen]}, indent=2))
    # 2. the two cohorts
    train, held_out = folder / "train-cohort", folder / "held-out-cohort"
    grid = ["--shape", ",".join([str(size.shape)] * 3), "--spacing", size.spacing_mm,
            "--effects", effects_arg, "--quiet"]
    _run(validation, "phantom", "training cohort",
         ["phantom", "--out", train, "--subjects", size.train_subjects, "--seed", seed, *grid])
    _run(validation, "phantom", "held-out cohort",
         ["phantom", "--out", held_out, "--subjects", size.held_out_subjects,
          "--seed", seed + 1, *grid])
    # 3. the model, trained for a fixed number of steps
    checkpoint = folder / size.arch if size.checkpoint is None else \
        Path(size.checkpoint).resolve()
    validation.checkpoint = checkpoint
    channels = ["--channels", ",".join(map(str, size.channels))] if size.arch == "gan" else []
    if size.checkpoint is None:
        _run(validation, "train", size.arch,
             ["train", "--arch", size.arch, "--cohort", train, "--out", checkpoint, "--steps",
              size.steps, "--patch", ",".join([str(size.patch)] * 3), "--batch-size",
              size.batch_size, *channels, "--seed", seed, "--save-every", size.steps,
              *size.train_options, "--quiet"])
        validation.associations = training_associations(region_means(train), chosen)
    # 4. sweep, stats and audit of every contrast with both models
    models = {size.arch: checkpoint, "oracle": "phantom-oracle"}
    for contrast in chosen:
        for model, path in models.items():
            options = size.sweep_options if model != "oracle" else ()
            what = f"{model} {contrast.name}"
            run = folder / "runs" / f"{model}-{contrast.attribute}"
            seconds = {
                "sweep": _run(validation, "sweep", what,
                              ["sweep", "--attribute", contrast.attribute, "--values",
                               f"{contrast.value},{contrast.reference}", "--reference",
                               contrast.reference, "--cohort", held_out, "--model",
                               path, "--seeds", ",".join(map(str, SEEDS)), "--out",
                               run, *options, "--quiet"]),
                "stats": _run(validation, "stats", what, ["stats", run, "--quiet"]),
                "audit": _run(validation, "audit", what,
                              ["audit", run, "--cohort", train, "--quiet"])}
            validation.rows.append(_row(run, model, contrast, seconds))
    # 5. keep the figures beside the outputs
    (folder / "validation.json").write_text(json.dumps(
        {"size": asdict(size), "seed": seed, "torch_threads": validation.threads,
         "contrasts": [asdict(c) for c in chosen],
         "rows": [asdict(r) | {"ratio": r.ratio} for r in validation.rows],
         "training_cohort": [asdict(a) for a in validation.associations],
         "stages": validation.stages, "stage_seconds": validation.stage_seconds()}, indent=2))
    return validation


def _signed(value: float) -> str:
    return f"{round(value, 1) + 0.0:+.1f}"  # no "-0.0"


def table(validation: Validation) -> str:
    """Markdown: the planted effects, the figures per contrast and model, the stage times."""
    size = validation.size
    trained = (f"{size.arch} checkpoint {size.checkpoint}" if size.checkpoint is not None
               else f"{size.arch} {size.steps} steps")
    lines = [f"Phantom cohorts: {size.train_subjects} training, {size.held_out_subjects} held-out "
             f"subjects of {size.shape}³ voxels of {size.spacing_mm:g} mm; {trained} (channels "
             f"{','.join(map(str, size.channels)) if size.arch == 'gan' else 'default'}, patch "
             f"{size.patch}³, batch {size.batch_size}"
             f"{', ' + ' '.join(size.train_options) if size.train_options else ''})"
             f"{'; sweep ' + ' '.join(size.sweep_options) if size.sweep_options else ''}; "
             "noise seeds "
             f"{','.join(map(str, SEEDS))}; torch threads {validation.threads}.", "", "Planted:"]
    lines += [f"- {c.name}: {c.planted}" for c in validation.contrasts]
    lines += ["", "| contrast | model | planted lung Δ (HU) | recovered (HU) | ratio | "
              "off-lung mean abs Δ (HU) | body Δ (HU) | outside-body Δ (HU) | verdict | "
              "noise floor Δ [95 % CI] | r vs oracle | effectiveness | sweep s | stats s | "
              "audit s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in validation.rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        correlation = "—" if r.correlation is None else f"{r.correlation:.2f}"
        lines.append(f"| {r.attribute} {r.value} − {r.reference} | {r.model} | "
                     f"{_signed(r.planted)} | {_signed(r.recovered)} | {ratio} | "
                     f"{r.off_lung:.1f} | {_signed(r.body)} | "
                     f"{'—' if r.outside_body is None else _signed(r.outside_body)} | "
                     f"{r.verdict} | {_signed(r.noise)} [{_signed(r.noise_low)}, "
                     f"{_signed(r.noise_high)}] | {correlation} | {r.effectiveness} | "
                     f"{r.seconds['sweep']:.1f} | "
                     f"{r.seconds['stats']:.1f} | {r.seconds['audit']:.1f} |")
    if validation.associations:
        lines += ["", f"What the training cohort shows ({size.train_subjects} subjects; "
                      "least squares over every attribute; estimate ± standard error, HU):", "",
                  "| contrast | " + " | ".join(f"{r} Δ" for r in ASSOCIATION_REGIONS) + " |",
                  "|---|" + "---|" * len(ASSOCIATION_REGIONS)]
        for a in validation.associations:
            cells = [f"{_signed(a.regions[r][0])} ± {a.regions[r][1]:.1f}"
                     for r in ASSOCIATION_REGIONS]
            lines.append(f"| {a.attribute} {a.value} − {a.reference} | {' | '.join(cells)} |")
    totals = validation.stage_seconds()
    counts = {s: sum(e["stage"] == s for e in validation.stages) for s in STAGES}
    lines += ["", "| stage | commands | wall time (s) |", "|---|---|---|"]
    lines += [f"| {s} | {counts[s]} | {totals[s]:.1f} |" for s in STAGES]
    lines.append(f"| total | {len(validation.stages)} | {sum(totals.values()):.1f} |")
    return "\n".join(lines)


def card_with_validation(card: str, text: str) -> str:
    """``card`` (a model card's Markdown) with ``text`` as its :data:`CARD_HEADING` section: in
    place of the one it has, else before its recovery section, else at the end."""
    sections = [s.strip() for s in re.split(r"(?m)^(?=## )", card) if s.strip()]
    sections = [s for s in sections if s.split("\n", 1)[0].strip() != CARD_HEADING]
    new = f"{CARD_HEADING}\n{text.strip()}"
    at = next((i for i, s in enumerate(sections) if s.startswith(_RECOVERY_HEADING)),
              len(sections))
    return "\n\n".join([*sections[:at], new, *sections[at:]]) + "\n"


def _card_text(validation: Validation) -> str:
    return ("Measured with `python benchmarks/validation.py` (cfx phantom, cfx sweep at two noise "
            "seeds, cfx stats, cfx audit; the planted effects are the phantom's default). Off "
            "the lungs nothing is planted: the body and outside-body columns are the paired "
            "change there, the verdict is that of `cfx stats` (`specific` when the lung effect "
            "stands out of both controls), and sex is the null attribute.\n\n"
            + table(validation))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--effects", default="default", metavar="FILE|default",
                        help="planted effects: a JSON file as cfx phantom reads it, or default")
    parser.add_argument("--quick", action="store_true",
                        help="CI size: tiny cohorts on a 32³ grid, 40 training steps")
    parser.add_argument("--subjects", type=int, default=None, metavar="N",
                        help="training subjects (default 40; 12 with --quick), e.g. 100 or 200")
    parser.add_argument("--arch", choices=("gan", "diffusion"), default="gan",
                        help="architecture trained and evaluated")
    parser.add_argument("--train-options", default="", metavar="'OPTIONS'",
                        help="more cfx train options, written with '=', e.g. "
                             "--train-options='--body --edit-weight 5'")
    parser.add_argument("--sweep-options", default="", metavar="'OPTIONS'",
                        help="more cfx sweep options of the trained model, e.g. "
                             "--sweep-options='--from-ct --steps 10'")
    parser.add_argument("--shape", type=int, default=None, metavar="N",
                        help="phantom grid N³ over the same 320 mm field of view (default 64; "
                             "32 with --quick)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="training steps (default 1200; 40 with --quick)")
    parser.add_argument("--channels", metavar="C1,C2,...",
                        help="GAN channels per level (default 16,32,64,64; 8,16,16 with --quick)")
    parser.add_argument("--patch", type=int, default=None, metavar="N",
                        help="training patch side in voxels (default 32; 16 with --quick)")
    parser.add_argument("--update-card", action="store_true",
                        help="write the table into the checkpoint's README.md")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="evaluate this checkpoint (of --arch, trained on the same training "
                             "cohort: same --subjects, --shape and --seed) instead of training")
    parser.add_argument("--seed", type=int, default=0,
                        help="master seed of the training cohort and of training")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 0 keeps torch's default (one per core)")
    parser.add_argument("--out", type=Path,
                        help="folder (new or empty) to keep the outputs in")
    args = parser.parse_args(argv)
    if args.threads < 0:
        print(f"--threads: got {args.threads}; give 0 (torch's default) or more",
              file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and (
            not args.out.is_dir() or any(args.out.iterdir())):
        print(f"--out: {args.out} exists and is not an empty folder", file=sys.stderr)
        return 2
    if args.subjects is not None and args.subjects < 2:
        print(f"--subjects: got {args.subjects}; give 2 or more training subjects",
              file=sys.stderr)
        return 2
    size = QUICK if args.quick else DEFAULT
    if args.subjects is not None:
        size = replace(size, train_subjects=args.subjects)
    if args.shape is not None:
        if args.shape < 16 or args.shape % 8:
            print(f"--shape: got {args.shape}; give a multiple of 8, 16 or more",
                  file=sys.stderr)
            return 2
        size = replace(size, shape=args.shape, spacing_mm=320.0 / args.shape,
                       patch=min(size.patch, args.shape))
    if args.steps is not None:
        if args.steps < 1:
            print(f"--steps: got {args.steps}; give 1 or more", file=sys.stderr)
            return 2
        size = replace(size, steps=args.steps)
    if args.channels is not None:
        try:
            channels = tuple(int(c) for c in args.channels.split(","))
        except ValueError:
            channels = ()
        if len(channels) < 2 or min(channels) < 1:
            print(f"--channels: got {args.channels!r}; give two or more positive integers, "
                  "e.g. 8,16,32,64", file=sys.stderr)
            return 2
        size = replace(size, channels=channels)
    if args.patch is not None:
        if args.patch < 8:
            print(f"--patch: got {args.patch}; give 8 or more voxels", file=sys.stderr)
            return 2
        size = replace(size, patch=args.patch)
    if args.update_card and args.out is None and args.checkpoint is None:
        print("--update-card: give --out DIR or --checkpoint DIR; a model trained in a "
              "temporary folder is removed with it", file=sys.stderr)
        return 2
    if args.checkpoint is not None and not (Path(args.checkpoint) / "config.json").is_file():
        print(f"--checkpoint: {args.checkpoint} holds no config.json; give a cfx train "
              "checkpoint folder", file=sys.stderr)
        return 2
    size = replace(size, checkpoint=args.checkpoint, arch=args.arch,
                   train_options=tuple(shlex.split(args.train_options)),
                   sweep_options=tuple(shlex.split(args.sweep_options)))
    with tempfile.TemporaryDirectory(prefix="cfx-validation-") as scratch:
        folder = Path(scratch) if args.out is None else args.out.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            validation = run_validation(folder, size, args.effects, args.seed, args.threads)
        except (UserInputError, StageFailed) as exc:
            print(exc, file=sys.stderr)
            return 2 if isinstance(exc, UserInputError) else 1
        print(table(validation))
        if args.update_card:
            card = validation.checkpoint / "README.md"
            card.write_text(card_with_validation(card.read_text(encoding="utf-8"),
                                                 _card_text(validation)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
