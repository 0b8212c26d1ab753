"""``cfx train --arch diffusion``: a tiny run end to end, exact resume, and one-line errors."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from tests.conftest import cli_error

runner = CliRunner()


def _args(out, bert, *extra, steps=2):
    return ["train", "--arch", "diffusion", "--cohort", "phantom:4", "--out", str(out),
            "--steps", str(steps), "--patch", "16", "--phantom-shape", "16", "--channels", "8,8",
            "--batch-size", "2", "--text-encoder", bert, "--device", "cpu", "--save-every", "2",
            "--log-every", "1", "--level-rows", "64", *extra]


def test_a_tiny_run_writes_a_diffusion_checkpoint(tmp_path, bert):
    result = runner.invoke(app, _args(tmp_path / "ckpt", bert, "--sampling-steps", "10"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "ckpt"
    assert {"config.json", "model.safetensors", "README.md", "training_state.safetensors",
            "training_state.json"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "cond_diffusion3d"
    model = config["generator"]
    assert model["channels"] == [8, 8] and model["schedule"] == "scaled_linear_beta"
    assert model["fields"] == ["age", "sex", "smoking", "diagnosis"]
    assert config["sampling"] == {"sampler": "ddim", "steps": 10, "guidance": 1.0, "eta": 0.0}
    arguments = config["training"]["arguments"]
    assert arguments["arch"] == "diffusion" and arguments["p_uncond"] == 0.1
    assert arguments["lr"] == 2e-4 and "fusion" not in arguments
    assert arguments["fusion_lr_scale"] == 1.0
    assert "--fusion-lr-scale 1.0" in config["training"]["command"]
    assert config["training"]["command"].startswith("cfx train --arch diffusion --cohort "
                                                    "phantom:4")
    assert "one token per field" in config["text_normalisation"]["context"]
    assert "step 2/2: mse" in result.output
    card = (folder / "README.md").read_text()
    assert "Not for diagnosis" in card and "diffusion" in card and "10 DDIM steps" in card
    state = json.loads((folder / "training_state.json").read_text())
    assert state["settings"]["p_uncond"] == 0.1
    assert arguments["edit_weight"] == 0.01 and state["settings"]["edit_weight"] == 0.01
    assert "--edit-weight 0.01" in config["training"]["command"]
    assert "minimal-edit loss, weight 0.01" in card
    assert ", edit " in result.output


def test_edit_weight_0_leaves_the_edit_loss_out(tmp_path, bert):
    result = runner.invoke(app, _args(tmp_path / "ckpt", bert, "--edit-weight", "0"))
    assert result.exit_code == 0, result.output
    assert "step 2/2: mse" in result.output and ", edit " not in result.output
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["training"]["arguments"]["edit_weight"] == 0.0
    assert "--edit-weight 0.0" in config["training"]["command"]  # the default is not 0
    state = json.loads((tmp_path / "ckpt" / "training_state.json").read_text())
    assert state["settings"]["edit_weight"] == 0.0
    assert "minimal-edit" not in (tmp_path / "ckpt" / "README.md").read_text()


def test_resume_continues_exactly(tmp_path, bert):
    assert runner.invoke(app, _args(tmp_path / "straight", bert, steps=4)).exit_code == 0
    assert runner.invoke(app, _args(tmp_path / "split", bert, steps=2)).exit_code == 0
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "split"), "--steps", "4",
                                 "--resume", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "training_state.safetensors"):
        a = load_file(tmp_path / "straight" / name)
        b = load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["training"]["steps"] == 4 and config["architecture"] == "cond_diffusion3d"
    # the command that redoes the resumed run is the straight run's, in its own folder
    straight = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["training"]["command"] == straight["training"]["command"].replace(
        str(tmp_path / "straight"), str(tmp_path / "split"))
    assert "--steps 4" in config["training"]["command"]


@pytest.mark.parametrize("extra, message", [
    (["--fusion", "affine"], "--fusion: applies to --arch gan only; this run is --arch "
                             "diffusion"),
    (["--l1-weight", "1"], "--l1-weight: applies to --arch gan only"),
    (["--adversarial-weight", "0"], "--adversarial-weight: applies to --arch gan only"),
    (["--channels", "4,8"], "--channels: got '4,8'; for --arch diffusion every level must be a "
                            "multiple of 8, e.g. 16,32,32"),
    (["--p-uncond", "1"], "--p-uncond: got 1.0; give a probability in [0, 1)"),
    (["--sampling-steps", "0"], "got 0; give an integer >= 1"),
    (["--level-rows", "0"], "got 0; give an integer >= 1"),
    (["--edit-weight", "-0.1"], "--edit-weight: got -0.1; give a weight >= 0"),
    (["--level-rows", "64", "--no-label-levels"], "--level-rows: this run has no label levels "
                                                  "to fit; add --label-levels or leave "
                                                  "--level-rows out"),
    (["--patch", "15"], "--patch: got '15'; with 2 levels every side must be a multiple of 2"),
])
def test_user_errors(tmp_path, bert, extra, message):
    out = tmp_path / "out"
    assert message in cli_error(_args(out, bert, *extra))
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--p-uncond", "0.2"], "--p-uncond: applies to --arch diffusion only; this run is --arch "
                            "gan"),
    (["--sampling-steps", "10"], "--sampling-steps: applies to --arch diffusion only"),
])
def test_diffusion_options_are_refused_for_the_gan(tmp_path, bert, extra, message):
    out = tmp_path / "out"
    args = ["train", "--cohort", "phantom:4", "--out", str(out), "--text-encoder", bert, *extra]
    assert message in cli_error(args)
    assert not out.exists()


def test_resume_keeps_the_architecture_and_refuses_gan_options(tmp_path, bert):
    out = tmp_path / "ckpt"
    assert runner.invoke(app, _args(out, bert)).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    line = cli_error(["train", "--out", str(out), "--resume", "--steps", "4", "--l1-weight", "1"])
    assert "--l1-weight: applies to --arch gan only; this run is --arch diffusion" in line
    assert (out / "model.safetensors").read_bytes() == before
