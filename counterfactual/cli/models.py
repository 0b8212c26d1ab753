"""``cfx models list`` / ``cfx models show``: the bundled and local checkpoints.

Both read ``config.json``, the model card and the weights' bytes (for the hash) only: no torch,
so they start in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from cfx.counterfactual.cli.app import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.sweep.catalog import bundled_models, find_checkpoint
from cfx.models.checkpoint_files import (
    WEIGHTS_FILE,
    CheckpointError,
    content_hash,
    read_config,
    sampling_block,
)

models_app = typer.Typer(help="List and describe generator checkpoints.", no_args_is_help=True)
app.add_typer(models_app, name="models")

_WIDTH = 220  # columns of tables written to a pipe or file (a terminal uses its own width)


def _stdout() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=_WIDTH)


def _local(folders: list[Path]) -> dict[str, Path]:
    """Checkpoint folders among ``folders`` and their direct subfolders."""
    found: dict[str, Path] = {}
    for folder in folders:
        candidates = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] \
            if folder.is_dir() else []
        for path in candidates:
            if (path / "config.json").is_file() and (path / WEIGHTS_FILE).is_file():
                found[str(path)] = path
    return found


def _variant(config: dict) -> str:
    """A GAN's text fusion, or a diffusion model's default sampling."""
    sampling = sampling_block(config)
    if sampling is None:
        return str(config["generator"].get("fusion"))
    return f"{sampling['steps']} {sampling['sampler'].upper()} steps, guidance " \
           f"{sampling['guidance']:g}"


def _row(label: str, source: str, folder: Path) -> list[str]:
    try:
        config = read_config(folder)
    except CheckpointError as exc:
        return [label, source, "unreadable", "", "", "", str(exc)[:40]]
    training = config.get("training", {})
    size = (folder / WEIGHTS_FILE).stat().st_size / 1e6
    return [label, source, f"{config['architecture']} ({_variant(config)})",
            config.get("text_encoder", {}).get("name", "?"), str(training.get("steps", "?")),
            f"{size:.1f} MB", content_hash(folder)[7:19]]


@models_app.command("list")
def list_models(
    folders: list[Path] = typer.Argument(None, help="Folders to search for checkpoints "
                                                    "(default: the current folder)."),
) -> None:
    """Bundled checkpoints and checkpoint folders in FOLDERS (and their subfolders)."""
    table = Table(title="generator checkpoints")
    for column in ("name", "source", "architecture", "text encoder", "steps", "weights",
                   "sha256"):
        table.add_column(column)
    table.add_row("phantom-oracle", "built in", "exact phantom renders", "—", "—", "—", "—")
    for name, folder in bundled_models().items():
        table.add_row(*_row(name, "bundled", folder))
    bundled = {p.resolve() for p in bundled_models().values()}
    for label, folder in _local(list(folders or [Path(".")])).items():
        if folder.resolve() not in bundled:
            table.add_row(*_row(label, "local", folder))
    _stdout().print(table)


@models_app.command("show")
def show(
    model: str = typer.Argument(..., metavar="NAME|DIR", help="Bundled name or checkpoint "
                                                             "folder."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print config.json only."),
) -> None:
    """The model card and configuration of a checkpoint."""
    folder = find_checkpoint(model)
    if folder is None:
        known = ", ".join(bundled_models()) or "none"
        raise UserInputError(f"models show: no model {model!r}; bundled: {known}; or give a "
                             "checkpoint folder")
    try:
        config = read_config(folder)
    except CheckpointError as exc:
        raise UserInputError(f"models show: {exc}") from None
    if as_json:
        typer.echo(json.dumps(config, indent=2))
        return
    card = folder / "README.md"
    out = _stdout()
    if card.is_file():
        out.print(Markdown(card.read_text(encoding="utf-8")))
    generator, encoder, labels = (config.get(key) if isinstance(config.get(key), dict) else {}
                                  for key in ("generator", "text_encoder", "labels"))
    lines = [f"folder: {folder}", f"content hash: {content_hash(folder)}",
             f"architecture: {config['architecture']}, "
             + (f"fusion {generator.get('fusion')}" if "sampling" not in config else
                f"{generator.get('schedule')} noise schedule, sampling {_variant(config)}")
             + f", channels {generator.get('channels')}",
             f"HU window: {config.get('hu_window')}",
             f"text encoder: {encoder.get('name')} ({encoder.get('width')}-d, "
             f"{encoder.get('identifier')})",
             f"labels: {labels.get('labels')}",
             f"cfx version: {config.get('cfx_version')}"]
    out.print("\n".join(lines), markup=False)
