"""Integrity: what a sweep recorded is what stats, render, report and audit read. A run volume
swapped, edited, re-compressed, truncated, deleted or left unrecorded after the sweep is refused
(against the manifest's sha256) before anything is written."""

import gzip
import json
import shutil

import pytest

CT = "sub-P000/sub-P000_attr-smoking_val-no_seed-0_ct.nii.gz"
OTHER = "sub-P000/sub-P000_attr-smoking_val-yes_seed-0_ct.nii.gz"
DIFF = "sub-P001/sub-P001_attr-smoking_contrast-yes-vs-no_seed-0_diff.nii.gz"
CHANGED = "changed after cfx sweep wrote it"


READERS = ["stats", "render", "report", "audit"]  # every command that reads a run's volumes


def _args(command, run, work):
    out = ["--out", work / "report"] if command == "report" else []
    return [command, run, *out, "-q"]


def _edit_manifest(run, change):
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))


def _swap(run, a, b):
    data = (run / a).read_bytes()
    (run / a).write_bytes((run / b).read_bytes())
    (run / b).write_bytes(data)


@pytest.mark.parametrize("command", READERS)
def test_swapped_volumes_are_refused(run, work, refused, command):
    _swap(run, CT, OTHER)
    refused(_args(command, run, work), CT, "its sha256 differs from the one manifest.json "
                                           "recorded", CHANGED, "--no-verify")


@pytest.mark.parametrize("command", ["stats", "render", "audit"])
def test_a_difference_map_from_another_subject_is_refused(run, work, refused, command):
    other = DIFF.replace("P001", "P000")
    shutil.copy(run / other, run / DIFF)
    args = _args(command, run, work)
    if command == "stats":
        args.insert(2, "--voxelwise")  # stats reads difference maps only for voxel maps
    refused(args, DIFF, CHANGED)


@pytest.mark.parametrize("command", READERS)
def test_the_same_voxels_recompressed_are_refused(run, work, refused, command):
    """The bytes as stored are what the sweep recorded: a re-saved file is a changed file."""
    (run / CT).write_bytes(gzip.compress(gzip.decompress((run / CT).read_bytes()), 1))
    refused(_args(command, run, work), CT, CHANGED)


@pytest.mark.parametrize("command", READERS)
def test_an_appended_byte_is_refused(run, work, refused, command):
    with open(run / CT, "ab") as fh:
        fh.write(b"\0")
    refused(_args(command, run, work), CT, CHANGED)


@pytest.mark.parametrize("command", READERS)
def test_a_deleted_volume_is_refused(run, work, refused, command):
    (run / CT).unlink()
    refused(_args(command, run, work), CT, "missing; finish the run with cfx sweep --resume")


@pytest.mark.parametrize("command", READERS)
def test_a_file_record_without_its_hash_is_refused(run, work, refused, command):
    _edit_manifest(run, lambda m: [e.pop("sha256") for e in m["files"] if e["path"] == CT])
    refused(_args(command, run, work), CT, "manifest.json records no sha256 of it")


@pytest.mark.parametrize("command", ["render", "audit"])
def test_an_unrecorded_difference_map_is_refused(run, work, refused, command):
    _edit_manifest(run, lambda m: m.update(files=[e for e in m["files"] if e["path"] != DIFF]))
    refused(_args(command, run, work), "manifest.json: records no difference map", DIFF)


@pytest.mark.parametrize("command", READERS)
def test_a_forged_hash_is_refused(run, work, refused, command):
    _edit_manifest(run, lambda m: [e.update(sha256="0" * 64) for e in m["files"]
                                   if e["path"] == OTHER])
    refused(_args(command, run, work), OTHER, CHANGED)
