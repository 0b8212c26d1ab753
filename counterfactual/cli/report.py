"""``cfx report``: a self-contained HTML + Markdown report of a run, with figures and tables.

This module parses the options and prints; :func:`cfx.counterfactual.report.run_report` (whose
docstring says what is read and written) makes the report.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import (
    label_vocabulary,
    labels_option,
    no_verify_option,
    quiet_option,
)
from cfx.counterfactual.progress import console
from cfx.counterfactual.report import ReportConfig, run_report
from cfx.counterfactual.run_folder import NOT_VERIFIED


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder made by cfx sweep and cfx stats."),
    template: str = typer.Option("summary", "--template",
                                 help="summary, paper, or a Jinja2 file (*.html or *.md)."),
    out: Path | None = typer.Option(None, "--out",
                                    help="Report folder (default RUN/report/<template>)."),
    subjects: int = typer.Option(4, "--subjects", help="Subjects shown in animations and maps."),
    slices: int = typer.Option(5, "--slices", help="Axial slices per still montage and map, "
                                                   "evenly spaced through the lungs."),
    include: list[Path] = typer.Option(
        [], "--include", help="A file a user template may include, as user/<file name> "
                              "(repeatable); no other file of yours is readable."),
    labels: Path | None = labels_option(),
    no_verify: bool = no_verify_option(),
    quiet: bool = quiet_option("No progress or closing message."),
) -> None:
    """Write index.html, report.md, figures/ and tables/ for a run with statistics."""
    out = run_report(ReportConfig(
        run=run, template=template, out=out, subjects=subjects, slices=slices,
        include=tuple(include), labels=label_vocabulary(labels), verify=not no_verify,
        quiet=quiet))
    if no_verify:
        console.print(f"warning: {NOT_VERIFIED}", markup=False, soft_wrap=True)
    if not quiet:
        then = (f"cfx report {run} --template paper" if template == "summary" else
                f"open {out / 'index.html'} in a browser")
        console.print(f"report written to {out / 'index.html'} and {out / 'report.md'}; next: "
                      f"{then}", markup=False)
