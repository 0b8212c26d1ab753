"""The run folder's records: ``dataset_description.json`` and ``manifest.json``.

The manifest says what was asked (command, settings, model, prompts) and what exists (per item:
status and sha256 of its file), so an interrupted run can resume and a reader can verify outputs.

A sharded run (``cfx sweep --shard i/n``) also has one ``manifest.shard-i-of-n.json`` per shard,
listing the files that shard wrote; ``manifest.json`` holds the union of them all, and says
``"complete": true`` once every planned file is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cfx.counterfactual.atomic import write_text
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.sweep.naming import check_run_paths

__all__ = ["MANIFEST", "sha256", "package_versions", "write_json", "read_manifest",
           "dataset_description", "check_same_settings", "shard_manifest_name",
           "shard_manifests", "recorded_files", "input_hashes", "check_same_inputs"]

MANIFEST = "manifest.json"
_PACKAGES = ("cfx", "numpy", "scipy", "nibabel", "torch", "monai", "transformers", "pandas")


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes as stored (a ``.nii.gz`` is hashed compressed), streamed in
    chunks by :func:`hashlib.file_digest` (about 1 GB/s on one core)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _input_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (a DICOM series): each relative name and its
    file's sha256, in name order."""
    if not path.is_dir():
        return sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256(file)}\n".encode())
    return digest.hexdigest()


def input_hashes(mask: str | os.PathLike, ct: str | os.PathLike | None,
                 record: Mapping) -> dict[str, str | None]:
    """What one subject's outputs are made from, for ``--resume`` to check: the sha256 of its
    mask and CT (None without one) as stored, and of its canonical record (sorted JSON).

    Returns
    -------
    dict
        ``{"mask": hex, "ct": hex or None, "record": hex}``.
    """
    text = json.dumps(dict(record), sort_keys=True, default=str)
    return {"mask": _input_sha256(Path(mask)),
            "ct": None if ct is None else _input_sha256(Path(ct)),
            "record": hashlib.sha256(text.encode()).hexdigest()}


_INPUTS = {"mask": "mask", "ct": "CT", "record": "clinical record"}


def check_same_inputs(folder: Path, old: Mapping | None, new: Mapping[str, Mapping],
                      sources: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse to resume ``folder`` when a subject's inputs are not those its manifest recorded.

    Parameters
    ----------
    folder : Path
        The run folder.
    old : mapping or None
        The manifest's ``inputs`` (subject -> :func:`input_hashes`); None when it has none.
    new : mapping
        The same for the cohort now.
    sources : mapping
        Subject -> input name (``mask``, ``ct``, ``record``) -> where it is, for the message.

    Raises
    ------
    UserInputError
        The first subject (in ``new``'s order) whose mask, CT or record changed, naming it and
        the input.
    """
    if not isinstance(old, Mapping):
        raise UserInputError(f"{folder / MANIFEST}: records no hashes of the run's inputs (made "
                             "by an older cfx), so a resume cannot tell whether they changed; "
                             "start a new --out")
    for subject, now in new.items():
        then = old.get(subject)
        for key, label in _INPUTS.items():
            if not isinstance(then, Mapping) or then.get(key) != now[key]:
                raise UserInputError(
                    f"{folder}: cannot resume: subject {subject}'s {label} "
                    f"({sources[subject][key]}) is not the one the run was made from (its sha256 "
                    f"differs from {MANIFEST}); restore it or start a new --out")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape the outputs."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_manifest(folder: Path) -> dict:
    """Read ``folder/manifest.json``; a missing or damaged one, or one whose subject ids or paths
    lead outside ``folder``, is a user error."""
    path = folder / MANIFEST
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"{folder}: a file, not a run folder; give the folder cfx sweep "
                             "wrote")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{folder}: not a cfx run (no {MANIFEST}); give a run folder made by "
                             "cfx sweep") from None
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}: damaged manifest ({exc.msg} at line {exc.lineno})") from None
    check_run_paths(folder, manifest, str(path))  # no path in it may lead outside the run
    return manifest


def shard_manifest_name(index: int, count: int) -> str:
    """``manifest.shard-<index>-of-<count>.json`` (``index`` counts from 1)."""
    return f"manifest.shard-{index}-of-{count}.json"


def shard_manifests(folder: Path) -> list[Path]:
    """The shard manifests in ``folder``, sorted by name."""
    return sorted(folder.glob("manifest.shard-*-of-*.json"))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}: damaged manifest ({exc.msg} at line {exc.lineno})") from None


def recorded_files(folder: Path) -> dict[str, dict]:
    """Every file entry with status ``done`` in ``manifest.json`` and the shard manifests of
    ``folder``: run-relative path -> entry (``path``, ``kind``, ``status``, ``sha256``)."""
    paths = [folder / MANIFEST] if (folder / MANIFEST).exists() else []
    out = {}
    for path in paths + shard_manifests(folder):
        for entry in _read(path).get("files", []):
            if entry.get("status") == "done":
                out[entry["path"]] = entry
    return out


def dataset_description(name: str, cfx_version: str, model: str, source: str) -> dict:
    """BIDS-derivative ``dataset_description.json`` content."""
    return {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "cfx", "Version": cfx_version,
                         "Description": f"counterfactual sweep with model {model}"}],
        "SourceDatasets": [{"URL": Path(source).resolve().as_uri()}],
    }


def check_same_settings(folder: Path, old: dict, new: dict) -> None:
    """Refuse to resume ``folder`` when the settings differ; name every differing one."""
    differ = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if differ:
        detail = "; ".join(f"{k}: run has {old.get(k)!r}, now {new.get(k)!r}" for k in differ)
        raise UserInputError(f"{folder}: cannot resume with different settings ({detail}); use the "
                             "run's settings or a new --out")
