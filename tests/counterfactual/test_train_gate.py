"""``cfx train --gate-decay``: a GAN whose record reaches each label as far as a learned,
decaying gate lets it; recorded in the checkpoint, served by the sweep, refused where it cannot
apply."""

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.sweep.learned import LearnedGenerator
from tests.conftest import cli_error
from tests.counterfactual.test_train_body import _train, trained

runner = CliRunner()


@pytest.fixture(scope="module")
def gated(tmp_path_factory, bert):
    # without label levels, the record reaches the volume through the gated fusion alone
    return trained(tmp_path_factory, bert, "--body", "--gate-decay", "3", "--no-label-levels")


def test_the_checkpoint_records_the_gate_and_its_decay(gated):
    config = json.loads((gated / "config.json").read_text())
    assert config["generator"]["gate"] is True
    assert config["training"]["arguments"]["gate_decay"] == 3.0
    assert "--gate-decay 3.0" in config["training"]["command"]
    weights = load_file(gated / "model.safetensors")
    gates = {k: tuple(v.shape) for k, v in weights.items() if k.endswith(".gate")}
    assert gates == {"fuse.0.gate": (5, 8), "fuse.1.gate": (5, 4)}  # 5 label channels
    # two steps at lr 5e-4 moved the gates from 1 by Adam's steps and the decay, little
    assert all(0.9 < v.min() and v.max() < 1.01 for k, v in weights.items() if k in gates)
    served = LearnedGenerator(gated).model
    assert served.config["gate"] is True and len(served.gates()) == 2


def test_a_gated_run_resumes_with_its_gate(gated, tmp_path, bert):
    config = json.loads((gated / "config.json").read_text())
    assert config["training"]["steps"] == 2
    out = tmp_path / "copy"
    assert _train(out, bert, "--body", "--gate-decay", "3").exit_code == 0
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--gate-decay", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((out / "config.json").read_text())
    assert resumed["training"]["arguments"]["gate_decay"] == 1.0
    assert resumed["generator"]["gate"] is True and resumed["training"]["steps"] == 4


def test_the_gate_cannot_be_added_on_resume(tmp_path, bert):
    out = tmp_path / "plain"
    assert _train(out, bert).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    line = cli_error(["train", "--out", str(out), "--steps", "4", "--resume", "--gate-decay",
                      "2", "--device", "cpu"])
    assert line.startswith("cfx: error: --gate-decay: ") and "without the label gate" in line
    assert (out / "model.safetensors").read_bytes() == before


def test_a_gated_model_sweeps_and_its_closed_gates_leave_the_record_without_effect(gated,
                                                                                     tmp_path):
    """The sweep serves the gate: with every gate set to 0 in the checkpoint, smokers and
    non-smokers come out voxel for voxel the same."""
    from safetensors.torch import save_file

    from cfx.counterfactual.volume import read_volume
    from cfx.models.checkpoint import WEIGHTS_HASH, weights_sha256

    closed = tmp_path / "closed-model"
    closed.mkdir()
    for path in gated.iterdir():
        if path.is_file() and not path.name.startswith("training_state"):
            (closed / path.name).write_bytes(path.read_bytes())
    weights = load_file(gated / "model.safetensors")
    save_file({k: v * 0 if k.endswith(".gate") else v for k, v in weights.items()},
              closed / "model.safetensors")
    config = json.loads((closed / "config.json").read_text())
    config[WEIGHTS_HASH] = weights_sha256(closed)
    (closed / "config.json").write_text(json.dumps(config))
    assert runner.invoke(app, ["phantom", "--out", str(tmp_path / "cohort"), "--subjects", "1",
                               "--shape", "16,16,16", "--spacing", "20", "--quiet"]).exit_code == 0
    runs = {}
    for name, model in (("open", gated), ("closed", closed)):
        out = tmp_path / name
        result = runner.invoke(app, ["sweep", "--cohort", str(tmp_path / "cohort"), "--model",
                                     str(model), "--attribute", "smoking", "--values", "yes,no",
                                     "--seeds", "0", "--out", str(out), "--device", "cpu",
                                     "--quiet"])
        assert result.exit_code == 0, result.output
        runs[name] = [read_volume(p).data for p in sorted(out.rglob("*_ct.nii.gz"))]
    assert len(runs["closed"]) == 2
    assert (runs["closed"][0] == runs["closed"][1]).all()
    assert not (runs["open"][0] == runs["open"][1]).all()
    assert not (runs["open"][0] == runs["closed"][0]).all()  # the gate was read, not ignored
