"""``cfx render``: GIFs and mosaics of a sweep's volumes and difference maps."""

from __future__ import annotations

import os
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
from counterfactual.sweep.manifest import MANIFEST, read_manifest
from counterfactual.sweep.naming import (
    check_seed,
    check_subject_id,
    diff_name,
    inside,
    subject_dir,
    value_label,
)
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
    where = str(run / MANIFEST)
    attribute, reference, known, items, masks = _contents(run, manifest)
    missing = [s for s in subject if s not in known]
    if missing:
        raise UserInputError(f"--subject: {', '.join(missing)} not in {run}; subjects: "
                             f"{', '.join(known)}")
    chosen = subject or known
    items = [i for i in items if i["subject"] in chosen]
    by_key = {(i["subject"], i["seed"], i["value"]): i for i in items}
    diffs = {}
    for item in items:  # every name checked and every input found before the first write
        if not (run / item["path"]).exists():
            raise UserInputError(f"{run / item['path']}: missing; finish the run with "
                                 "cfx sweep --resume")
        if (item["subject"], item["seed"], reference) not in by_key:
            raise UserInputError(f"{where}: subject {item['subject']} seed {item['seed']} has "
                                 f"no {reference!r} item to compare with; regenerate the run")
        if item["value"] != reference:
            rel = diff_name(item["subject"], attribute, value_label(item["value"]),
                            value_label(reference), item["seed"], where)
            if not inside(run, rel, where).exists():
                raise UserInputError(f"{run / rel}: missing; finish the run with cfx sweep "
                                     "--resume")
            diffs[id(item)] = rel
    out = inside(run, "render", f"{run}: render folder")
    folders = {s: subject_dir(out, s, where) for s in chosen}
    lungs: dict[str, np.ndarray | None] = {}
    for item in track(items, "render", quiet=quiet):
        ct = read_volume(run / item["path"])
        stem = Path(item["path"]).name.removesuffix("_ct.nii.gz")
        folder = folders[item["subject"]]
        write_gif(folder / f"{stem}_axis-{axis}_ct.gif", ct_frames(ct.data, ct.affine, axis,
                                                                    window_wl, size), fps)
        write_png(folder / f"{stem}_axis-{axis}_mosaic.png",
                  mosaic(ct.data, ct.affine, axis, window=window_wl, min_size=size // 2))
        if item["value"] == reference:
            continue
        ref = read_volume(run / by_key[(item["subject"], item["seed"], reference)]["path"])
        rel = diffs[id(item)]
        diff = read_volume(run / rel)
        if item["subject"] not in lungs:  # one mask read per subject
            lungs[item["subject"]] = _lung(masks.get(item["subject"]), diff.shape)
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


_VALUE = (str, int, float, bool)


def _contents(run: Path, manifest: dict) -> tuple:
    """``(attribute, reference, subject ids, items, masks)`` of a run's manifest, every name and
    path checked so that nothing read or written leaves ``run``; items are dicts of ``subject``,
    ``seed``, ``value`` and ``path``, masks map a subject id to the mask the sweep read."""
    where = str(run / MANIFEST)
    try:
        settings = manifest["settings"]
        attribute, reference = settings["attribute"], settings["reference"]
        known = [check_subject_id(s, f"{where}: settings.subjects") for s in settings["subjects"]]
        items = []
        for k, item in enumerate(manifest["items"]):
            at = f"{where}: items[{k}]"
            entry = {"subject": check_subject_id(item["subject"], at),
                     "seed": check_seed(item["seed"], at), "value": item["value"],
                     "path": os.fspath(inside(run, item["path"], f"{at}.path")
                                       .relative_to(run))}
            if not isinstance(entry["value"], _VALUE) or entry["subject"] not in known:
                raise TypeError(f"items[{k}]")
            items.append(entry)
        masks = {s: Path(p) for s, p in manifest.get("masks", {}).items() if isinstance(p, str)}
        if not isinstance(reference, _VALUE):
            raise TypeError("settings.reference")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UserInputError(f"{where}: malformed manifest (missing or bad field {exc}); "
                             "regenerate the run with cfx sweep") from None
    return attribute, reference, known, items, masks


def _lung(mask_path: Path | None, shape: tuple) -> np.ndarray | None:
    """The subject's lung mask, when it is still where the run found it."""
    if mask_path is None or not mask_path.exists():
        return None
    mask = read_labels(mask_path)
    if mask.shape != shape:
        return None
    return np.isin(mask.data, DEFAULT_VOCABULARY.region_labels("lung"))
