"""``cfx train --l1-weight/--adversarial-weight/--region-weight``: recorded, applied on resume,
checked."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cfx.counterfactual.cli import app

runner = CliRunner()


def _args(out, bert, *extra, steps=2):
    return ["train", "--cohort", "phantom:4", "--out", str(out), "--steps", str(steps),
            "--patch", "16", "--phantom-shape", "16", "--channels", "4,8", "--batch-size", "2",
            "--text-encoder", bert, "--device", "cpu", "--save-every", "2", "--log-every", "1",
            *extra]


def _arguments(folder):
    return json.loads((folder / "config.json").read_text())["training"]["arguments"]


def test_new_run_records_the_default_weights(tmp_path, bert):
    result = runner.invoke(app, _args(tmp_path / "a", bert))
    assert result.exit_code == 0, result.output
    arguments = _arguments(tmp_path / "a")
    assert (arguments["l1_weight"], arguments["adversarial_weight"]) == (100.0, 1.0)
    assert "--l1-weight 100.0 --adversarial-weight 1.0" in arguments["command"]
    assert arguments["region_weight"] == 100.0 and "--region-weight 100.0" in arguments["command"]
    assert "adversarial_d" in result.output and ", region " in result.output


def test_resume_with_a_region_weight_applies_and_records_it(tmp_path, bert):
    out = tmp_path / "a"
    assert runner.invoke(app, _args(out, bert, "--region-weight", "0")).exit_code == 0
    assert _arguments(out)["region_weight"] == 0.0
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--device", "cpu", "--region-weight", "20", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert "step 3/4: l1" in result.output and ", region " in result.output
    assert _arguments(out)["region_weight"] == 20.0


def test_a_run_saved_before_the_region_loss_resumes_without_it(tmp_path, bert):
    """A checkpoint whose arguments have no region_weight (written before the option) goes on
    without the loss, not with the new-run default."""
    out = tmp_path / "a"
    assert runner.invoke(app, _args(out, bert)).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    del config["training"]["arguments"]["region_weight"]
    (out / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--device", "cpu", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert "step 3/4: l1" in result.output and ", region " not in result.output


def test_resume_with_l1_only_keeps_the_discriminator(tmp_path, bert):
    out = tmp_path / "a"
    assert runner.invoke(app, _args(out, bert)).exit_code == 0
    before = load_file(out / "training_state.safetensors")
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--device", "cpu", "--adversarial-weight", "0",
                                 "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert "step 4/4: l1" in result.output and "adversarial" not in result.output
    after = load_file(out / "training_state.safetensors")
    discriminator = [k for k in before if k.startswith(("discriminator.", "optimizer_d."))]
    assert discriminator and all(torch.equal(before[k], after[k]) for k in discriminator)
    assert not torch.equal(before["generator.head.weight"], after["generator.head.weight"])
    arguments = _arguments(out)
    assert (arguments["l1_weight"], arguments["adversarial_weight"]) == (100.0, 0.0)


@pytest.mark.parametrize("extra, message", [
    (["--l1-weight", "-1"], "--l1-weight: got -1.0; give a weight >= 0"),
    (["--adversarial-weight", "-0.5"], "--adversarial-weight: got -0.5; give a weight >= 0"),
    (["--l1-weight", "0", "--adversarial-weight", "0"], "--l1-weight, --adversarial-weight: "
     "both are 0"),
])
def test_weight_errors(tmp_path, bert, extra, message):
    out = tmp_path / "out"
    result = runner.invoke(app, _args(out, bert, *extra))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfx: error: ") and message in lines[0]
    assert not out.exists()
