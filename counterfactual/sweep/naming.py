"""File names inside a run folder (BIDS-derivative style entities), and the one check that keeps
every path built from data inside its root.

Subject ids, attribute names and seeds reach file names from cohort tables and from manifests a
user may have edited; :func:`check_label` refuses any that could leave a folder or break a name,
and :func:`inside` refuses any path (after following symbolic links) that leaves its root.
"""

from __future__ import annotations

import numbers
import os
import re
from pathlib import Path

from cfx.counterfactual.errors import UserInputError

__all__ = ["MAX_LABEL", "check_label", "check_subject_id", "check_seed", "inside", "subject_dir",
           "check_run_paths", "value_label", "value_labels", "ct_name", "diff_name"]

MAX_LABEL = 64
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_label(text, what: str, where: str) -> str:
    """Return ``text`` if it is safe inside a file name, else raise naming ``where``.

    Safe: 1 to :data:`MAX_LABEL` ASCII letters, digits, ``.``, ``_``, ``-``, starting with a letter
    or digit, without ``..`` (no path separator, no hidden file, no parent folder).

    Parameters
    ----------
    text : str
        The label (a subject id, an attribute name).
    what : str
        What it is, e.g. ``"subject id"``.
    where : str
        Where it came from (a file and row or field), first in the message.
    """
    if (not isinstance(text, str) or len(text) > MAX_LABEL or not _LABEL.fullmatch(text)
            or ".." in text):
        shown = text if isinstance(text, str) else f"{text!r} ({type(text).__name__})"
        raise UserInputError(f"{where}: {what} {shown!r} is not allowed; use 1-{MAX_LABEL} "
                             "letters, digits, '-', '_' and '.' starting with a letter or digit "
                             "(no path separators or '..')")
    return text


def check_subject_id(subject_id, where: str) -> str:
    """Refuse subject ids that could escape an output folder or break a file name."""
    return check_label(subject_id, "subject id", where)


def check_seed(seed, where: str) -> int:
    """A seed as an ``int >= 0``; anything else (text, bool, float) is refused."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise UserInputError(f"{where}: seed {seed!r} is not an integer >= 0")
    return seed


def inside(root: str | os.PathLike, relative: str | os.PathLike, where: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` once links are followed.

    Parameters
    ----------
    root : path
        The folder everything must stay in (a run folder, an output folder).
    relative : path
        A relative path from data (a manifest entry, a name built from a subject id).
    where : str
        Where ``relative`` came from, first in the message.

    Returns
    -------
    Path
        ``root / relative`` (not resolved, so messages show what the user gave).
    """
    root = Path(root)
    text = os.fspath(relative)
    path = root / text
    real_root = root.resolve()
    if not text or Path(text).is_absolute() or not path.resolve().is_relative_to(real_root):
        raise UserInputError(f"{where}: path {text!r} points outside {root}; a run's paths are "
                             "relative and stay inside it (was the file edited?)")
    return path


def subject_dir(root: str | os.PathLike, subject_id, where: str) -> Path:
    """``root / "sub-<id>"`` for a checked ``subject_id`` (see :func:`check_subject_id`)."""
    return inside(root, f"sub-{check_subject_id(subject_id, where)}", where)


def check_run_paths(run: str | os.PathLike, manifest, source: str) -> None:
    """Refuse a manifest of ``run`` whose subject ids or file paths could lead outside it.

    Checked: ``settings.subjects`` and each item's ``subject`` (:func:`check_subject_id`), each
    item's and file entry's ``path`` (:func:`inside`). Masks, which live in the cohort, are not
    run paths. ``source`` (the manifest file) starts every message.
    """
    try:
        for k, subject in enumerate(manifest.get("settings", {}).get("subjects", [])):
            check_subject_id(subject, f"{source}: settings.subjects[{k}]")
        for key in ("items", "files"):
            for k, entry in enumerate(manifest.get(key, [])):
                if "subject" in entry:
                    check_subject_id(entry["subject"], f"{source}: {key}[{k}].subject")
                inside(run, entry["path"], f"{source}: {key}[{k}].path")
    except (AttributeError, KeyError, TypeError) as exc:
        raise UserInputError(f"{source}: malformed manifest (missing or bad field {exc}); "
                             "regenerate the run with cfx sweep") from None


def value_label(value) -> str:
    """A value as a file-name label of letters and digits: "CTD-ILD" -> "CTDILD", 68.5 -> "68p5"."""
    text = re.sub(r"^-", "m", str(value)).replace(".", "p")
    return re.sub(r"[^A-Za-z0-9]", "", text)


def value_labels(values) -> list[str]:
    """Labels of ``values``; two values with one label are refused."""
    labels = [value_label(v) for v in values]
    for value, label in zip(values, labels, strict=True):
        if not label or labels.count(label) > 1:
            clash = [str(v) for v, lab in zip(values, labels, strict=True) if lab == label]
            raise UserInputError(f"--values: {', '.join(clash) or repr(value)} cannot be told "
                                 "apart in file names; use distinct letters or digits")
    return labels


def _entities(subject, attribute, labels, seed, where: str) -> None:
    check_subject_id(subject, where)
    check_label(attribute, "attribute", where)
    for label in labels:
        check_label(label, "value label", where)
    check_seed(seed, where)


def ct_name(subject: str, attribute: str, label: str, seed: int,
            where: str = "run file name") -> str:
    """``sub-<id>/sub-<id>_attr-<attribute>_val-<label>_seed-<seed>_ct.nii.gz``.

    Every entity is checked (:func:`check_label`, :func:`check_seed`): a name built from an
    edited manifest cannot leave the subject's folder; ``where`` names the data they came from.
    """
    _entities(subject, attribute, (label,), seed, where)
    return f"sub-{subject}/sub-{subject}_attr-{attribute}_val-{label}_seed-{seed}_ct.nii.gz"


def diff_name(subject: str, attribute: str, label: str, reference: str, seed: int,
              where: str = "run file name") -> str:
    """``sub-<id>/sub-<id>_attr-<attribute>_contrast-<label>-vs-<ref>_seed-<seed>_diff.nii.gz``,
    with its entities checked as in :func:`ct_name`."""
    _entities(subject, attribute, (label, reference), seed, where)
    return (f"sub-{subject}/sub-{subject}_attr-{attribute}_contrast-{label}-vs-{reference}"
            f"_seed-{seed}_diff.nii.gz")
