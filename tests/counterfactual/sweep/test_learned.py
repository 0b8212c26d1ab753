"""The sweep adapter of learned checkpoints: resolution, checks, shared noise, run manifests."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import Subject, load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.sweep.generators import Request, resolve_generator
from cfx.counterfactual.sweep.learned import LearnedGenerator
from cfx.counterfactual.volume import Volume, read_labels
from cfx.models.checkpoint import content_hash
from tests.models.conftest import save_tiny_bert

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("learned")
    bert = save_tiny_bert(root / "bert")
    result = runner.invoke(app, [
        "train", "--cohort", "phantom:4", "--out", str(root / "ckpt"), "--steps", "3",
        "--patch", "16", "--phantom-shape", "16", "--channels", "4,8", "--batch-size", "2",
        "--text-encoder", str(bert), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    return root / "ckpt"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "c"
    write_phantom(out, PhantomSettings(subjects=2, shape=(40, 16, 16), spacing=(13.0,) * 3),
                  quiet=True)
    return load_cohort(out)


def _requests(*pairs):
    return [Request(v, {"smoking": v}, f"Lung CT scan: Smoker: {p}.",
                    {"smoking": f"Lung CT scan: Smoker: {p}."}) for v, p in pairs]


def test_resolves_a_checkpoint_folder(checkpoint, cohort):
    model = resolve_generator(str(checkpoint), cohort)
    assert isinstance(model, LearnedGenerator)
    assert model.content_hash == content_hash(checkpoint)
    assert model.text_encoder.startswith("bert-")
    assert model.roi == (32, 32, 32)  # twice the training patch


def test_unknown_model_lists_what_exists(cohort):
    with pytest.raises(UserInputError, match="--model: unknown model 'nope'; available: "
                                             "phantom-oracle.*or a checkpoint folder"):
        resolve_generator("nope", cohort)


def test_shared_noise_pairs_and_seeds(checkpoint, cohort):
    model = resolve_generator(str(checkpoint), cohort)
    model.check(cohort, "smoking")
    subject = cohort.subjects[0]
    mask = read_labels(subject.mask)
    yes, no, again = model.generate(subject, mask, "smoking",
                                    _requests(("yes", "yes"), ("no", "no"), ("yes", "yes")), 7)
    assert yes.shape == mask.shape == (40, 16, 16) and yes.dtype == np.float32
    assert np.array_equal(yes, again)  # a null pair: same prompt, same noise
    assert not np.array_equal(yes, no)  # different prompts
    first = model.generate(subject, mask, "smoking", _requests(("yes", "yes")), 7)[0]
    other = model.generate(subject, mask, "smoking", _requests(("yes", "yes")), 8)[0]
    assert np.array_equal(first, yes) and not np.array_equal(first, other)
    assert np.all((yes >= -1024) & (yes <= 1024))


def test_labels_outside_the_vocabulary_are_refused(checkpoint, cohort, tmp_path):
    model = LearnedGenerator(checkpoint)
    folder = tmp_path / "c"
    shutil.copytree(cohort.source, folder)
    mask = read_labels(folder / "masks" / "P000.nii.gz")
    from cfx.counterfactual.volume import write_volume

    write_volume(folder / "masks" / "P000.nii.gz", np.where(mask.data == 3, 5, mask.data),
                 mask.affine)
    with pytest.raises(UserInputError, match=r"mask has labels \[5\] outside the vocabulary"):
        model.check(load_cohort(folder), "smoking")


def test_encoder_width_must_match(checkpoint, cohort, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    config["text_encoder"]["width"] = 64
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="gives 32-d embeddings but the model was trained "
                                             "on 64-d ones"):
        LearnedGenerator(copy).check(cohort, "smoking")
    config["text_encoder"]["name"] = str(tmp_path / "gone")
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="its text encoder cannot be loaded"):
        LearnedGenerator(copy).check(cohort, "smoking")


def test_a_pickle_is_refused(tmp_path, cohort):
    (tmp_path / "model.pt").write_bytes(b"\x80\x04not really")
    with pytest.raises(UserInputError, match="a .pt file is a pickle"):
        resolve_generator(str(tmp_path / "model.pt"), cohort)


def test_sweep_with_a_checkpoint_records_its_hash(checkpoint, cohort, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", "--cohort", str(cohort.source), "--attribute",
                                 "smoking", "--values", "no,yes", "--model", str(checkpoint),
                                 "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert content_hash(checkpoint) in json.dumps(manifest)
    assert manifest["complete"]
    assert manifest["model"]["folder"] == str(checkpoint.resolve())


def test_audit_finds_the_checkpoint_the_manifest_records(checkpoint, cohort, tmp_path,
                                                        monkeypatch):
    out = tmp_path / "run"
    args = ["--cohort", str(cohort.source), "--attribute", "smoking", "--values", "no,yes",
            "--model", str(checkpoint), "--out", str(out), "--device", "cpu", "-q"]
    assert runner.invoke(app, ["sweep", *args]).exit_code == 0
    monkeypatch.chdir(tmp_path)  # the checkpoint's name alone resolves nowhere from here
    result = runner.invoke(app, ["audit", str(out), "--cohort", str(cohort.source), "-q"])
    assert result.exit_code == 0, result.output
    audit = json.loads((out / "audit" / "audit.json").read_text())
    composition = audit["criteria"]["composition"]
    assert composition["status"] != "skipped", composition


def test_volume_smaller_than_the_window(checkpoint):
    model = LearnedGenerator(checkpoint)
    labels = np.zeros((12, 16, 8), np.int16)
    labels[3:6, 4:12, 2:6] = 1
    labels[7:10, 4:12, 2:6] = 2
    subject = Subject("S", Path("mask.nii.gz"), None, {})  # no CT: the body from the lungs
    out = model.generate(subject, Volume(labels, np.eye(4)), "smoking",
                         _requests(("yes", "yes")), 0)
    assert out[0].shape == (12, 16, 8)
