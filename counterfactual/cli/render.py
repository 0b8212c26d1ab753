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
from analysis.render.slices import AXES, mid_slice
from counterfactual.atomic import atomic_path, check_writable, claim_new
from counterfactual.cli.app import app
from counterfactual.cli.params import (
    label_vocabulary,
    labels_option,
    look_up_option,
    no_verify_option,
    quiet_option,
)
from counterfactual.errors import UserInputError
from counterfactual.panels import contrast_panel
from counterfactual.progress import console, track
from counterfactual.run_folder import NOT_VERIFIED, RunFolder
from counterfactual.sweep.naming import inside, subject_dir


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
    labels: Path | None = labels_option(),
    no_verify: bool = no_verify_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Write a GIF per volume, a difference GIF and a reference | counterfactual | difference
    panel per contrast, and a mosaic PNG per volume, under RUN/render/."""
    try:
        look_up_option(axis, AXES)
    except ValueError as exc:
        raise UserInputError(f"--axis: {exc}") from None
    if not fps > 0:
        raise UserInputError(f"--fps: must be > 0, got {fps:g}")
    if not 1 <= size <= 4096:
        raise UserInputError(f"--size: must be 1..4096 pixels, got {size}")
    window_wl = _window(window)
    vocabulary = label_vocabulary(labels)
    run_folder = RunFolder.open(run, vocabulary, verify=not no_verify)
    known = list(run_folder.subjects)
    missing = [s for s in subject if s not in known]
    if missing:
        raise UserInputError(f"--subject: {', '.join(missing)} not in {run}; subjects: "
                             f"{', '.join(known)}")
    chosen = subject or known
    reference = run_folder.reference
    keys = [(s, v, k) for s in chosen for k in run_folder.seeds for v in run_folder.values]
    # every input found and checked against the manifest before the first write
    run_folder.check([run_folder.ct_path(*key) for key in keys] +
                     [run_folder.difference_path(*key) for key in keys if key[1] != reference])
    out = inside(run, "render", f"{run}: render folder")
    check_writable(out, f"{run}: render folder")
    claim_new(out)  # a failed first render removes the folder whole
    folders = {s: subject_dir(out, s, str(run_folder.root / "manifest.json")) for s in chosen}
    lungs: dict[str, np.ndarray | None] = {}
    for name, value, seed in track(keys, "render", quiet=quiet):
        ct = run_folder.ct(name, value, seed)
        if name not in lungs:  # one mask read per subject
            lungs[name] = _lung(run_folder, name, ct.shape)
        lung = lungs[name]
        # every GIF opens on the mid-lung slice (the frame HTML, Markdown and print show)
        first = mid_slice(lung if lung is not None else np.zeros(ct.shape, bool), ct.affine, axis)
        stem = run_folder.ct_path(name, value, seed).name.removesuffix("_ct.nii.gz")
        folder = folders[name]
        _save(write_gif, folder / f"{stem}_axis-{axis}_ct.gif",
              ct_frames(ct.data, ct.affine, axis, window_wl, size), fps, first)
        _save(write_png, folder / f"{stem}_axis-{axis}_mosaic.png",
              mosaic(ct.data, ct.affine, axis, window=window_wl, min_size=size // 2))
        if value == reference:
            continue
        ref = run_folder.ct(name, reference, seed)
        diff = run_folder.difference(name, value, seed)
        limit = symmetric_limit(diff.data, lung)
        dstem = run_folder.difference_path(name, value, seed).name.removesuffix("_diff.nii.gz")
        _save(write_gif, folder / f"{dstem}_axis-{axis}_diff.gif",
              diff_frames(diff.data, diff.affine, axis, limit, reference=ref.data, mask=lung,
                          window=window_wl, min_size=size), fps, first)
        _save(write_gif, folder / f"{dstem}_axis-{axis}_panel.gif",
              contrast_panel(ref, ct, diff, lung, run_folder.attribute, value, reference, axis,
                             window_wl, size), fps, first)
    if no_verify:
        console.print(f"warning: {NOT_VERIFIED}", markup=False, soft_wrap=True)
    if not quiet:
        console.print(f"renders written to {out}; next: cfx report {run}", markup=False)


def _save(write, path: Path, *args) -> None:
    """``write(path, *args)`` through a temporary name, so a failed command can undo it."""
    with atomic_path(path, suffix=path.suffix) as tmp:
        write(tmp, *args)


def _lung(run: RunFolder, subject: str, shape: tuple) -> np.ndarray | None:
    """The subject's lungs (the vocabulary's ``lung`` region), when its mask is still where the
    run found it and on the volume's grid."""
    if not run.mask_path(subject).exists():
        return None
    mask = run.mask(subject)
    if mask.shape != shape:
        return None
    return np.isin(mask.data, run.labels.region_labels("lung"))
