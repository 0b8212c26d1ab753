"""The grid a model was trained on, and fitting each subject's volumes to it and back.

A checkpoint's ``config.json`` records its training grid in a ``grid`` block (:class:`ModelGrid`):
voxel spacing (mm), orientation (nibabel axis codes, ``RAS``), training patch (voxels), field of
view (mm) and HU window. Before a sweep, each subject's grid is compared with it
(:func:`fit_subject`): the mask is resampled (nearest neighbour) onto the model's spacing and
orientation over the same physical extent, the model generates there, and its outputs are
resampled back onto the subject's own grid and affine (:class:`ResampledGenerator`), so every
output aligns voxel for voxel with the input mask.

Intensities (a CT for ``--from-ct``, the generated CTs) are resampled *linearly*: trilinear
interpolation stays within the range of the neighbouring voxels, so it adds no overshoot at the
~1000 HU steps between lung, soft tissue and air (B-spline rings there, which moves lung means
and the share of voxels below -950 HU), and it is exact for a constant shift. Outside the
source grid (less than one voxel at the edges, from rounding the shape) the nearest voxel is
extended. Interpolation is SimpleITK's; orientation changes are nibabel's axis permutations and
flips, so a grid that is already the model's is passed through untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from cfx.counterfactual.cohort import Cohort, Subject
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import LabelVocabulary
from cfx.counterfactual.volume import (
    AFFINE_TOLERANCE_MM,
    Volume,
    check_same_grid,
    read_geometry,
    read_labels,
    read_volume,
    write_volume,
)

__all__ = ["ModelGrid", "SubjectFit", "ResampledGenerator", "GridPlan", "model_grid",
           "fit_subject", "resample", "fit_run_generator", "plan_grid", "grid_warnings",
           "check_resumed_grid", "GRID_MODES", "EXTREME_FACTOR", "RESAMPLING", "GRID_FOLDER"]

GRID_MODES = ("subject", "model")  # --grid: where outputs are written
EXTREME_FACTOR = 4.0  # a voxel size changed more than this many times in any axis is warned about
FOV_SLACK = 1.01  # a subject's extent up to 1 % over the model's field of view is not warned about
GRID_FOLDER = "grid"  # run-relative folder of the model-grid masks and CTs (--grid model)
RESAMPLING = {"mask": "nearest neighbour", "ct": "linear", "outputs": "linear",
              "library": "SimpleITK", "orientation": "nibabel axis permutation and flips",
              "outside the source grid": "nearest voxel extended"}
_LPS = np.diag([-1.0, -1.0, 1.0])
_CODES = set("RLAPSI")


@dataclass(frozen=True)
class ModelGrid:
    """The grid a model was trained on.

    Attributes
    ----------
    spacing : tuple of 3 float
        Voxel size along the array axes, in mm.
    orientation : str
        nibabel axis codes of the array axes, e.g. ``"RAS"``.
    patch : tuple of 3 int
        Training patch, in voxels.
    field_of_view : tuple of 3 float
        Extent of the training volumes along the array axes, in mm.
    hu_window : tuple of 2 float
        The fixed HU window of the network's intensities.
    """

    spacing: tuple[float, float, float]
    orientation: str
    patch: tuple[int, int, int]
    field_of_view: tuple[float, float, float]
    hu_window: tuple[float, float]

    def to_json(self) -> dict:
        """The ``grid`` block of ``config.json``."""
        return {"spacing_mm": list(self.spacing), "orientation": self.orientation,
                "patch_voxels": list(self.patch), "field_of_view_mm": list(self.field_of_view),
                "hu_window": list(self.hu_window)}

    @classmethod
    def from_json(cls, block: dict, where: str) -> ModelGrid:
        """Read a ``grid`` block; ``where`` names it in errors."""
        try:
            grid = cls(tuple(float(s) for s in block["spacing_mm"]),
                       str(block["orientation"]).upper(),
                       tuple(int(p) for p in block["patch_voxels"]),
                       tuple(float(f) for f in block["field_of_view_mm"]),
                       tuple(float(h) for h in block["hu_window"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{where}: grid block unreadable ({type(exc).__name__}: {exc}); "
                                 f"expected {_EXAMPLE}") from None
        codes = grid.orientation
        valid = (len(codes) == 3 and set(codes) <= _CODES
                 and len({c.translate(str.maketrans("LPI", "RAS")) for c in codes}) == 3)
        if (len(grid.spacing) != 3 or len(grid.patch) != 3 or len(grid.field_of_view) != 3
                or len(grid.hu_window) != 2 or not valid
                or not all(s > 0 and math.isfinite(s) for s in grid.spacing)):
            raise UserInputError(f"{where}: grid block {block} is invalid; expected three "
                                 "positive spacings, three axis codes (one of R/L, A/P, S/I "
                                 f"each), e.g. {_EXAMPLE}")
        return grid


_EXAMPLE = ('"grid": {"spacing_mm": [10, 10, 10], "orientation": "RAS", "patch_voxels": '
            '[32, 32, 32], "field_of_view_mm": [320, 320, 320], "hu_window": [-1024, 1024]}')


def model_grid(config: dict, where: str) -> ModelGrid:
    """The training grid of a decoded checkpoint ``config.json`` (``where`` names the file).

    A checkpoint written before grids were recorded and trained on phantoms gets the grid its
    ``training_cohort`` states (phantom arrays follow RAS); any other without a ``grid`` block
    is refused.

    Raises
    ------
    UserInputError
        No ``grid`` block and no phantom training cohort, or an invalid block (one line saying
        what to add).
    """
    if "grid" in config:
        return ModelGrid.from_json(config["grid"], where)
    cohort = config.get("training_cohort", {})
    if cohort.get("kind") == "phantom" and "shape" in cohort and "spacing" in cohort:
        spacing = tuple(float(s) for s in cohort["spacing"])
        return ModelGrid(spacing, "RAS", tuple(config["training"]["arguments"]["patch"]),
                         tuple(n * s for n, s in zip(cohort["shape"], spacing, strict=True)),
                         tuple(config["hu_window"]))
    raise UserInputError(f"{where}: no grid block, so the voxel size the model was trained on is "
                         f"unknown; add {_EXAMPLE} with the training volumes' values")


def _orientation(affine: np.ndarray) -> str:
    return "".join(nib.aff2axcodes(affine))


def _geometry(shape: Sequence[int], affine: np.ndarray) -> dict:
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return {"shape": [int(n) for n in shape], "spacing_mm": [round(float(s), 6) for s in spacing],
            "orientation": _orientation(affine),
            "affine": np.round(affine, 6).tolist()}


@dataclass(frozen=True)
class SubjectFit:
    """One subject's grid against the model's.

    Attributes
    ----------
    shape : tuple of 3 int
        The subject's grid, ``(n_x, n_y, n_z)``.
    affine : ndarray of float64, shape (4, 4)
        Its voxel -> RAS mm map.
    model_shape : tuple of 3 int
        The model-spacing, model-orientation grid over the same extent, same centre.
    model_affine : ndarray of float64, shape (4, 4)
    extent : tuple of 3 float
        The subject's extent along the model grid's axes, in mm.
    factor : tuple of 3 float
        Model spacing / subject spacing along the model grid's axes (2 = twice as coarse).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    model_shape: tuple[int, int, int]
    model_affine: np.ndarray
    extent: tuple[float, float, float]
    factor: tuple[float, float, float]

    @property
    def identity(self) -> bool:
        """True when the subject's grid already is the model's (nothing to resample)."""
        return self.shape == self.model_shape and bool(np.allclose(
            self.affine, self.model_affine, atol=AFFINE_TOLERANCE_MM, rtol=0))

    def to_json(self) -> dict:
        return {"subject": _geometry(self.shape, self.affine),
                "model": _geometry(self.model_shape, self.model_affine),
                "resampled": not self.identity,
                "factor": [round(f, 4) for f in self.factor]}


def fit_subject(shape: Sequence[int], affine: np.ndarray, grid: ModelGrid) -> SubjectFit:
    """The model grid of one subject: its axes permuted and flipped to ``grid.orientation``
    (the subject's own rotation kept), ``grid.spacing``, covering the subject's extent (the
    shape rounded to whole voxels) with the same centre.

    Parameters
    ----------
    shape : sequence of 3 int
    affine : ndarray of float64, shape (4, 4)
        Voxel -> RAS mm of the subject's grid.
    grid : ModelGrid
    """
    shape = tuple(int(n) for n in shape)
    affine = np.asarray(affine, dtype=np.float64)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.axcodes2ornt(grid.orientation))
    turned = affine @ nib.orientations.inv_ornt_aff(transform, shape)
    turned_shape = tuple(shape[int(k)] for k in np.argsort(transform[:, 0]))
    spacing = np.linalg.norm(turned[:3, :3], axis=0)
    extent = np.asarray(turned_shape) * spacing
    target = np.asarray(grid.spacing)
    model_shape = tuple(max(1, int(round(e / t))) for e, t in zip(extent, target, strict=True))
    axes = turned[:3, :3] / spacing * target
    centre = turned[:3, :3] @ ((np.asarray(turned_shape) - 1) / 2) + turned[:3, 3]
    model_affine = np.eye(4)
    model_affine[:3, :3] = axes
    model_affine[:3, 3] = centre - axes @ ((np.asarray(model_shape) - 1) / 2)
    return SubjectFit(shape, affine, model_shape, model_affine,
                      tuple(float(e) for e in extent),
                      tuple(float(f) for f in target / spacing))


def _image(data: np.ndarray, affine: np.ndarray):
    """A SimpleITK image (LPS) of an array in ``(x, y, z)`` order with its RAS affine."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data)))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in (_LPS @ affine[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(o) for o in _LPS @ affine[:3, 3]])
    return image


def resample(data: np.ndarray, affine: np.ndarray, shape: Sequence[int],
             target_affine: np.ndarray, interpolation: str) -> np.ndarray:
    """``data`` on the grid ``(shape, target_affine)``, by SimpleITK.

    Parameters
    ----------
    data : ndarray, shape (n_x, n_y, n_z)
        HU (float) or labels (integer).
    affine : ndarray of float64, shape (4, 4)
        Voxel -> RAS mm of ``data``.
    shape : sequence of 3 int
    target_affine : ndarray of float64, shape (4, 4)
    interpolation : {"nearest", "linear"}
        Nearest neighbour for labels, trilinear for intensities.

    Returns
    -------
    ndarray, shape ``shape``
        The dtype of ``data``; target voxels outside ``data``'s grid take the nearest voxel.
    """
    import SimpleITK as sitk

    method = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear}[interpolation]
    source = _image(data, affine)
    reference = _image(np.zeros(tuple(int(n) for n in shape)[::-1], np.uint8).T, target_affine)
    out = sitk.Resample(source, reference, sitk.Transform(), method, 0.0,
                        source.GetPixelID(), True)
    return np.transpose(sitk.GetArrayFromImage(out)).astype(data.dtype, copy=False)


class ResampledGenerator:
    """A learned generator run on its own training grid for subjects on any grid.

    ``generate`` resamples the mask (nearest neighbour) and, when the model edits each
    subject's CT, the CT (linear) onto the subject's model grid (:func:`fit_subject`), calls the
    wrapped generator there and resamples each output back (linear) onto the mask's grid. A
    subject already on the model grid is passed straight through. Everything else (name, hash,
    sampling, ``check``, ``configure``) is the wrapped generator's.

    Parameters
    ----------
    inner : LearnedGenerator or LearnedDiffusionGenerator
    grid : ModelGrid
    """

    def __init__(self, inner, grid: ModelGrid):
        self.inner = inner
        self.grid = grid
        self.name = inner.name
        self.content_hash = inner.content_hash
        self.text_encoder = inner.text_encoder
        self.folder = getattr(inner, "folder", None)
        self.sampling = getattr(inner, "sampling", None)

    def check(self, cohort: Cohort, attribute: str) -> None:
        self.inner.check(cohort, attribute)

    def configure(self, device: str = "cpu", batch_size: int = 1) -> None:
        method = getattr(self.inner, "configure", None)
        if method is not None:
            method(device=device, batch_size=batch_size)

    def generate(self, subject: Subject, mask: Volume, attribute: str, requests: Sequence,
                 seed: int) -> list[np.ndarray]:
        """One float32 HU volume on the mask's grid per request, all from one noise draw (drawn
        on the model grid)."""
        fit = fit_subject(mask.shape, mask.affine, self.grid)
        extra = {}
        if (self.sampling or {}).get("from_ct") or (getattr(self.inner, "body", None)
                                                    and subject.ct is not None):
            ct = read_volume(subject.ct)
            if not fit.identity:  # a subject's CT shares its mask's grid
                check_same_grid(mask, ct)
            if not (fit.identity and ct.shape == mask.shape and np.allclose(
                    ct.affine, mask.affine, atol=AFFINE_TOLERANCE_MM, rtol=0)):
                extra["ct"] = Volume(resample(ct.data, ct.affine, fit.model_shape,
                                              fit.model_affine, "linear"), fit.model_affine,
                                     ct.source)
            del ct  # the subject-grid CT is not held while the model generates
        if fit.identity:  # a mask written on the model grid (--grid model) is used as it is
            return self.inner.generate(subject, mask, attribute, requests, seed, **extra)
        on_model = Volume(resample(mask.data, mask.affine, fit.model_shape, fit.model_affine,
                                   "nearest"), fit.model_affine, mask.source)
        volumes = self.inner.generate(subject, on_model, attribute, requests, seed, **extra)
        return [resample(np.asarray(v, np.float32), fit.model_affine, fit.shape, fit.affine,
                         "linear") for v in volumes]


@dataclass(frozen=True)
class GridPlan:
    """How a sweep fits its cohort to a model's grid.

    Attributes
    ----------
    grid : ModelGrid
    mode : str
        ``"subject"`` (outputs on each subject's grid) or ``"model"`` (on the model grid).
    fits : dict of str to SubjectFit
        Per subject id.
    generator : ResampledGenerator
    cohort : Cohort
        The cohort the jobs read: the original, or (``mode="model"``) its masks and CTs on the
        model grid under :data:`GRID_FOLDER` of the run.
    """

    grid: ModelGrid
    mode: str
    fits: dict[str, SubjectFit]
    generator: ResampledGenerator
    cohort: Cohort

    def settings(self) -> dict:
        """What a resumed run must share."""
        return {"mode": self.mode, "model_spacing_mm": list(self.grid.spacing),
                "orientation": self.grid.orientation}

    def manifest(self, out: Path) -> dict:
        """The manifest's ``grid`` block: both grids per subject and the resampling."""
        subjects = {}
        for subject in self.cohort:
            entry = self.fits[subject.id].to_json()
            if self.mode == "model":
                entry["model_grid_mask"] = str(subject.mask.relative_to(out))
                if subject.ct is not None:
                    entry["model_grid_ct"] = str(subject.ct.relative_to(out))
            subjects[subject.id] = entry
        return {"mode": self.mode, "model": self.grid.to_json(), "resampling": RESAMPLING,
                "subjects": subjects}

    def write_model_grid(self, original: Cohort, labels: LabelVocabulary) -> None:
        """Write each subject's mask (and CT, where the generator reads it) on the model grid
        where :attr:`cohort` names them (``mode="model"`` only; the same bytes on every
        call)."""
        for source, target in zip(original, self.cohort, strict=True):
            fit = self.fits[source.id]
            target.mask.parent.mkdir(parents=True, exist_ok=True)
            mask = read_labels(source.mask, labels)
            write_volume(target.mask, resample(mask.data, mask.affine, fit.model_shape,
                                               fit.model_affine, "nearest"), fit.model_affine)
            if target.ct is not None:
                ct = read_volume(source.ct)
                write_volume(target.ct, resample(ct.data, ct.affine, fit.model_shape,
                                                 fit.model_affine, "linear"), fit.model_affine)


def plan_grid(generator, cohort: Cohort, mode: str, labels: LabelVocabulary,
              out: Path) -> GridPlan | None:
    """Fit ``cohort`` to ``generator``'s training grid; None for a generator that records none
    (the phantom oracle, which renders on each subject's own grid).

    Raises
    ------
    UserInputError
        An unknown ``mode``, a checkpoint without a grid (see :func:`model_grid`), or an
        unreadable mask.
    """
    if mode not in GRID_MODES:
        raise UserInputError(f"--grid: {mode!r} is not one of {', '.join(GRID_MODES)}")
    config = getattr(generator, "config", None)
    if not isinstance(config, dict):
        return None
    where = str(Path(getattr(generator, "folder", None) or generator.name) / "config.json")
    grid = model_grid(config, where)
    fits = {}
    for subject in cohort:
        fits[subject.id] = fit_subject(*read_geometry(subject.mask), grid)
    jobs = cohort
    if mode == "model":
        folder = out.resolve() / GRID_FOLDER
        from_ct = bool((getattr(generator, "sampling", None) or {}).get("from_ct"))
        body = bool(getattr(generator, "body", None))  # a body model reads the body from the CT
        jobs = replace(cohort, subjects=tuple(
            replace(s, mask=folder / f"sub-{s.id}_space-model_mask.nii.gz",
                    ct=folder / f"sub-{s.id}_space-model_ct.nii.gz"
                    if from_ct or (body and s.ct is not None) else None)
            for s in cohort))
    return GridPlan(grid, mode, fits, ResampledGenerator(generator, grid), jobs)


def fit_run_generator(generator, manifest: dict):
    """``generator`` as a run ran it: wrapped in :class:`ResampledGenerator` on the model grid
    the run's ``manifest.json`` records (its ``grid`` block), or as it is for a run without
    one (``cfx audit`` regenerates through this)."""
    block = manifest.get("grid")
    if block is None:
        return generator
    return ResampledGenerator(generator, ModelGrid.from_json(block["model"],
                                                             "manifest.json, grid.model"))


def grid_warnings(plan: GridPlan) -> list[str]:
    """One line per problem, with the numbers: resampling over :data:`EXTREME_FACTOR` times in
    any axis, or a subject larger than the model's training field of view."""
    lines = []
    grid, fits = plan.grid, plan.fits
    extreme = {k: f for k, f in fits.items() if max(max(x, 1 / x) for x in f.factor)
               > EXTREME_FACTOR}
    if extreme:
        sid, fit = max(extreme.items(), key=lambda kv: max(max(x, 1 / x) for x in kv[1].factor))
        spacing = np.asarray(grid.spacing) / np.asarray(fit.factor)
        lines.append(
            f"warning: {len(extreme)} of {len(fits)} subjects are resampled more than "
            f"{EXTREME_FACTOR:g}x in an axis onto the model's {_mm(grid.spacing)} mm grid "
            f"(worst: {sid}, {_mm(spacing)} mm, factor {_mm(fit.factor)}); the model sees "
            f"{'far coarser' if max(fit.factor) > EXTREME_FACTOR else 'far finer'} voxels than "
            "the scan has")
    larger = {k: f for k, f in fits.items()
              if any(e > FOV_SLACK * v for e, v in zip(f.extent, grid.field_of_view, strict=True))}
    if larger:
        sid, fit = max(larger.items(), key=lambda kv: max(
            e / v for e, v in zip(kv[1].extent, grid.field_of_view, strict=True)))
        lines.append(
            f"warning: {len(larger)} of {len(fits)} subjects are larger than the model's "
            f"training field of view {_mm(grid.field_of_view)} mm (largest: {sid}, "
            f"{_mm(fit.extent)} mm); the model never saw anatomy that far out")
    return lines


def check_resumed_grid(config: dict, spacing: Sequence[float], orientation: str,
                       where: str) -> None:
    """Refuse to resume training on a cohort whose grid is not the checkpoint's.

    Parameters
    ----------
    config : dict
        The checkpoint's decoded ``config.json``; one without a ``grid`` block (written before
        grids were recorded) is not compared.
    spacing : sequence of 3 float
        The cohort's training spacing now, in mm (the median over its masks).
    orientation : str
        Its axis codes now, e.g. ``"RAS"``.
    where : str
        Names the checkpoint's ``config.json`` in the message.

    Raises
    ------
    UserInputError
        Spacing differing by more than :data:`~cfx.counterfactual.volume.AFFINE_TOLERANCE_MM` in an
        axis, or another orientation (one line, with both grids).
    """
    if "grid" not in config:
        return
    saved = ModelGrid.from_json(config["grid"], where)
    same = (saved.orientation == str(orientation).upper() and np.allclose(
        saved.spacing, [float(s) for s in spacing], atol=AFFINE_TOLERANCE_MM, rtol=0))
    if not same:
        raise UserInputError(
            f"--resume: {where} was trained on {_mm(saved.spacing)} mm {saved.orientation} "
            f"voxels but its cohort now gives {_mm(spacing)} mm {str(orientation).upper()}; "
            "resume on the cohort it was trained on (or one resampled onto that grid), or start "
            "a new run")


def _mm(values) -> str:
    return "x".join(f"{float(v):.3g}" for v in values)
