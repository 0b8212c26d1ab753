"""``cfx sweep``: the same subjects under each value of one attribute, with shared noise.

With no ``--cohort``/``--mask`` it sweeps the bundled demo cohort (9 phantom subjects).
``--shard i/n`` runs one slice of the (subject, seed) groups into a folder shared by all shards;
``--executor ray`` runs the groups as Ray tasks. Learned models generate on the grid they were
trained on; ``--grid model`` writes there instead of on each subject's grid. Diffusion models
also take ``--steps``, ``--guidance``, ``--eta`` and ``--from-ct [--strength S]`` (errors for the
other models).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from cfx.counterfactual.atomic import check_writable, claim_new
from cfx.counterfactual.attributes import parse_values
from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import (
    at_least,
    attributes_option,
    choice,
    device_option,
    given_attributes,
    label_vocabulary,
    labels_option,
    quiet_option,
)
from cfx.counterfactual.cohort import cohort_from_masks, load_cohort
from cfx.counterfactual.data import DEMO_COHORT
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.progress import console, stdout_console
from cfx.counterfactual.prompts import load_template
from cfx.counterfactual.sweep.catalog import DEFAULT_MODEL
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.sweep.executors import resolve_executor
from cfx.counterfactual.sweep.generators import resolve_generator
from cfx.counterfactual.sweep.request import SamplingOptions
from cfx.counterfactual.vocabularies import model_vocabularies


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UserInputError(f"--seeds: {text!r} is not a comma-separated list of integers, "
                             "e.g. 0,1,2") from None


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    index, _, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise UserInputError(f"--shard: got {text!r}; give i/n with 1 <= i <= n, e.g. 1/4 "
                             "(shards count from 1)")
    return index, count


@app.command()
def sweep(
    attribute: str = typer.Option(..., "--attribute", "-a", help="Clinical attribute to change."),
    values: str = typer.Option(..., "--values", help="Comma-separated values, e.g. yes,no."),
    cohort: Path | None = typer.Option(None, "--cohort",
                                       help="Cohort folder or CSV (default: the bundled demo "
                                            "cohort of 9 phantom subjects)."),
    mask: list[Path] = typer.Option([], "--mask", help="A mask file (repeatable), no records."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", metavar="NAME|DIR",
                              help="A bundled model (cfx models list), phantom-oracle (the "
                                   "phantom's exact effects), or a checkpoint folder."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated noise seeds."),
    reference: str | None = typer.Option(None, "--reference",
                                         help="Value the differences are taken against "
                                              "(default: the first value)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/<attribute>)."),
    resume: bool = typer.Option(False, "--resume", metavar="", help="Continue an interrupted run."),
    shard: str | None = typer.Option(None, "--shard", metavar="I/N",
                                     help="Run slice I of N of the subject × seed groups (I from "
                                          "1) into the run folder the other shards share."),
    executor: str = typer.Option("local", "--executor", metavar="local|ray",
                                 callback=choice(("local", "ray")),
                                 help="Run groups in this process or as Ray tasks "
                                      "(pip install 'cfx\\[ray]')."),
    batch_size: int = typer.Option(1, "--batch-size", callback=at_least(1),
                                   help="Volumes per forward pass, for models that batch."),
    device: str = device_option(),
    grid: str = typer.Option("subject", "--grid", metavar="subject|model",
                             callback=choice(("subject", "model")),
                             help="Learned models run on the grid they were trained on (the "
                                  "mask resampled nearest-neighbour, a CT linearly); write "
                                  "their outputs resampled back onto each subject's grid, or "
                                  "on the model's grid (masks written beside them)."),
    attributes: Path | None = attributes_option(),
    labels: Path | None = labels_option(),
    template: Path | None = typer.Option(None, "--template", help="Prompt template file."),
    guidance: float | None = typer.Option(None, "--guidance", metavar="W",
                                          help="Diffusion: classifier-free guidance weight; 0 "
                                               "ignores the record, 1 reads it plainly, W > 1 "
                                               "amplifies effects (default: the "
                                               "checkpoint's, 1)."),
    steps: int | None = typer.Option(None, "--steps", metavar="N",
                                     help="Diffusion: DDIM steps (default: the checkpoint's)."),
    from_ct: bool = typer.Option(False, "--from-ct", metavar="",
                                 help="Diffusion: edit each subject's own CT (the cohort must "
                                      "have one per subject) instead of sampling from noise."),
    strength: float | None = typer.Option(None, "--strength", metavar="S",
                                          help="With --from-ct: how far the CT is noised, in "
                                               "(0, 1]; small keeps more of it (default: 0.6)."),
    keep_outside: str | None = typer.Option(None, "--keep-outside", metavar="REGION",
                                            help="With --from-ct: hold every voxel outside "
                                                 "REGION (e.g. lung) to the subject's CT while "
                                                 "sampling, so the edit acts only inside it; "
                                                 "nothing outside can then count as evidence "
                                                 "of specificity."),
    eta: float | None = typer.Option(None, "--eta", metavar="E",
                                     help="Diffusion: DDIM stochasticity in [0, 1]; every value "
                                          "shares each step's noise (default: the "
                                          "checkpoint's, 0)."),
    quiet: bool = quiet_option("No progress bar or summary."),
) -> None:
    """Generate every subject under each value of one attribute, pairs sharing their noise."""
    # the checkpoint's attributes, labels and template; the user's must agree with them
    recorded = model_vocabularies(model, given_attributes(attributes), label_vocabulary(labels),
                                  None if template is None else load_template(template))
    vocabulary = recorded.attributes
    parsed = parse_values(attribute, values, vocabulary)
    ref = None if reference is None else vocabulary.attribute(attribute).canonical(reference)
    if cohort is not None and mask:
        raise UserInputError("give either --cohort DIR or one or more --mask FILE, not both")
    if mask:
        table = cohort_from_masks(mask)
    else:
        table = load_cohort(DEMO_COHORT if cohort is None else cohort)
    config = SweepConfig(
        attribute=attribute, values=parsed, seeds=_seeds(seeds),
        out=out if out is not None else Path("runs") / attribute, reference=ref, resume=resume,
        quiet=quiet, command=("cfx", *sys.argv[1:]), attributes=vocabulary,
        labels=recorded.labels,
        shard=_shard(shard), batch_size=batch_size, device=device, grid=grid)
    check_writable(config.out, "--out")
    claim_new(config.out)  # a failed sweep into a new folder removes it whole
    generator = resolve_generator(model, table, SamplingOptions(guidance, steps, from_ct,
                                                                strength, eta, keep_outside))
    result = run_sweep(config, table, generator,
                       recorded.template,
                       resolve_executor(executor))
    if quiet:
        return
    if cohort is None and not mask:
        console.print(f"no --cohort given: swept the bundled demo cohort ({len(table)} phantom "
                      "subjects)")
    summary = Table(title=f"cfx sweep {attribute}: {', '.join(map(str, parsed))}")
    # the progress bar counts subject × seed groups (all values of one group generate together)
    summary.add_column("groups", justify="right")
    summary.add_column("volumes", justify="right")
    summary.add_column("generated", justify="right")
    summary.add_column("reused", justify="right")
    summary.add_column("s / volume", justify="right")
    summary.add_column("outputs")
    summary.add_row(str(result.items // len(parsed)), str(result.items), str(result.generated),
                    str(result.reused),
                    f"{result.seconds_per_volume:.2f}", str(result.out.resolve()))
    stdout_console().print(summary)
    where = result.out.resolve()
    if result.complete:
        console.print(f"outputs in {where} (manifest.json lists every file); next: "
                      f"cfx stats {result.out}", markup=False)
    else:
        console.print(f"shard {shard} done; outputs in {where}; the run is complete when every "
                      "shard has finished", soft_wrap=True)
