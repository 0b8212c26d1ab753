"""``cfx train --body``: the body outline as one more label channel, in training and at sweep
time (from the subject's CT, or drawn around the lungs without one), ``--edit-weight`` and
``--region-weight``."""

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cfx.analysis.controls import body_outline, synthetic_body
from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.sweep.learned import LearnedGenerator
from cfx.counterfactual.volume import read_labels, read_volume
from tests.conftest import cli_error

runner = CliRunner()


def _train(out, bert, *extra):
    return runner.invoke(app, [
        "train", "--cohort", "phantom:4", "--out", str(out), "--steps", "2", "--patch", "16",
        "--phantom-shape", "16", "--channels", "4,8", "--batch-size", "2", "--text-encoder", bert,
        "--device", "cpu", "--save-every", "2", *extra])


def trained(tmp_path_factory, bert, *extra):
    """A checkpoint of :func:`_train` with ``extra`` options, in a new folder."""
    out = tmp_path_factory.mktemp("model") / "ckpt"
    result = _train(out, bert, *extra)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def body_model(tmp_path_factory, bert):
    return trained(tmp_path_factory, bert, "--body", "--edit-weight", "2", "--region-weight", "50")


def _cohort(folder, shape, spacing):
    result = runner.invoke(app, ["phantom", "--out", str(folder), "--subjects", "2", "--shape",
                                 shape, "--spacing", spacing, "--quiet"])
    assert result.exit_code == 0, result.output
    return load_cohort(folder)


def test_the_checkpoint_records_the_body_channel_and_the_loss_weights(body_model):
    config = json.loads((body_model / "config.json").read_text())
    assert config["generator"]["label_channels"] == 5  # background, 3 labels, body
    assert config["body"]["channel"] == 4 and config["body"]["air_hu"] == -500.0
    arguments = config["training"]["arguments"]
    assert arguments["body"] is True and arguments["edit_weight"] == 2.0
    assert arguments["region_weight"] == 50.0
    assert "--body" in config["training"]["command"].split()
    assert "--edit-weight 2.0" in config["training"]["command"]
    assert "--region-weight 50.0" in config["training"]["command"]


def test_the_sweep_reads_the_body_from_the_ct_or_draws_it(body_model, tmp_path):
    cohort = _cohort(tmp_path / "cohort", "16,16,16", "20")
    subject = cohort.subjects[0]
    mask = read_labels(subject.mask)
    model = LearnedGenerator(body_model)
    unlabelled = mask.data == 0
    from_ct = model._labels(mask, subject)[0].argmax(0).numpy()
    expected = body_outline(read_volume(subject.ct).data, mask.data) & unlabelled
    np.testing.assert_array_equal(from_ct == 4, expected)
    assert 0 < expected.sum() < unlabelled.sum()
    drawn = model._labels(mask, dataclasses.replace(subject, ct=None))[0].argmax(0).numpy()
    np.testing.assert_array_equal(drawn == 4, synthetic_body(mask.data, mask.spacing)
                                  & unlabelled)
    np.testing.assert_array_equal(drawn[~unlabelled], from_ct[~unlabelled])  # the lungs kept


def test_a_body_model_sweeps_a_cohort_on_another_grid(body_model, tmp_path):
    """The subjects' CTs are on a 2x finer grid than the model's: the sweep resamples the CT
    with the mask to read the body there, and writes on the subject's grid."""
    _cohort(tmp_path / "fine", "32,32,32", "10")
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", "--cohort", str(tmp_path / "fine"), "--model",
                                 str(body_model), "--attribute", "smoking", "--values", "yes,no",
                                 "--seeds", "0", "--out", str(out), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    written = sorted(out.rglob("*_ct.nii.gz"))
    assert len(written) == 4 and read_volume(written[0]).shape == (32, 32, 32)


@pytest.mark.parametrize("first, then, word", [("--no-body", "--body", "without"),
                                               ("--body", "--no-body", "with")])
def test_body_cannot_change_on_resume(tmp_path, bert, first, then, word):
    out = tmp_path / "run"
    assert _train(out, bert, first).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    line = cli_error(["train", "--out", str(out), "--steps", "4", "--resume", then,
                   "--device", "cpu"])
    assert line == (f"cfx: error: {then}: {out} was trained {word} the body channel and cannot "
                    f"change that on resume; start a new run with {then}")
    assert (out / "model.safetensors").read_bytes() == before


def test_a_new_gan_reads_the_body_unless_told_not_to_and_resumes_as_saved(tmp_path, bert):
    runs = {}
    for name, extra in (("default", ()), ("off", ("--no-body",))):
        out = tmp_path / name
        assert _train(out, bert, *extra).exit_code == 0
        config = json.loads((out / "config.json").read_text())
        runs[name] = (config["generator"]["label_channels"], config["training"]["command"])
    assert runs["default"][0] == runs["off"][0] + 1  # the body is one more label channel
    assert runs["default"][1].endswith("--body --phantom-shape 16,16,16")
    assert runs["off"][1].endswith("--no-body --phantom-shape 16,16,16")
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "off"), "--steps", "4",
                                 "--resume", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "off" / "config.json").read_text())
    assert config["training"]["arguments"]["body"] is False


@pytest.mark.parametrize("extra, message", [
    (["--edit-weight", "-1"], "--edit-weight: got -1.0; give a weight >= 0"),
    (["--region-weight", "-1"], "--region-weight: got -1.0; give a weight >= 0"),
    (["--arch", "diffusion", "--region-weight", "1", "--channels", "8,16"],
     "--region-weight: applies to --arch gan only"),
    (["--gate-decay", "-1"], "--gate-decay: got -1.0; give a decay >= 0"),
    (["--arch", "diffusion", "--gate-decay", "1", "--channels", "8,16"],
     "--gate-decay: applies to --arch gan only"),
])
def test_gan_option_errors(tmp_path, bert, extra, message):
    out = tmp_path / "out"
    assert message in cli_error(["train", "--cohort", "phantom:4", "--out", str(out), "--steps",
                              "2", "--patch", "16", "--phantom-shape", "16", "--text-encoder",
                              bert, *extra])
    assert not out.exists()


def test_a_body_model_on_the_model_grid_reads_the_body_from_the_resampled_ct(body_model,
                                                                             tmp_path):
    """With --grid model the jobs read the model-grid copies under grid/: the CT is written
    there too (not only for --from-ct), so the body comes from the scan, not the lungs' rule."""
    cohort = _cohort(tmp_path / "fine", "32,32,32", "10")
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", "--cohort", str(tmp_path / "fine"), "--model",
                                 str(body_model), "--attribute", "smoking", "--values", "yes,no",
                                 "--seeds", "0", "--out", str(out), "--device", "cpu",
                                 "--grid", "model", "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    for subject in cohort.subjects:
        entry = manifest["grid"]["subjects"][subject.id]
        ct = read_volume(out / entry["model_grid_ct"])
        mask = read_labels(out / entry["model_grid_mask"])
        assert ct.shape == mask.shape == (16, 16, 16)
        job = dataclasses.replace(subject, mask=out / entry["model_grid_mask"],
                                  ct=out / entry["model_grid_ct"])
        body = LearnedGenerator(body_model)._labels(mask, job)[0].argmax(0).numpy() == 4
        unlabelled = mask.data == 0
        np.testing.assert_array_equal(body, body_outline(ct.data, mask.data) & unlabelled)
        assert not np.array_equal(body, synthetic_body(mask.data, mask.spacing) & unlabelled)
