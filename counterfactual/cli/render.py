"""``cfx render``: animations (animated PNG or GIF) and mosaics of a sweep's volumes and
difference maps.

This module parses the options and prints; :func:`cfx.counterfactual.render.run_render` (whose
docstring says what is read and written) makes the renders.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cfx.analysis.render.slices import AXES
from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import (
    choice,
    label_vocabulary,
    labels_option,
    look_up_option,
    no_verify_option,
    quiet_option,
)
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.progress import console
from cfx.counterfactual.render import ANIMATIONS, GIF_SETS, RenderConfig, run_render
from cfx.counterfactual.run_folder import NOT_VERIFIED

_GIFS_HELP = ("Which animations (the name is kept for existing scripts): "
              + "; ".join(f"{k}: {v}" for k, v in GIF_SETS.items()) + ".")
_ANIMATION_HELP = ("File format of every animation: "
                   + "; ".join(f"{k}: {v}" for k, v in ANIMATIONS.items()) + ".")


@app.command()
def render(
    run: Path = typer.Argument(..., help="Run folder made by cfx sweep."),
    subject: list[str] = typer.Option([], "--subject", help="Only this subject (repeatable)."),
    axis: str = typer.Option("axial", "--axis", help="axial, coronal or sagittal."),
    window: str = typer.Option("lung", "--window", help="lung, mediastinum or W,L in HU."),
    fps: float = typer.Option(8.0, "--fps", help="Frames per second."),
    size: int = typer.Option(256, "--size", help="Smallest image side in pixels (upsamples "
                                                   "small volumes)."),
    gifs: str = typer.Option("panels", "--gifs", callback=choice(tuple(GIF_SETS)),
                             help=_GIFS_HELP),
    animation: str = typer.Option("png", "--animation", callback=choice(tuple(ANIMATIONS)),
                                  help=_ANIMATION_HELP),
    labels: Path | None = labels_option(),
    no_verify: bool = no_verify_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Write, under RUN/render/, a reference | counterfactual | difference panel animation per
    contrast (animated PNG; --animation gif for GIF) and a mosaic PNG per volume; --gifs all adds
    an animation per volume and a difference animation."""
    try:
        look_up_option(axis, AXES)
    except ValueError as exc:
        raise UserInputError(f"--axis: {exc}") from None
    out = run_render(RenderConfig(
        run=run, subjects=tuple(subject), axis=axis, window=window, fps=fps, size=size,
        gifs=gifs, animation=animation, labels=label_vocabulary(labels), verify=not no_verify,
        quiet=quiet))
    if no_verify:
        console.print(f"warning: {NOT_VERIFIED}", markup=False, soft_wrap=True)
    if not quiet:
        console.print(f"renders written to {out}; next: cfx report {run}", markup=False)
