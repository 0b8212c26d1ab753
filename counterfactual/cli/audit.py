"""``cfx audit``: is a run's counterfactual model sound? Composition, effectiveness, minimality,
reversibility and (on a phantom) agreement with the exact oracle, each with its thresholds and a
pass / warn / fail / not applicable verdict, written to RUN/audit/; ``--strict`` exits 1 when a
criterion fails."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from cfx.analysis.audit import DEFAULT_SPECIFICITY_RATIO, FAIL, PASS, WARN, Threshold
from cfx.counterfactual.atomic import check_writable
from cfx.counterfactual.audit import CRITERIA, AuditConfig, run_audit
from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import (
    attributes_option,
    device_option,
    given_attributes,
    label_vocabulary,
    labels_option,
    no_verify_option,
    quiet_option,
)
from cfx.counterfactual.progress import console, stdout_console
from cfx.counterfactual.prompts import load_template
from cfx.counterfactual.run_folder import NOT_VERIFIED


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
    specificity_ratio: float = typer.Option(
        DEFAULT_SPECIFICITY_RATIO, "--specificity-ratio",
        help="Minimality passes when the mean |Δ| outside the lungs is at most this fraction of "
             "the lung effect |mean Δ| (in (0, 1]; above 1 fails), as in cfx stats."),
    strict: bool = typer.Option(False, "--strict", metavar="",
                                help="Exit with code 1 when any criterion fails (for pipelines); "
                                     "the audit is written either way."),
    device: str = device_option("Device of a learned model's regeneration (auto: a GPU if one "
                                "is visible)."),
    attributes: Path | None = attributes_option("The sweep's attribute vocabulary JSON file."),
    labels: Path | None = labels_option(),
    template: Path | None = typer.Option(None, "--template",
                                         help="The sweep's prompt template (default: the run's)."),
    no_verify: bool = no_verify_option("Read the run's volumes without checking them against "
                                       "the sha256 its manifest recorded (said in the output "
                                       "and in audit.json)."),
    quiet: bool = quiet_option("No progress, notes or table."),
) -> None:
    """Audit a run's counterfactuals: null intervention, effectiveness, locality, oracle
    agreement, each with a verdict against stated thresholds and an overall verdict; writes
    RUN/audit/audit.json and per-item tables. With --strict, exits 1 on any failing criterion."""
    if run.is_dir():  # else RunFolder says what RUN is
        check_writable(run / "audit", f"{run}: audit folder", inside=False)
    config = AuditConfig(
        run=run, cohort=cohort, model=model, penalty=penalty, device=device, quiet=quiet,
        specificity_ratio=specificity_ratio, verify=not no_verify,
        attributes=given_attributes(attributes),
        labels=label_vocabulary(labels),
        template=None if template is None else load_template(template))
    result = run_audit(config, note=None if quiet else (
        lambda text: console.print(f"note: {text}", markup=False, soft_wrap=True)))
    if not quiet:
        out = stdout_console()
        out.print(_table(result))
        for line in _verdicts(result):
            out.print(line, highlight=False, soft_wrap=True)
        for line in _notes(result):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    if no_verify:
        console.print(f"warning: {NOT_VERIFIED}", markup=False, soft_wrap=True)
    if not quiet:
        console.print(f"audit written to {run / 'audit'}; next: cfx render {run}", markup=False)
    if strict and result["verdict"] == FAIL:
        failing = [name for name in CRITERIA if result["criteria"][name]["verdict"] == FAIL]
        if not quiet:
            console.print(f"cfx audit --strict: {', '.join(failing)} failed", markup=False)
        raise typer.Exit(code=1)


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


_STYLE = {PASS: "green", WARN: "yellow", FAIL: "bold red"}


def _verdict(verdict: str) -> Text:
    return Text(verdict, style=_STYLE.get(verdict, "dim"))


def _table(result: dict) -> Table:
    """One section per criterion: its name and verdict, then its metrics (value with unit, and
    the chance level or the thresholds the verdict applies)."""
    values = ", ".join(map(str, result["values"]))
    table = Table(title=f"cfx audit: {result['attribute']} ({values}), model "
                        f"{result['model']['name']}")
    table.add_column("criterion / metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("chance / threshold")
    for name in CRITERIA:
        criterion = result["criteria"][name]
        status = criterion["status"]  # said when not implied: a skipped criterion warns
        table.add_row(Text.assemble((name, "bold"), ": ", _verdict(criterion["verdict"]),
                                    f" ({status})" if status == "skipped" else ""), "", "")
        thresholds = {t["metric"]: Threshold.from_json(t) for t in criterion["thresholds"]}
        for metric, entry in criterion["metrics"].items():
            beside = (thresholds[metric].text() if metric in thresholds else
                      "" if entry.get("chance") is None else f"chance {_format(entry['chance'])}")
            unit = "" if entry["unit"] == "1" else f" {entry['unit']}"
            table.add_row(f"  {metric}", _format(entry["value"]) + unit, beside)
        table.add_section()
    return table


def _verdicts(result: dict) -> list[Text]:
    """One line per criterion (verdict and reason), then the overall verdict."""
    lines = [Text.assemble(f"{name}: ", _verdict(result["criteria"][name]["verdict"]),
                           f", {result['criteria'][name]['reason']}") for name in CRITERIA]
    return lines + [Text.assemble("overall: ", _verdict(result["verdict"]),
                                  f" ({result['verdict_reason']})")]


def _notes(result: dict) -> list[str]:
    return [f"{name}: {note}" for name in CRITERIA for note in result["criteria"][name]["notes"]]
