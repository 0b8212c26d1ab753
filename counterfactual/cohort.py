"""Cohort tables: which subjects exist, where their masks and CTs are, and their clinical records.

A cohort is either a folder::

    clinical.csv            subject,age,sex,smoking,...
    masks/<subject>.nii.gz  label maps
    ct/<subject>.nii.gz     optional real CTs; ct/<subject>/ may be a DICOM series folder

or a CSV file with columns ``subject``, ``mask``, optional ``ct`` (paths relative to the CSV,
files or DICOM series folders) and one column per clinical attribute. A DICOM series is read by
SimpleITK (rescale slope and intercept applied, geometry from its headers, converted to RAS):
see :func:`cfx.counterfactual.volume.read_volume`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.sweep.naming import check_subject_id

__all__ = ["Subject", "Cohort", "load_cohort", "cohort_from_masks", "check_subject_id",
           "MASK_SUFFIXES"]

MASK_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
_FILE_COLUMNS = ("subject", "mask", "ct")


@dataclass(frozen=True)
class Subject:
    """One subject of a cohort.

    ``record`` holds the clinical attributes; a missing value is absent from it (never NaN).
    """

    id: str
    mask: Path
    ct: Path | None
    record: dict


@dataclass(frozen=True)
class Cohort:
    """Subjects in table order, and the clinical columns the table has."""

    source: Path
    subjects: tuple[Subject, ...]
    columns: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self):
        return iter(self.subjects)

    def subject(self, subject_id: str) -> Subject:
        for s in self.subjects:
            if s.id == subject_id:
                return s
        raise UserInputError(f"{self.source}: no subject {subject_id!r} in the cohort")

    @property
    def has_ct(self) -> bool:
        """True when every subject has a CT."""
        return all(s.ct is not None for s in self.subjects)

    def check_columns(self, names: Iterable[str], option: str) -> None:
        """Raise if a column named on the command line (``option``) is not in the table."""
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            raise UserInputError(f"{option}: {', '.join(map(repr, unknown))} not a column of "
                                 f"{self.source}; columns: {', '.join(self.columns) or 'none'}")


def _clean(value):
    """A CSV cell as a plain Python value; None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _read_table(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"subject": str}, skipinitialspace=True)
    except FileNotFoundError:
        raise UserInputError(f"{path}: clinical table not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"{path}: cannot parse the CSV ({reason})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if "subject" not in table.columns:
        raise UserInputError(f"{path}: no 'subject' column; columns: {', '.join(table.columns)}")
    return table


def _find(folder: Path, subject_id: str) -> Path | None:
    for suffix in MASK_SUFFIXES:
        candidate = folder / f"{subject_id}{suffix}"
        if candidate.exists():
            return candidate
    series = folder / subject_id  # a DICOM series folder
    return series if series.is_dir() else None


def load_cohort(path: str | os.PathLike) -> Cohort:
    """Read a cohort folder or CSV and check that every file it names exists.

    Parameters
    ----------
    path : path
        A cohort folder (``clinical.csv`` + ``masks/`` [+ ``ct/``]) or a CSV with ``mask`` column.
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: cohort not found; give a cohort folder or a CSV file")
    folder_layout = path.is_dir()
    csv = path / "clinical.csv" if folder_layout else path
    if folder_layout and not csv.exists():
        raise UserInputError(f"{path}: cohort folder has no clinical.csv")
    table = _read_table(csv)
    if not folder_layout and "mask" not in table.columns:
        raise UserInputError(f"{csv}: no 'mask' column; a cohort CSV needs subject and mask")
    base = csv.parent
    seen: dict[str, int] = {}
    subjects = []
    for row_number, row in enumerate(table.to_dict("records"), start=2):
        where = f"{csv}, row {row_number}"
        subject_id = _clean(row["subject"])
        if subject_id is None:
            raise UserInputError(f"{where}: empty subject id")
        subject_id = check_subject_id(str(subject_id), where)
        if subject_id in seen:
            raise UserInputError(f"{where}: duplicate subject id {subject_id!r} (also row "
                                 f"{seen[subject_id]}); subject ids must be unique")
        seen[subject_id] = row_number
        if folder_layout:
            mask = _find(path / "masks", subject_id)
            if mask is None:
                raise UserInputError(f"{where}: no mask for subject {subject_id!r} in "
                                     f"{path / 'masks'} (expected {subject_id}.nii.gz)")
            ct = _find(path / "ct", subject_id)
        else:
            cell = _clean(row["mask"])
            if cell is None:
                raise UserInputError(f"{where}: subject {subject_id!r} has no mask; every row "
                                     "needs a mask file")
            mask = base / str(cell)
            if not mask.exists():
                raise UserInputError(f"{where}: mask file {mask} not found")
            cell = _clean(row.get("ct"))
            ct = None if cell is None else base / str(cell)
            if ct is not None and not ct.exists():
                raise UserInputError(f"{where}: CT file {ct} not found")
        record = {k: v for k, v in ((k, _clean(v)) for k, v in row.items())
                  if k not in _FILE_COLUMNS and v is not None}
        subjects.append(Subject(subject_id, mask, ct, record))
    if not subjects:
        raise UserInputError(f"{csv}: the table has no subjects")
    columns = tuple(c for c in table.columns if c not in _FILE_COLUMNS)
    return Cohort(path, tuple(subjects), columns)


def cohort_from_masks(paths: Iterable[str | os.PathLike]) -> Cohort:
    """A cohort of bare masks (no clinical records); ids are the file names without suffix."""
    subjects, seen = [], set()
    for path in map(Path, paths):
        if not path.is_file():
            raise UserInputError(f"--mask: {path} not found")
        name = path.name
        suffix = next((s for s in MASK_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            raise UserInputError(f"--mask: {path} is not a .nii.gz, .nii, .mha or .nrrd file")
        subject_id = check_subject_id(name[: -len(suffix)], f"--mask {path}")
        if subject_id in seen:
            raise UserInputError(f"--mask: two masks are named {subject_id!r}; rename one")
        seen.add(subject_id)
        subjects.append(Subject(subject_id, path, None, {}))
    if not subjects:
        raise UserInputError("--mask: give at least one mask file")
    return Cohort(subjects[0].mask.parent, tuple(subjects), ())
