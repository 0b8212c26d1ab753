"""``cfx audit``: is a run's counterfactual model sound? Composition, effectiveness, minimality,
reversibility and (on a phantom) agreement with the exact oracle, written to RUN/audit/."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from counterfactual.attributes import DEFAULT_ATTRIBUTES, load_attributes
from counterfactual.audit import CRITERIA, AuditConfig, run_audit
from counterfactual.cli.app import app
from counterfactual.labels import DEFAULT_VOCABULARY, load_vocabulary
from counterfactual.progress import console
from counterfactual.prompts import load_template


@app.command()
def audit(
    run: Path = typer.Argument(..., help="Run folder made by cfx sweep."),
    cohort: Path | None = typer.Option(
        None, "--cohort", help="Cohort with real CTs to train the effectiveness predictor on "
                               "(default: the run's cohort, when it has CTs)."),
    model: str | None = typer.Option(
        None, "--model", help="The run's model (checkpoint folder) if its recorded name does not "
                              "resolve here; its content hash must match the run's."),
    penalty: float = typer.Option(1.0, "--penalty",
                                  help="L2 penalty of the attribute predictor (> 0)."),
    device: str = typer.Option("auto", "--device",
                               help="Device of a learned model's regeneration: auto, cpu, cuda."),
    attributes: Path | None = typer.Option(None, "--attributes",
                                           help="The sweep's attribute vocabulary JSON file."),
    labels: Path | None = typer.Option(None, "--labels", help="Label vocabulary JSON file."),
    template: Path | None = typer.Option(None, "--template",
                                         help="The sweep's prompt template, if it has moved."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, notes or table."),
) -> None:
    """Audit a run's counterfactuals: null intervention, effectiveness, locality, oracle
    agreement; writes RUN/audit/audit.json and per-item tables."""
    config = AuditConfig(
        run=run, cohort=cohort, model=model, penalty=penalty, device=device, quiet=quiet,
        attributes=DEFAULT_ATTRIBUTES if attributes is None else load_attributes(attributes),
        labels=DEFAULT_VOCABULARY if labels is None else load_vocabulary(labels),
        template=None if template is None else load_template(template))
    result = run_audit(config, note=None if quiet else (
        lambda text: console.print(f"note: {text}", markup=False, soft_wrap=True)))
    if not quiet:
        out = Console()
        out.print(_table(result))
        for line in _notes(result):
            out.print(line, markup=False, highlight=False, soft_wrap=True)


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _table(result: dict) -> Table:
    values = ", ".join(map(str, result["values"]))
    table = Table(title=f"cfx audit: {result['attribute']} ({values}), model "
                        f"{result['model']['name']}")
    table.add_column("criterion / metric", no_wrap=True)
    for column in ("value", "unit", "chance / bar"):
        table.add_column(column, justify="right" if column != "unit" else "left")
    for name in CRITERIA:
        criterion = result["criteria"][name]
        table.add_row(f"[bold]{name}[/bold] ({criterion['status']})", "", "", "")
        for metric, entry in criterion["metrics"].items():
            beside = entry.get("chance", entry.get("bar"))
            table.add_row(f"  {metric}", _format(entry["value"]), entry["unit"],
                          "" if beside is None else _format(beside))
        table.add_section()
    return table


def _notes(result: dict) -> list[str]:
    return [f"{name}: {note}" for name in CRITERIA for note in result["criteria"][name]["notes"]]
