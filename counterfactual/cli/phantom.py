"""``cfx phantom``: write a synthetic chest-CT cohort with planted effects and its truth."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from cfx.counterfactual.atomic import check_writable
from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import at_least, quiet_option
from cfx.counterfactual.phantom.anatomy import MIN_SIZE
from cfx.counterfactual.phantom.cohort import PhantomSettings, write_phantom
from cfx.counterfactual.phantom.effects import load_effects
from cfx.counterfactual.progress import console

MAX_SIZE = 1024
"""Most voxels along one axis of a phantom grid."""
MAX_VOXELS = 512 ** 3
"""Most voxels in a phantom grid (a 512³ float32 volume is 0.5 GB; the phantom holds several)."""


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < MIN_SIZE or max(shape) > MAX_SIZE:
        raise typer.BadParameter(f"got {text!r}; give three integers X,Y,Z, each from "
                                 f"{MIN_SIZE} to {MAX_SIZE}, e.g. 64,64,64")
    if math.prod(shape) > MAX_VOXELS:
        raise typer.BadParameter(f"got {text!r}, {math.prod(shape):,} voxels; a phantom has at "
                                 f"most {MAX_VOXELS:,} (512³)")
    return shape


def _parse_spacing(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        spacing = tuple(float(p) for p in parts)
    except ValueError:
        spacing = ()
    if len(spacing) == 1:
        spacing = spacing * 3
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise typer.BadParameter(f"got {text!r}; give a voxel size in mm > 0, one number or "
                                 "X,Y,Z, e.g. 5 or 0.8,0.8,2.5")
    return spacing


def _check_out(path: Path) -> Path:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        what = "a folder that is not empty" if path.is_dir() else "a file"
        raise typer.BadParameter(f"{path} is {what}; give a new or empty folder")
    check_writable(path, "--out")
    return path


@app.command()
def phantom(
    out: Path = typer.Option(..., "--out", callback=_check_out,
                             help="Cohort folder to create (new or empty)."),
    subjects: int = typer.Option(40, "--subjects", callback=at_least(1),
                                 help="Number of subjects."),
    shape: str = typer.Option("64,64,64", "--shape", callback=_parse_shape,
                              help="Grid size X,Y,Z in voxels."),
    spacing: str = typer.Option("5", "--spacing", callback=_parse_spacing,
                                help="Voxel size in mm: one number or X,Y,Z."),
    seed: int = typer.Option(0, "--seed", callback=at_least(0), help="Master seed."),
    effects: str = typer.Option("default", "--effects", metavar="FILE|default|none",
                                help="Planted effects: a JSON file, 'default' or 'none'."),
    quiet: bool = quiet_option("No progress output."),
) -> None:
    """Write a synthetic chest-CT cohort: masks, CTs, clinical.csv and truth.json.

    Default effects, on lung voxels only: smoking yes +20 HU; age -0.5 HU per year from 50;
    mortality dead +30 HU in the lower third; diagnosis IPF +150 HU in a subpleural band of the
    lower half, CTD-ILD +60 HU over the lower two thirds, UILD +75 HU like IPF.

    An effects file holds one entry per attribute, e.g.
    {"smoking": {"reference": "no", "values": {"yes": {"shift_hu": 40, "pattern": "lung"}}},
    "age": {"centre": 50, "slope_hu_per_unit": -0.5, "pattern": "lung"}}.
    """
    settings = PhantomSettings(
        subjects=subjects,
        shape=shape,
        spacing=spacing,
        seed=seed,
        effects=load_effects(effects),
    )
    write_phantom(out, settings, quiet=quiet)
    if not quiet:
        console.print(f"wrote {settings.subjects} subjects to {out}; next: cfx validate {out}",
                      markup=False)
