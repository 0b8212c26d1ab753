"""``cfx render``: GIFs and mosaics of a sweep's volumes and difference maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from analysis.render.colour import parse_window
from analysis.render.gif import (
    ct_frames,
    diff_frames,
    mosaic,
    symmetric_limit,
    write_gif,
    write_png,
)
from analysis.render.slices import AXES
from counterfactual.cli.app import app
from counterfactual.errors import UserInputError
from counterfactual.labels import DEFAULT_VOCABULARY
from counterfactual.panels import contrast_panel
from counterfactual.progress import console, track
from counterfactual.sweep.manifest import read_manifest
from counterfactual.sweep.naming import diff_name, value_label
from counterfactual.volume import read_labels, read_volume


def _window(text: str) -> tuple[float, float]:
    try:
        return parse_window(text)
    except ValueError as exc:
        raise UserInputError(f"--window: {exc}") from None


@app.command()
def render(
    run: Path = typer.Argument(..., help="Run folder made by cfx sweep."),
    subject: list[str] = typer.Option([], "--subject", help="Only this subject (repeatable)."),
    axis: str = typer.Option("axial", "--axis", help="axial, coronal or sagittal."),
    window: str = typer.Option("lung", "--window", help="lung, mediastinum or W,L in HU."),
    fps: float = typer.Option(8.0, "--fps", help="Frames per second."),
    size: int = typer.Option(256, "--size", help="Smallest image side in pixels (upsamples "
                                                   "small volumes)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a GIF per volume, a difference GIF and a reference | counterfactual | difference
    panel per contrast, and a mosaic PNG per volume, under RUN/render/."""
    if axis not in AXES:
        raise UserInputError(f"--axis: {axis!r} is not one of {', '.join(AXES)}")
    if not fps > 0:
        raise UserInputError(f"--fps: must be > 0, got {fps:g}")
    if not 1 <= size <= 4096:
        raise UserInputError(f"--size: must be 1..4096 pixels, got {size}")
    window_wl = _window(window)
    manifest = read_manifest(run)
    settings = manifest["settings"]
    known = settings["subjects"]
    missing = [s for s in subject if s not in known]
    if missing:
        raise UserInputError(f"--subject: {', '.join(missing)} not in {run}; subjects: "
                             f"{', '.join(known)}")
    chosen = subject or known
    attribute, reference = settings["attribute"], settings["reference"]
    items = [i for i in manifest["items"] if i["subject"] in chosen]
    for item in items:
        if not (run / item["path"]).exists():
            raise UserInputError(f"{run / item['path']}: missing; finish the run with "
                                 "cfx sweep --resume")
    out = run / "render"
    by_key = {(i["subject"], i["seed"], i["value"]): i for i in items}
    lungs: dict[str, np.ndarray | None] = {}
    for item in track(items, "render", quiet=quiet):
        ct = read_volume(run / item["path"])
        stem = Path(item["path"]).name.removesuffix("_ct.nii.gz")
        folder = out / f"sub-{item['subject']}"
        write_gif(folder / f"{stem}_axis-{axis}_ct.gif", ct_frames(ct.data, ct.affine, axis,
                                                                    window_wl, size), fps)
        write_png(folder / f"{stem}_axis-{axis}_mosaic.png",
                  mosaic(ct.data, ct.affine, axis, window=window_wl, min_size=size // 2))
        if item["value"] == reference:
            continue
        ref = read_volume(run / by_key[(item["subject"], item["seed"], reference)]["path"])
        rel = diff_name(item["subject"], attribute, value_label(item["value"]),
                        value_label(reference), item["seed"])
        diff = read_volume(run / rel)
        if item["subject"] not in lungs:  # one mask read per subject
            lungs[item["subject"]] = _lung(Path(manifest["masks"][item["subject"]]), diff.shape)
        lung = lungs[item["subject"]]
        limit = symmetric_limit(diff.data, lung)
        dstem = Path(rel).name.removesuffix("_diff.nii.gz")
        write_gif(folder / f"{dstem}_axis-{axis}_diff.gif",
                  diff_frames(diff.data, diff.affine, axis, limit, reference=ref.data,
                              mask=lung, window=window_wl, min_size=size), fps)
        write_gif(folder / f"{dstem}_axis-{axis}_panel.gif",
                  contrast_panel(ref, ct, diff, lung, attribute, item["value"], reference, axis,
                                 window_wl, size), fps)
    if not quiet:
        console.print(f"renders written to {out}")


def _lung(mask_path: Path, shape: tuple) -> np.ndarray | None:
    """The subject's lung mask, when it is still where the run found it."""
    if not mask_path.exists():
        return None
    mask = read_labels(mask_path)
    if mask.shape != shape:
        return None
    return np.isin(mask.data, DEFAULT_VOCABULARY.region_labels("lung"))
