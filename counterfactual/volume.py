"""Reading, validating and writing 3D volumes: HU arrays with their RAS affine.

In memory a volume is a float32 array in nibabel's axis order ``(n_x, n_y, n_z)`` with a 4x4
affine mapping voxel indices to RAS millimetres, exactly as nibabel gives it. NIfTI is read with
nibabel; MHA/NRRD and DICOM series folders with SimpleITK (LPS, converted here). From DICOM only
geometry and intensities are kept: no header field reaches any output.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import Opener

from cfx.counterfactual.atomic import atomic_path
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary

__all__ = [
    "Volume",
    "read_volume",
    "read_labels",
    "write_volume",
    "write_stat_map",
    "check_same_grid",
    "check_affine",
    "dicom_series_files",
    "read_geometry",
    "AFFINE_TOLERANCE_MM",
    "ORTHOGONALITY_TOLERANCE",
    "MAX_VOXELS",
]

AFFINE_TOLERANCE_MM = 1e-3
ORTHOGONALITY_TOLERANCE = 1e-3  # largest |cosine| allowed between two voxel axes (~0.06°)
MAX_VOXELS = 2**30  # 4 GiB as float32: far above a whole-chest CT (512² × 1000 ≈ 2.6e8)
_DEFLATE_RATIO = 1032  # the most bytes one byte of a gzip (deflate) stream can expand to
_HEADER_SLACK = 1 << 16  # bytes: gzip headers, NIfTI extensions
_NIFTI = (".nii", ".nii.gz")
_ITK = (".mha", ".mhd", ".nrrd", ".nhdr")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image and where it sits in space.

    Attributes
    ----------
    data : ndarray, shape (n_x, n_y, n_z)
        float32 HU for images, int16 labels for label maps.
    affine : ndarray of float64, shape (4, 4)
        Voxel index -> RAS millimetres.
    source : str
        The file it came from (used in messages).
    """

    data: np.ndarray
    affine: np.ndarray
    source: str = "<memory>"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along the array axes, in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL: ``|det(affine[:3, :3])| / 1000``."""
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def check_affine(affine: np.ndarray, source: str) -> np.ndarray:
    """Return ``affine`` as float64 (4, 4) if it maps voxels to millimetres rigidly enough.

    Refused, with one line naming ``source``: a non-finite entry, a last row other than
    ``0 0 0 1``, a singular (or nearly singular) 3x3 part, and voxel axes that are not
    orthogonal within :data:`ORTHOGONALITY_TOLERANCE` (a sheared grid: volumes, distances and
    slices computed from it would be wrong).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise UserInputError(f"{source}: the affine is not a finite 4x4 matrix "
                             f"({np.round(affine, 4).tolist()}); fix the header's sform/qform")
    if not np.allclose(affine[3], (0, 0, 0, 1), atol=1e-6, rtol=0):
        raise UserInputError(f"{source}: the affine's last row is {affine[3].tolist()}, not "
                             "[0, 0, 0, 1]; fix the header's sform/qform")
    axes = affine[:3, :3]
    singular = np.linalg.svd(axes, compute_uv=False)
    if not singular[-1] > 1e-6 * singular[0]:
        raise UserInputError(f"{source}: the affine is singular (voxel size "
                             f"{np.round(np.linalg.norm(axes, axis=0), 4).tolist()} mm, "
                             f"|det| {abs(np.linalg.det(axes)):.3g}); fix the header's voxel "
                             "size (pixdim) or sform/qform")
    unit = axes / np.linalg.norm(axes, axis=0)
    cosine = float(np.abs(unit.T @ unit - np.eye(3)).max())
    if cosine > ORTHOGONALITY_TOLERANCE:
        angle = float(np.degrees(np.arccos(min(cosine, 1.0))))
        raise UserInputError(f"{source}: the affine is sheared (two voxel axes {angle:.2f}° "
                             "apart instead of 90°); resample it onto an orthogonal grid (e.g. "
                             "correct the gantry tilt) before using it with cfx")
    return affine


def _check_declared(path: Path, shape, itemsize: int, room: int | None) -> None:
    """Refuse a header whose declared voxels could not fit in the file, before any allocation.

    ``room`` is the most bytes of voxels the file can hold (None when they are kept in another
    file, as with a detached ``.mhd`` header: then only the :data:`MAX_VOXELS` cap applies).
    """
    dims = [int(d) for d in shape]
    voxels = math.prod(dims)
    if voxels == 0 or min(dims) < 0:
        raise UserInputError(f"{path}: header declares shape {tuple(dims)}, which holds no "
                             "voxels; re-export the volume")
    if voxels > MAX_VOXELS:
        raise UserInputError(f"{path}: header declares shape {tuple(dims)} ({voxels:.3g} voxels), "
                             f"more than the {MAX_VOXELS:.3g} cfx reads; crop or resample it")
    if room is not None and voxels * itemsize > room:
        raise UserInputError(f"{path}: header declares shape {tuple(dims)} "
                             f"({voxels * itemsize} bytes of voxels) but the "
                             f"{path.stat().st_size}-byte file can hold at most {max(room, 0)}; "
                             "the header is wrong or the file is truncated, re-export it")


def _room(path: Path, compressed: bool, offset: int = 0) -> int:
    """Bytes of voxels ``path`` can hold: a compressed (deflate) stream expands at most
    :data:`_DEFLATE_RATIO`-fold; an uncompressed file holds its size less the header."""
    size = path.stat().st_size
    return size * _DEFLATE_RATIO + _HEADER_SLACK if compressed else size - offset


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    header = img.header
    _check_declared(path, header.get_data_shape(), header.get_data_dtype().itemsize,
                    _room(path, _suffix(path) == ".nii.gz", int(header.get_data_offset())))
    return np.asarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(dicom_series_files(path))
        image = reader.Execute()  # GDCM applies RescaleSlope/Intercept: values are HU
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        itemsize = sitk.Image([1] * reader.GetDimension(),
                              reader.GetPixelID()).GetSizeOfPixelComponent()
        detached = _suffix(path) in (".mhd", ".nhdr")  # voxels in another file: cap only
        _check_declared(path, reader.GetSize(), itemsize * reader.GetNumberOfComponents(),
                        None if detached else _room(path, compressed=True))
        image = reader.Execute()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UserInputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components "
                             "per voxel; a CT or mask has one")
    data = sitk.GetArrayFromImage(image)  # (z, y, x) [+ more leading axes]
    data = np.transpose(data, tuple(range(data.ndim))[::-1])
    ndim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(ndim, ndim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing()[:3])
    lps[:3, 3] = image.GetOrigin()[:3]
    return data, _LPS_TO_RAS @ lps


def _load(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, Path]:
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: file not found")
    suffix = _suffix(path)
    if not path.is_dir() and suffix not in _NIFTI + _ITK:
        raise UserInputError(f"{path}: unsupported format {suffix or '(no extension)'!r}; use "
                             ".nii, .nii.gz, .mha, .mhd, .nrrd or a DICOM series folder")
    try:
        data, affine = _read_nifti(path) if suffix in _NIFTI else _read_itk(path)
    except UserInputError:
        raise
    except Exception as exc:  # nibabel/SimpleITK/zlib raise many types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"{path}: cannot read the volume ({reason}); the file may be "
                             "truncated or damaged, re-export it") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise UserInputError(f"{path}: expected a 3D volume, got shape {tuple(data.shape)}; "
                             "give one 3D image per file")
    return data, check_affine(affine, str(path)), path


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a CT as float32 HU with its RAS affine.

    Parameters
    ----------
    path : path
        ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd`` or a folder holding one DICOM series.

    Returns
    -------
    Volume
        ``data`` float32, shape (n_x, n_y, n_z), in HU.
    """
    data, affine, path = _load(path)
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        bad = int(np.size(data) - np.isfinite(data).sum())
        raise UserInputError(f"{path}: {bad} voxels are NaN or infinite; fix or re-export it")
    return Volume(data, affine, str(path))


def read_labels(path: str | os.PathLike,
                vocabulary: LabelVocabulary = DEFAULT_VOCABULARY) -> Volume:
    """Read a label map and check it against ``vocabulary``.

    Returns
    -------
    Volume
        ``data`` int16, shape (n_x, n_y, n_z); 0 is background.
    """
    data, affine, path = _load(path)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise UserInputError(f"{path}: mask has NaN or infinite values; a mask holds integer "
                                 "labels")
        if not np.array_equal(data, np.round(data)):
            raise UserInputError(f"{path}: mask has non-integer values (e.g. "
                                 f"{data[data != np.round(data)].flat[0]:g}); a mask holds integer "
                                 "labels")
    elif data.dtype.kind not in "iub":
        raise UserInputError(f"{path}: mask has {data.dtype} values; a mask holds integer labels")
    present = np.unique(data).astype(np.int64)
    unknown = sorted(set(present.tolist()) - set(vocabulary.labels) - {0})
    if unknown:
        allowed = ", ".join(f"{k}={v}" for k, v in vocabulary.labels.items())
        raise UserInputError(f"{path}: mask has labels {unknown} outside the vocabulary "
                             f"(0=background, {allowed}); relabel it or pass a vocabulary file")
    return Volume(data.astype(np.int16), affine, str(path))


def check_same_grid(a: Volume, b: Volume) -> None:
    """Raise unless ``a`` and ``b`` have the same shape and (within tolerance) the same affine."""
    if a.shape != b.shape:
        raise UserInputError(f"{a.source} has shape {a.shape} but {b.source} has shape {b.shape}; "
                             "they must share one grid")
    if not np.allclose(a.affine, b.affine, atol=AFFINE_TOLERANCE_MM, rtol=0):
        diff = float(np.abs(a.affine - b.affine).max())
        raise UserInputError(
            f"{a.source} and {b.source} have different affines (max difference {diff:.4g} mm; "
            f"{np.round(a.affine[:3], 4).tolist()} vs {np.round(b.affine[:3], 4).tolist()}); "
            "resample one onto the other's grid"
        )


def write_volume(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray,
                 compresslevel: int = 1) -> Path:
    """Write a volume as NIfTI atomically, keeping the affine exactly.

    Integral values within int16 range are stored as int16 (lossless), anything else as float32.

    Parameters
    ----------
    path : path
        Ending in ``.nii`` or ``.nii.gz``.
    data : ndarray, shape (n_x, n_y, n_z)
        HU or labels.
    affine : ndarray, shape (4, 4)
        RAS affine of the source grid; never replaced by identity.
    compresslevel : int
        gzip level of a ``.nii.gz``: 0 stores (noisy float HU barely compress), 1 is nibabel's
        default, 9 the smallest.
    """
    path = Path(path)
    if _suffix(path) not in _NIFTI:
        raise UserInputError(f"{path}: output must end in .nii or .nii.gz")
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"data must be 3D, got shape {data.shape}")
    info = np.iinfo(np.int16)
    if data.dtype.kind in "iub" or (
        np.isfinite(data).all() and np.array_equal(data, np.round(data))
    ):
        if data.size == 0 or (data.min() >= info.min and data.max() <= info.max):
            data = data.astype(np.int16)
    if data.dtype != np.int16:
        data = data.astype(np.float32, copy=False)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path, suffix=_suffix(path)) as tmp:
        if _suffix(path) == ".nii.gz" and compresslevel != Opener.default_compresslevel:
            with Opener(str(tmp), "wb", compresslevel=compresslevel) as fh:
                img.to_file_map(img.make_file_map({"image": fh}))
        else:
            nib.save(img, tmp)
    return path


def write_stat_map(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *,
                   intent: str = "none", intent_params: tuple = (),
                   intent_name: str = "") -> Path:
    """Write a statistic map as float32 NIfTI with its intent code, atomically.

    Parameters
    ----------
    path : path
        Ending in ``.nii`` or ``.nii.gz``.
    data : ndarray, shape (n_x, n_y, n_z)
        The statistic; NaN is kept (viewers show it as empty), infinities are refused.
    affine : ndarray, shape (4, 4)
        RAS affine of the source grid.
    intent : str, default "none"
        nibabel's name of the NIfTI intent code, e.g. "t test", "p value", "estimate".
    intent_params : tuple of float
        The intent's parameters, e.g. ``(dof,)`` for "t test".
    intent_name : str
        At most 16 characters.
    """
    path = Path(path)
    if _suffix(path) not in _NIFTI:
        raise UserInputError(f"{path}: output must end in .nii or .nii.gz")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"data must be 3D, got shape {data.shape}")
    if np.isinf(data).any():
        raise ValueError(f"{path.name}: infinite values; write NaN or a finite value instead")
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_intent(intent, tuple(intent_params), name=intent_name)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path, suffix=_suffix(path)) as tmp:
        nib.save(img, tmp)
    return path


def dicom_series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the one DICOM series in ``folder``, in slice order (GDCM sorts them by
    position along the slice normal).

    Raises
    ------
    UserInputError
        No DICOM series, or more than one (named by their SeriesInstanceUIDs).
    """
    import SimpleITK as sitk

    folder = Path(folder)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise UserInputError(f"{folder}: folder holds no DICOM series; give a NIfTI, MHA, NRRD "
                             "file or a folder of one DICOM series")
    if len(series) > 1:
        raise UserInputError(f"{folder}: folder holds {len(series)} DICOM series "
                             f"({', '.join(series[:3])}{', ...' if len(series) > 3 else ''}); "
                             "move each series into a folder of its own")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def read_geometry(path: str | os.PathLike) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid of a volume file from its header alone (a DICOM folder is read whole).

    Returns
    -------
    shape : tuple of 3 int
        ``(n_x, n_y, n_z)``.
    affine : ndarray of float64, shape (4, 4)
        Voxel index -> RAS mm, checked by :func:`check_affine`.
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.is_file() and suffix in _NIFTI:
        try:
            header = nib.load(path).header
            shape, affine = header.get_data_shape(), header.get_best_affine()
        except Exception as exc:  # nibabel raises many types for damaged headers
            raise UserInputError(f"{path}: cannot read the header ({exc})") from exc
    elif path.is_file() and suffix in _ITK:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise UserInputError(f"{path}: cannot read the header "
                                 f"({str(exc).splitlines()[0]})") from exc
        ndim = reader.GetDimension()
        direction = np.asarray(reader.GetDirection()).reshape(ndim, ndim)[:3, :3]
        lps = np.eye(4)
        lps[:3, :3] = direction @ np.diag(reader.GetSpacing()[:3])
        lps[:3, 3] = reader.GetOrigin()[:3]
        shape, affine = reader.GetSize(), _LPS_TO_RAS @ lps
    else:
        data, affine, path = _load(path)
        shape = data.shape
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise UserInputError(f"{path}: expected a 3D volume, got shape {shape}; give one 3D "
                             "image per file")
    return shape, check_affine(affine, str(path))
