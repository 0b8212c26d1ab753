"""``cfx validate``: read every file of a cohort and check it before a long job."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import label_vocabulary, labels_option, quiet_option
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.labels import DEFAULT_VOCABULARY
from cfx.counterfactual.progress import stdout_console, track
from cfx.counterfactual.volume import check_same_grid, read_labels, read_volume


@app.command()
def validate(
    cohort: Path = typer.Argument(..., help="Cohort folder or CSV."),
    labels: Path | None = labels_option(),
    region: list[str] = typer.Option(["lung"], "--region",
                                     help="Region every mask must contain (repeatable)."),
    quiet: bool = quiet_option(),
) -> None:
    """Check a cohort: every mask against the label vocabulary, every CT against its mask."""
    vocabulary = label_vocabulary(labels) or DEFAULT_VOCABULARY  # a cohort records none
    for name in region:
        vocabulary.region_labels(name)
    table = load_cohort(cohort)
    summary = Table("subject", "shape", "spacing (mm)", "CT", *(f"{r} (mL)" for r in region),
                    title=f"{table.source}: {len(table)} subjects, all valid")
    for subject in track(table.subjects, "validating", quiet=quiet):
        mask = read_labels(subject.mask, vocabulary)
        if subject.ct is not None:
            check_same_grid(read_volume(subject.ct), mask)
        volumes = [vocabulary.region_mask(mask.data, r, mask.source).sum() * mask.voxel_ml
                   for r in region]
        summary.add_row(subject.id, "×".join(map(str, mask.shape)),
                        ", ".join(f"{s:.3g}" for s in mask.spacing),
                        "yes" if subject.ct is not None else "no",
                        *(f"{v:.1f}" for v in volumes))
    stdout_console().print(summary)
