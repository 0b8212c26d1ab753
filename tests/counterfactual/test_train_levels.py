"""``cfx train --label-levels/--no-label-levels``, ``--level-rows`` and ``--film-decay``: a GAN
or diffusion model whose record sets each label's level on its own linear path, fitted on the
rows asked for (and a GAN whose FiLM's record weights decay); recorded in the checkpoint,
served by the sweep, kept on resume, refused where they cannot apply."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.sweep.learned import LearnedGenerator
from cfx.models.training.diffusion import DiffusionTrainer
from cfx.models.training.gan import GANTrainer
from tests.conftest import cli_error
from tests.counterfactual.test_train_body import _train, trained

runner = CliRunner()


@pytest.fixture(scope="module")
def levelled(tmp_path_factory, bert):
    return trained(tmp_path_factory, bert, "--body", "--label-levels")


def test_the_checkpoint_records_and_serves_the_label_levels(levelled):
    config = json.loads((levelled / "config.json").read_text())
    assert config["generator"]["label_levels"] is True
    assert config["training"]["arguments"]["label_levels"] is True
    assert "--label-levels" in config["training"]["command"].split()
    weights = load_file(levelled / "model.safetensors")
    assert weights["label_levels.weight"].shape[0] == 5  # background, 3 labels and the body
    assert weights["label_levels.weight"].abs().max() > 0  # fitted before the first step
    served = LearnedGenerator(levelled).model
    assert served.config["label_levels"] is True and served.label_levels is not None
    assert "affine text fusion, label levels)" in (levelled / "README.md").read_text()


def test_no_label_levels_builds_the_plain_generator(tmp_path, bert):
    out = tmp_path / "plain"
    assert _train(out, bert, "--no-label-levels").exit_code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["generator"]["label_levels"] is False
    assert "--no-label-levels" in config["training"]["command"].split()
    assert not any(k.startswith("label_levels.") for k in load_file(out / "model.safetensors"))
    assert "(`cond_gan3d`, affine text fusion) made" in (out / "README.md").read_text()


def test_a_levelled_run_resumes_with_its_levels(tmp_path, bert):
    out = tmp_path / "copy"
    assert _train(out, bert, "--label-levels").exit_code == 0
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((out / "config.json").read_text())
    assert resumed["generator"]["label_levels"] is True and resumed["training"]["steps"] == 4


@pytest.mark.parametrize("first, then, match", [
    ("--no-label-levels", "--label-levels", "--label-levels: {} was trained without label "
                                            "levels and cannot change that on resume"),
    ("--label-levels", "--no-label-levels", "--no-label-levels: {} was trained with label "
                                            "levels and cannot change that on resume"),
])
def test_label_levels_cannot_change_on_resume(tmp_path, bert, first, then, match):
    out = tmp_path / "run"
    assert _train(out, bert, first).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    line = cli_error(["train", "--out", str(out), "--steps", "4", "--resume", then, "--device",
                      "cpu"])
    assert line.startswith("cfx: error: " + match.format(out))
    assert (out / "model.safetensors").read_bytes() == before


def test_a_diffusion_run_has_label_levels_by_default_and_keeps_them_on_resume(tmp_path, bert,
                                                                               monkeypatch):
    diffusion = ("--arch", "diffusion", "--channels", "8,16")
    levelled, plain = tmp_path / "levelled", tmp_path / "plain"
    fits = []
    fit_levels = DiffusionTrainer.fit_levels
    monkeypatch.setattr(DiffusionTrainer, "fit_levels",
                        lambda self, rows: fits.append(rows) or fit_levels(self, rows))
    assert _train(levelled, bert, *diffusion, "--level-rows", "64").exit_code == 0
    assert fits == [64]  # fitted once, on the rows asked for
    arguments = json.loads((levelled / "config.json").read_text())["training"]["arguments"]
    assert arguments["level_rows"] == 64 and "--level-rows 64" in arguments["command"]
    assert arguments["body"] is True  # a new diffusion run reads the body too
    assert "on the record over 64 training rows" in (levelled / "README.md").read_text()
    assert _train(plain, bert, *diffusion, "--no-label-levels").exit_code == 0
    for out, levels in ((levelled, True), (plain, False)):
        config = json.loads((out / "config.json").read_text())
        assert config["generator"]["label_levels"] is levels
        flag = "--label-levels" if levels else "--no-label-levels"
        assert flag in config["training"]["command"].split()
        weights = load_file(out / "model.safetensors")
        assert ("levels.weight" in weights) is levels
    assert load_file(levelled / "model.safetensors")["levels.bias"].shape == (5,)  # and body
    before = (levelled / "model.safetensors").read_bytes()
    line = cli_error(["train", "--out", str(levelled), "--steps", "4", "--resume",
                      "--no-label-levels", "--device", "cpu"])
    assert line == (f"cfx: error: --no-label-levels: {levelled} was trained with label levels "
                    "and cannot change that on resume; start a new run")
    assert (levelled / "model.safetensors").read_bytes() == before
    result = runner.invoke(app, ["train", "--out", str(levelled), "--steps", "4", "--resume",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "--label-levels" in json.loads((levelled / "config.json").read_text())[
        "training"]["command"].split()


def test_a_gan_run_fits_its_levels_once_and_keeps_them_fixed_on_resume(tmp_path, bert,
                                                                      monkeypatch):
    out = tmp_path / "gan"
    fits = []
    fit_levels = GANTrainer.fit_levels
    monkeypatch.setattr(GANTrainer, "fit_levels",
                        lambda self, rows: fits.append(rows) or fit_levels(self, rows))
    assert _train(out, bert, "--level-rows", "32").exit_code == 0
    assert fits == [32]
    arguments = json.loads((out / "config.json").read_text())["training"]["arguments"]
    assert arguments["level_rows"] == 32 and "--level-rows 32" in arguments["command"]
    before = load_file(out / "model.safetensors")["label_levels.weight"]
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert fits == [32]  # not fitted again, and no step moved them
    assert torch.equal(load_file(out / "model.safetensors")["label_levels.weight"], before)
    assert "--level-rows" not in _arguments_of(tmp_path, bert, "--no-label-levels")["command"]


def _arguments_of(tmp_path, bert, *extra):
    out = tmp_path / "other"
    assert _train(out, bert, *extra).exit_code == 0
    return json.loads((out / "config.json").read_text())["training"]["arguments"]


def test_level_rows_are_refused_for_a_gan_without_levels(tmp_path, bert):
    out = tmp_path / "out"
    line = cli_error(["train", "--cohort", "phantom:4", "--out", str(out), "--text-encoder",
                      bert, "--level-rows", "64", "--no-label-levels"])
    assert line == ("cfx: error: --level-rows: this run has no label levels to fit; add "
                    "--label-levels or leave --level-rows out")
    assert not out.exists()


def test_film_decay_is_recorded_and_can_change_on_resume(tmp_path, bert):
    out = tmp_path / "film"
    assert _train(out, bert, "--film-decay", "2").exit_code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["arguments"]["film_decay"] == 2.0
    assert "--film-decay 2.0" in config["training"]["command"]
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "4", "--resume",
                                 "--film-decay", "5", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((out / "config.json").read_text())
    assert resumed["training"]["arguments"]["film_decay"] == 5.0
    assert "--film-decay 5.0" in resumed["training"]["command"]
    default, off = tmp_path / "default", tmp_path / "off"
    assert _train(default, bert).exit_code == 0
    assert _train(off, bert, "--film-decay", "0").exit_code == 0
    for folder, decay in ((default, 2.0), (off, 0.0)):  # the command always says which
        config = json.loads((folder / "config.json").read_text())
        assert config["training"]["arguments"]["film_decay"] == decay
        assert f"--film-decay {decay}" in config["training"]["command"]
    crossed = tmp_path / "crossed"
    assert _train(crossed, bert, "--fusion", "cross-attention").exit_code == 0
    config = json.loads((crossed / "config.json").read_text())
    assert config["training"]["arguments"]["film_decay"] == 0.0
    assert "--film-decay" not in config["training"]["command"]


@pytest.mark.parametrize("extra, line", [
    (["--film-decay", "-1"], "cfx: error: --film-decay: got -1.0; give a decay >= 0"),
    (["--film-decay", "2", "--fusion", "cross-attention"],
     "cfx: error: --film-decay: applies to --fusion affine only; this run is --fusion "
     "cross-attention"),
    (["--arch", "diffusion", "--film-decay", "2"],
     "cfx: error: --film-decay: applies to --arch gan only; this run is --arch diffusion"),
])
def test_film_decay_errors(tmp_path, bert, extra, line):
    out = tmp_path / "out"
    assert cli_error(["train", "--cohort", "phantom:4", "--out", str(out), "--steps", "2",
                      "--patch", "16", "--phantom-shape", "16", "--channels", "8,16",
                      "--text-encoder", bert, *extra]) == line
    assert not out.exists()


def test_film_decay_is_refused_on_resuming_a_run_without_film(tmp_path, bert):
    out = tmp_path / "crossed"
    assert _train(out, bert, "--fusion", "cross-attention").exit_code == 0  # decay 0
    before = (out / "model.safetensors").read_bytes()
    line = cli_error(["train", "--out", str(out), "--steps", "4", "--resume", "--film-decay",
                      "2", "--device", "cpu"])
    assert line == ("cfx: error: --film-decay: applies to --fusion affine only; this run is "
                    "--fusion cross-attention")
    assert (out / "model.safetensors").read_bytes() == before
