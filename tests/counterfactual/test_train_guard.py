"""``cfx train`` cannot silently diverge: a diverged update (NaN weights written in by a hook, or
an absurd ``--lr``) is rolled back and training goes on at a lower learning rate, or the run
stops with one line naming the step; the saved model is the last good one (compared with the
weights recorded while training) and the config, card and output say which step it is from."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import cfx.counterfactual.training
from cfx.counterfactual.cli import app
from cfx.models.training.diffusion import DiffusionTrainer
from cfx.models.training.gan import GANTrainer
from cfx.models.training.guard import GuardSettings

runner = CliRunner()
_TRAINERS = {"gan": (GANTrainer, "4,8"), "diffusion": (DiffusionTrainer, "8,8")}
_LEVELS = {"gan": (), "diffusion": ("--level-rows", "64")}  # a quick fit of the label levels


def _args(out, bert, arch, steps, save_every, *extra):
    return ["train", "--arch", arch, "--cohort", "phantom:4", "--out", str(out), "--steps",
            str(steps), "--patch", "16", "--phantom-shape", "16", "--channels",
            _TRAINERS[arch][1], "--batch-size", "2", "--text-encoder", bert, "--device", "cpu",
            "--save-every", str(save_every), "--log-every", "1", *_LEVELS[arch], *extra]


def _instrument(monkeypatch, arch, poison_after, once=True):
    """Record the EMA weights after every step (the latest per step) and write NaN into the live
    weights after the steps in ``poison_after`` (only the first time when ``once``)."""
    trainer_class, _ = _TRAINERS[arch]
    step = trainer_class.train_step
    ema = {}

    def instrumented(self):
        values = step(self)
        ema[self.step] = {k: v.clone() for k, v in self.ema.state_dict().items()}
        if self.step in poison_after:
            if once:
                poison_after.discard(self.step)
            with torch.no_grad():
                next(self.network.parameters()).fill_(math.nan)
        return values

    monkeypatch.setattr(trainer_class, "train_step", instrumented)
    return ema


def _same(folder, weights):
    saved = load_file(folder / "model.safetensors")
    return saved.keys() == weights.keys() and all(torch.equal(saved[k], weights[k])
                                                  for k in saved)


@pytest.mark.parametrize("arch", ["gan", "diffusion"])
def test_a_diverged_step_is_rolled_back_and_training_goes_on(tmp_path, bert, monkeypatch, arch):
    """NaN weights after step 3: step 4 diverges, the run goes back to step 2 (the last state
    kept and confirmed) at half the learning rate and ends at step 6 with finite weights, the
    EMA recorded at step 6 of the second pass."""
    ema = _instrument(monkeypatch, arch, {3})
    out = tmp_path / "ckpt"
    result = runner.invoke(app, _args(out, bert, arch, 6, 2))
    assert result.exit_code == 0, result.output
    loss = "l1" if arch == "gan" else "mse"
    said = " ".join(result.stderr.split())
    assert (f"step 4: diverged ({loss} is nan); rolled back to step 2, learning rate x0.5 of "
            "the initial one") in said
    assert f"saved {out}: the model of step 6; 1 rollbacks, learning rate x0.5" in said
    assert _same(out, ema[6])
    assert all(torch.isfinite(v).all() for v in load_file(out / "model.safetensors").values()
               if v.is_floating_point())
    config = json.loads((out / "config.json").read_text())
    guard = config["training"]["guard"]
    assert config["training"]["steps"] == 6
    assert guard["rollbacks"] == [{"step": 4, "reason": f"{loss} is nan", "to_step": 2,
                                   "lr_scale": 0.5}]
    assert guard["clip_norm"] == 1.0 and guard["settings"]["max_rollbacks"] == 3
    state = json.loads((out / "training_state.json").read_text())
    lr = config["training"]["arguments"]["lr"]
    groups = state["optimizer_g"] + state["optimizer_d"] if arch == "gan" \
        else state["optimizer"]
    assert [g["lr"] for g in groups] == [lr / 2] * len(groups)
    card = " ".join((out / "README.md").read_text().split())
    assert "saved model: the EMA weights of step 6, confirmed good by the next step's loss" in card
    assert "step 4 (" + loss + " is nan) rolled back to step 2, learning rate x0.5" in card


def test_spent_rollbacks_stop_the_run_and_keep_the_last_good_model(tmp_path, bert,
                                                                   monkeypatch):
    """Every update from step 4 on diverges and only the end would be saved: after three
    rollbacks to step 3 the run stops with one line naming step 5, and the folder holds the
    EMA weights of step 3, saying so."""
    monkeypatch.setattr(cfx.counterfactual.training, "GUARD", GuardSettings(snapshot_every=1))
    ema = _instrument(monkeypatch, "gan", set(range(4, 40)), once=False)
    out = tmp_path / "ckpt"
    result = runner.invoke(app, _args(out, bert, "gan", 8, 100))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("cfx: error: ")]
    assert errors == [
        "cfx: error: --lr: training diverged at step 5 (l1 is nan) after 3 rollbacks (learning "
        f"rate cut to 6.25e-05); {out} holds the model of step 3, the last good one; start a "
        "new run with a lower --lr"]
    assert result.stderr.count("rolled back to step 3") == 3
    assert _same(out, ema[3])
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["steps"] == 3
    assert config["training"]["guard"]["stopped"] == ("diverged at step 5 (l1 is nan) with no "
                                                      "rollback left")
    assert "stopped: diverged at step 5" in " ".join((out / "README.md").read_text().split())


@pytest.mark.parametrize("arch", ["gan", "diffusion"])
def test_an_absurd_learning_rate_saves_nothing(tmp_path, bert, arch):
    out = tmp_path / "ckpt"
    result = runner.invoke(app, _args(out, bert, arch, 6, 2, "--lr", "1e20"))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("cfx: error: ")]
    assert len(errors) == 1 and errors[0].startswith("cfx: error: --lr: training diverged at "
                                                     "step ")
    assert "after 3 rollbacks (learning rate cut to 1.25e+19); nothing was saved" in errors[0]
    assert not out.exists()


def test_resume_keeps_the_rollbacks_and_the_lower_learning_rate(tmp_path, bert, monkeypatch):
    """A run rolled back before its save resumes at the halved rate, and its config still
    lists the rollback."""
    _instrument(monkeypatch, "gan", {1})
    out = tmp_path / "ckpt"
    assert runner.invoke(app, _args(out, bert, "gan", 2, 2)).exit_code == 0
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["steps"] == 4
    assert [r["step"] for r in config["training"]["guard"]["rollbacks"]] == [2]
    state = json.loads((out / "training_state.json").read_text())
    assert state["optimizer_g"][0]["lr"] == 2.5e-4 and state["guard"]["accepted"] == 4


@pytest.mark.parametrize("arch, head", [("gan", "head"), ("diffusion", "unet.out.2.conv")])
def test_what_the_sweep_draws_stays_in_the_window_the_checkpoint_records(tmp_path, bert, arch,
                                                                         head):
    """A checkpoint whose network is pushed far outside its window (output bias +-50 window
    units) still draws HU inside the window its config records, on the sweep's path."""
    import numpy as np

    from cfx.counterfactual.cohort import Subject
    from cfx.counterfactual.prompts import DEFAULT_TEMPLATE
    from cfx.counterfactual.sweep.generators import Request
    from cfx.counterfactual.sweep.learned import learned_generator
    from cfx.counterfactual.volume import Volume

    out = tmp_path / "ckpt"
    assert runner.invoke(app, _args(out, bert, arch, 2, 2, "-q")).exit_code == 0
    generator = learned_generator(out)
    low, high = json.loads((out / "config.json").read_text())["hu_window"]
    labels = np.zeros((16, 16, 16), np.int16)
    labels[2:7, 3:13, 3:13], labels[9:14, 3:13, 3:13] = 1, 2
    record = {"age": 60, "sex": "F", "smoking": "yes"}
    request = Request.build("yes", record, DEFAULT_TEMPLATE)
    bias = dict(generator.model.named_parameters())[head + ".bias"]
    drawn = {}
    for push, bound in ((50.0, high), (-50.0, low)):
        with torch.no_grad():
            bias.fill_(push)
        (ct,) = generator.generate(Subject("s", out, None, record), Volume(labels, np.eye(4)),
                                   "smoking", [request], 0)
        assert np.isfinite(ct).all() and low <= ct.min() and ct.max() <= high
        assert arch == "diffusion" or (ct == bound).all(), (push, ct.min(), ct.max())
        drawn[push] = ct
    if arch == "diffusion":  # the residual saturates at each end (DDIM clips it to the
        # window's range) and the label levels are added once, then the whole is clipped
        assert generator.model.levels is not None
        assert (drawn[50.0] - drawn[-50.0] >= (high - low) / 2).all()
