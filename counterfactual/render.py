"""The ``cfx render`` recipe: animations and still mosaics of a sweep's volumes and difference
maps.

Reads the run through :class:`~cfx.counterfactual.run_folder.RunFolder` (every volume checked
against the sha256 its manifest recorded, before the first write) and writes under
``RUN/render/sub-<id>/``, per subject, seed and value:

- always: a mosaic PNG per volume (``..._axis-<axis>_mosaic.png``, the still) and, per contrast,
  the reference | counterfactual | difference panel animation (``..._axis-<axis>_panel.png``),
  which holds every volume and difference map the run made;
- with ``gifs="all"`` also: an animation per volume (``..._ct.png``) and a difference animation
  per contrast (``..._diff.png``), each a column of the panel on its own.

Animations are animated PNG (APNG) by default, or GIF (``.gif``) with ``animation="gif"`` for
slide software (PowerPoint animates GIF, not APNG): the same pixels, the APNG 4x smaller on the
demo.
Every name ends in what it holds (``_mosaic``, ``_panel``, ``_ct``, ``_diff``), so a still and
an animation never share a name. Every animation opens on the mid-lung slice (the frame HTML,
Markdown, print and viewers that do not animate show). A first render that fails removes the
render folder whole.

:func:`run_render` takes a :class:`RenderConfig` (what ``cfx render`` parsed) and returns the
folder it wrote; the CLI only parses and prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfx.analysis.render.colour import parse_window
from cfx.analysis.render.gif import (
    ANIMATION_WRITERS,
    ct_frames,
    diff_frames,
    mosaic,
    symmetric_limit,
    write_png,
)
from cfx.analysis.render.slices import AXES, mid_slice
from cfx.counterfactual.atomic import atomic_path, check_writable, claim_new
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import LabelVocabulary
from cfx.counterfactual.panels import contrast_panel
from cfx.counterfactual.progress import track
from cfx.counterfactual.run_folder import RunFolder
from cfx.counterfactual.sweep.naming import inside, subject_dir

__all__ = ["ANIMATIONS", "GIF_SETS", "RenderConfig", "check_render_options", "run_render"]

GIF_SETS = {
    "panels": "a reference | counterfactual | difference animation per contrast and seed (it "
              "shows every volume and difference map) and a mosaic PNG per volume",
    "all": "the panels and mosaics, plus an animation per volume and a difference animation per "
           "contrast and seed (each a column of a panel on its own)",
}
"""Values of ``--gifs`` and what each writes (the flag keeps its name for existing scripts; the
files are animations of the format ``--animation`` names)."""

ANIMATIONS = {
    "png": "animated PNG (APNG, .png), shown by browsers and Markdown viewers",
    "gif": "GIF (.gif), for slide software that animates GIF only; the same pixels, 4x the bytes "
           "on the demo",
}
"""Values of ``--animation``: the file format of every animation, and what it is for."""



@dataclass(frozen=True)
class RenderConfig:
    """What ``cfx render`` writes (already parsed).

    Attributes
    ----------
    run : Path
        Run folder made by ``cfx sweep``.
    subjects : tuple of str
        Only these subjects; empty: every subject of the run.
    axis : str
        ``axial``, ``coronal`` or ``sagittal``: the slicing axis of every animation and mosaic.
    window : str or tuple of float
        ``lung``, ``mediastinum``, ``"W,L"`` or (width, level), in HU.
    fps : float
        Animation frames per second, > 0.
    size : int
        Smallest image side in pixels (small volumes are upsampled), 1..4096.
    gifs : str
        A key of :data:`GIF_SETS`: ``panels`` (default) or ``all``.
    animation : str
        A key of :data:`ANIMATIONS`: ``png`` (default, animated PNG) or ``gif``.
    labels : LabelVocabulary, optional
        The user's ``--labels`` (its labels must be the run's); default: the run's.
    verify : bool
        Check every volume read against the sha256 its manifest recorded.
    quiet : bool
        No progress bar.
    """

    run: Path
    subjects: tuple[str, ...] = ()
    axis: str = "axial"
    window: str | tuple[float, float] = "lung"
    fps: float = 8.0
    size: int = 256
    gifs: str = "panels"
    animation: str = "png"
    labels: LabelVocabulary | None = None
    verify: bool = True
    quiet: bool = False


def check_render_options(config: RenderConfig) -> tuple[float, float]:
    """Refuse an option out of range before any file is read; return the window (W, L) in HU.

    Raises
    ------
    UserInputError
        One line naming the option, the value and what is allowed.
    """
    if config.axis not in AXES:
        raise UserInputError(f"--axis: got {config.axis!r}; choose one of {', '.join(AXES)}")
    if config.gifs not in GIF_SETS:
        raise UserInputError(f"--gifs: got {config.gifs!r}; choose one of "
                             f"{', '.join(GIF_SETS)}")
    if config.animation not in ANIMATIONS:
        raise UserInputError(f"--animation: got {config.animation!r}; choose one of "
                             f"{', '.join(ANIMATIONS)}")
    if not config.fps > 0:
        raise UserInputError(f"--fps: must be > 0, got {config.fps:g}")
    if not 1 <= config.size <= 4096:
        raise UserInputError(f"--size: must be 1..4096 pixels, got {config.size}")
    try:
        return parse_window(config.window)
    except ValueError as exc:
        raise UserInputError(f"--window: {exc}") from None


def run_render(config: RenderConfig) -> Path:
    """Write the animations and mosaics of a run under ``RUN/render/``.

    Parameters
    ----------
    config : RenderConfig

    Returns
    -------
    Path
        The render folder, ``RUN/render``.

    Raises
    ------
    UserInputError
        A bad option, an unknown subject, a run whose volumes differ from their recorded sha256
        or a render folder that cannot be written: before anything is written.
    """
    # 1. check the options, then open the run and find every volume it will read
    window = check_render_options(config)
    run, axis, size, fps = config.run, config.axis, config.size, config.fps
    folder = RunFolder.open(run, config.labels, verify=config.verify)
    known = list(folder.subjects)
    missing = [s for s in config.subjects if s not in known]
    if missing:
        raise UserInputError(f"--subject: {', '.join(missing)} not in {run}; subjects: "
                             f"{', '.join(known)}")
    chosen = list(config.subjects) or known
    reference = folder.reference
    keys = [(s, v, k) for s in chosen for k in folder.seeds for v in folder.values]
    folder.check([folder.ct_path(*key) for key in keys] +
                 [folder.difference_path(*key) for key in keys if key[1] != reference])
    # 2. claim the render folder (a failed first render removes it whole)
    out = inside(run, "render", f"{run}: render folder")
    check_writable(out, f"{run}: render folder")
    claim_new(out)
    dirs = {s: subject_dir(out, s, str(folder.root / "manifest.json")) for s in chosen}
    # 3. per volume: its mosaic (and animation); per contrast: its panel (and difference one)
    every = config.gifs == "all"
    animate, suffix = ANIMATION_WRITERS[config.animation], f".{config.animation}"
    lungs: dict[str, np.ndarray | None] = {}
    for name, value, seed in track(keys, "render", quiet=config.quiet):
        ct = folder.ct(name, value, seed)
        if name not in lungs:  # one mask read per subject
            lungs[name] = _lung(folder, name, ct.shape)
        lung = lungs[name]
        first = mid_slice(lung if lung is not None else np.zeros(ct.shape, bool), ct.affine, axis)
        stem = f"{folder.ct_path(name, value, seed).name.removesuffix('_ct.nii.gz')}_axis-{axis}"
        if every:
            _save(animate, dirs[name] / f"{stem}_ct{suffix}",
                  ct_frames(ct.data, ct.affine, axis, window, size), fps, first)
        _save(write_png, dirs[name] / f"{stem}_mosaic.png",
              mosaic(ct.data, ct.affine, axis, window=window, min_size=size // 2))
        if value == reference:
            continue
        ref = folder.ct(name, reference, seed)
        diff = folder.difference(name, value, seed)
        dstem = (f"{folder.difference_path(name, value, seed).name.removesuffix('_diff.nii.gz')}"
                 f"_axis-{axis}")
        if every:
            _save(animate, dirs[name] / f"{dstem}_diff{suffix}",
                  diff_frames(diff.data, diff.affine, axis, symmetric_limit(diff.data, lung),
                              reference=ref.data, mask=lung, window=window, min_size=size),
                  fps, first)
        _save(animate, dirs[name] / f"{dstem}_panel{suffix}",
              contrast_panel(ref, ct, diff, lung, folder.attribute, value, reference, axis,
                             window, size), fps, first)
    return out


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
