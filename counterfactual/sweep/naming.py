"""File names inside a run folder (BIDS-derivative style entities)."""

from __future__ import annotations

import re

from counterfactual.errors import UserInputError

__all__ = ["value_label", "value_labels", "ct_name", "diff_name"]


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


def ct_name(subject: str, attribute: str, label: str, seed: int) -> str:
    """``sub-<id>/sub-<id>_attr-<attribute>_val-<label>_seed-<seed>_ct.nii.gz``."""
    return f"sub-{subject}/sub-{subject}_attr-{attribute}_val-{label}_seed-{seed}_ct.nii.gz"


def diff_name(subject: str, attribute: str, label: str, reference: str, seed: int) -> str:
    """``sub-<id>/sub-<id>_attr-<attribute>_contrast-<label>-vs-<ref>_seed-<seed>_diff.nii.gz``."""
    return (f"sub-{subject}/sub-{subject}_attr-{attribute}_contrast-{label}-vs-{reference}"
            f"_seed-{seed}_diff.nii.gz")
