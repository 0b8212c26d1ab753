"""Integrity: what a sweep recorded is what stats, render, report and audit read. A run volume
swapped, edited, re-compressed, truncated, deleted or left unrecorded after the sweep is refused
(against the manifest's sha256) before anything is written."""

import gzip
import json
import pickle
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app

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


# --- what a sweep is made from: --resume checks the inputs, checkpoints their weights ----------

BUNDLED_GAN = Path("models/bundled/phantom-gan-64")


def _sweep(cohort, out, *extra, model="phantom-oracle"):
    return ["sweep", "-a", "smoking", "--values", "no,yes", "--cohort", cohort, "--model", model,
            "--out", out, "-q", *extra]


def _ok(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr


def _set_age(phantom, age):
    lines = (phantom / "clinical.csv").read_text().splitlines()
    column = lines[0].split(",").index("age")
    row = lines[1].split(",")
    row[column] = str(age)
    lines[1] = ",".join(row)
    (phantom / "clinical.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda p: _set_age(p, 33), "subject P000's clinical record ("),
    (lambda p: (p / "masks" / "P001.nii.gz").write_bytes(
        (p / "masks" / "P000.nii.gz").read_bytes()), "subject P001's mask ("),
    (lambda p: (p / "ct" / "P000.nii.gz").write_bytes(
        gzip.compress(gzip.decompress((p / "ct" / "P000.nii.gz").read_bytes()), 1)),
     "subject P000's CT ("),
])
def test_resume_refuses_inputs_that_changed(phantom, work, refused, change, fragment):
    _ok(_sweep(phantom, work / "out"))
    (work / "out" / OTHER).unlink()  # an unfinished run
    change(phantom)
    refused(_sweep(phantom, work / "out", "--resume"), fragment, "is not the one the run was "
                                                                 "made from", "new --out")


def test_resume_refuses_a_run_without_input_hashes(phantom, work, refused):
    _ok(_sweep(phantom, work / "out"))
    _edit_manifest(work / "out", lambda m: m.pop("inputs"))
    refused(_sweep(phantom, work / "out", "--resume"), "manifest.json: records no hashes of the "
                                                       "run's inputs")


def _checkpoint(work):
    return Path(shutil.copytree(BUNDLED_GAN, work / "ckpt"))


@pytest.mark.parametrize("tamper", [
    lambda w: w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0"),
    lambda w: w.write_bytes(
        (BUNDLED_GAN.parent / "phantom-diffusion-32" / "model.safetensors").read_bytes()),
])
def test_tampered_checkpoint_weights_are_refused(phantom, work, refused, tamper):
    folder = _checkpoint(work)
    tamper(folder / "model.safetensors")
    refused(_sweep(phantom, work / "out", model=folder),
            "ckpt/model.safetensors: its sha256 differs from the weights_sha256 config.json "
            "recorded")


def test_a_checkpoint_without_a_weights_hash_is_refused(phantom, work, refused):
    folder = _checkpoint(work)
    config = json.loads((folder / "config.json").read_text())
    del config["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(config))
    refused(_sweep(phantom, work / "out", model=folder), "config.json: records no weights_sha256")


def test_a_pickle_text_encoder_is_refused_unread(phantom, work, refused):
    encoder = work / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text('{"model_type": "bert"}')
    (encoder / "pytorch_model.bin").write_bytes(pickle.dumps(_Unpickled()))
    folder = _checkpoint(work)
    config = json.loads((folder / "config.json").read_text())
    config["text_encoder"]["name"] = str(encoder)
    (folder / "config.json").write_text(json.dumps(config))
    refused(_sweep(phantom, work / "out", model=folder),
            "its text encoder cannot be loaded", "holds pytorch_model.bin, pickle weights, and "
                                                 "no *.safetensors weights")


class _Unpickled:
    """A pickle that stops the test process if anything unpickles it."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


def test_audit_refuses_a_model_whose_hash_differs_from_the_runs(run, refused):
    refused(["audit", run, "--model", BUNDLED_GAN, "-q"], f"--model: {BUNDLED_GAN} has content "
                                                          "hash sha256:", "the run used")
