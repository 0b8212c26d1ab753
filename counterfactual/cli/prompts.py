"""``cfx prompts``: show the exact text a generator will read for each subject (and each edit)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from cfx.counterfactual.attributes import canonicalize_record, edit, parse_values
from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import attribute_vocabulary
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.progress import stdout_console
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE, load_template


@app.command()
def prompts(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder or CSV."),
    attribute: str | None = typer.Option(None, "--attribute",
                                         help="Column to edit, e.g. smoking."),
    values: str | None = typer.Option(None, "--values",
                                      help="Comma-separated values of --attribute, e.g. yes,no."),
    template: Path | None = typer.Option(None, "--template",
                                         help="Jinja2 prompt template file."),
    vocabulary: Path | None = typer.Option(None, "--vocabulary",
                                           help="JSON file adding clinical attributes."),
) -> None:
    """Print each subject's prompt; with --attribute/--values, one row per subject and value."""
    if (attribute is None) != (values is None):
        given, missing = ("--attribute", "--values") if values is None else ("--values",
                                                                              "--attribute")
        raise UserInputError(f"{given} needs {missing}: give both (e.g. --attribute smoking "
                             "--values yes,no) or neither")
    prompt_template = DEFAULT_TEMPLATE if template is None else load_template(template)
    attributes = attribute_vocabulary(vocabulary)
    table = load_cohort(cohort)
    edits: tuple = (None,)
    if attribute is not None:
        table.check_columns([attribute], "--attribute")
        edits = parse_values(attribute, values, attributes)
    rows = []
    for subject in table.subjects:
        where = f"{table.source}, subject {subject.id}"
        record = canonicalize_record(subject.record, attributes, where)
        for value in edits:
            edited = record if value is None else edit(record, attribute, value, attributes)
            prompt = prompt_template.render(edited, f"subject {subject.id}")
            rows.append((subject.id, value, prompt))

    headers = ("subject", "prompt") if attribute is None else ("subject", attribute, "prompt")
    output = Table(*headers)
    for subject_id, value, prompt in rows:
        cells = (subject_id, Text(prompt)) if value is None else (subject_id, str(value),
                                                                  Text(prompt))
        output.add_row(*cells)
    counts = f"{len(table)} subjects"
    if attribute is not None:
        counts += f" × {len(edits)} values of {attribute}"
    stdout = stdout_console()
    stdout.print(f"{table.source}: {counts}; template {prompt_template.name} (sha256 "
                 f"{prompt_template.sha256[:12]})", markup=False, highlight=False, soft_wrap=True)
    stdout.print(output)
