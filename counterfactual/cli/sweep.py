"""``cfx sweep``: the same subjects under each value of one attribute, with shared noise."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from counterfactual.attributes import DEFAULT_ATTRIBUTES, load_attributes, parse_values
from counterfactual.cli.app import app
from counterfactual.cohort import cohort_from_masks, load_cohort
from counterfactual.errors import UserInputError
from counterfactual.labels import DEFAULT_VOCABULARY, load_vocabulary
from counterfactual.prompts import DEFAULT_TEMPLATE, load_template
from counterfactual.sweep.engine import SweepConfig, run_sweep
from counterfactual.sweep.generators import resolve_generator


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UserInputError(f"--seeds: {text!r} is not a comma-separated list of integers, "
                             "e.g. 0,1,2") from None


@app.command()
def sweep(
    attribute: str = typer.Option(..., "--attribute", "-a", help="Clinical attribute to change."),
    values: str = typer.Option(..., "--values", help="Comma-separated values, e.g. yes,no."),
    cohort: Path | None = typer.Option(None, "--cohort", help="Cohort folder or CSV."),
    mask: list[Path] = typer.Option([], "--mask", help="A mask file (repeatable), no records."),
    model: str = typer.Option("phantom-oracle", "--model", help="Model name."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated noise seeds."),
    reference: str | None = typer.Option(None, "--reference",
                                         help="Value the differences are taken against "
                                              "(default: the first value)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/<attribute>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    attributes: Path | None = typer.Option(None, "--attributes",
                                           help="Attribute vocabulary JSON file."),
    labels: Path | None = typer.Option(None, "--labels", help="Label vocabulary JSON file."),
    template: Path | None = typer.Option(None, "--template", help="Prompt template file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Generate every subject under each value of one attribute, pairs sharing their noise."""
    vocabulary = DEFAULT_ATTRIBUTES if attributes is None else load_attributes(attributes)
    parsed = parse_values(attribute, values, vocabulary)
    ref = None if reference is None else vocabulary.attribute(attribute).canonical(reference)
    if (cohort is None) == (not mask):
        raise UserInputError("give either --cohort DIR or one or more --mask FILE")
    table = load_cohort(cohort) if cohort is not None else cohort_from_masks(mask)
    config = SweepConfig(
        attribute=attribute, values=parsed, seeds=_seeds(seeds),
        out=out if out is not None else Path("runs") / attribute, reference=ref, resume=resume,
        quiet=quiet, command=("cfx", *sys.argv[1:]), attributes=vocabulary,
        labels=DEFAULT_VOCABULARY if labels is None else load_vocabulary(labels))
    generator = resolve_generator(model, table)
    result = run_sweep(config, table, generator,
                       DEFAULT_TEMPLATE if template is None else load_template(template))
    if quiet:
        return
    summary = Table(title=f"cfx sweep {attribute}: {', '.join(map(str, parsed))}")
    summary.add_column("items", justify="right")
    summary.add_column("generated", justify="right")
    summary.add_column("reused", justify="right")
    summary.add_column("s / volume", justify="right")
    summary.add_column("outputs")
    summary.add_row(str(result.items), str(result.generated), str(result.reused),
                    f"{result.seconds_per_volume:.2f}", str(result.out))
    Console().print(summary)
