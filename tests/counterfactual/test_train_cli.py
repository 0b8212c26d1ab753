"""``cfx train``: a tiny run end to end, exact resume, and one-line user errors."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from tests.conftest import cli_error

runner = CliRunner()


def _train(out, bert, *extra, steps=2):
    args = ["train", "--cohort", "phantom:4", "--out", str(out), "--steps", str(steps),
            "--patch", "16", "--phantom-shape", "16", "--channels", "4,8", "--batch-size", "2",
            "--text-encoder", bert, "--device", "cpu", "--save-every", "2", "--log-every", "1",
            *extra]
    return runner.invoke(app, args)


def test_a_tiny_run_writes_a_checkpoint(tmp_path, bert):
    result = _train(tmp_path / "ckpt", bert)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "ckpt"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "training_state.safetensors",
            "training_state.json"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "cond_gan3d" and config["generator"]["fusion"] == "affine"
    assert config["training"]["steps"] == 2
    assert config["training"]["command"].startswith("cfx train --cohort phantom:4")
    assert config["text_encoder"]["width"] == 32
    assert config["training_cohort"]["subjects"] == 4
    assert config["prompt_template"]["name"] == "default"
    assert config["hu_window"] == [-1024.0, 1024.0]
    assert "step 2/2: l1" in result.output
    card = (folder / "README.md").read_text()
    assert "Not for diagnosis" in card
    assert "synthetic phantom" in card


def test_resume_continues_exactly(tmp_path, bert):
    assert _train(tmp_path / "straight", bert, steps=4).exit_code == 0
    assert _train(tmp_path / "split", bert, steps=2).exit_code == 0
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "split"), "--steps", "4",
                                 "--resume", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "training_state.safetensors"):
        a = load_file(tmp_path / "straight" / name)
        b = load_file(tmp_path / "split" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["training"]["steps"] == 4


def test_cross_attention_run(tmp_path, bert):
    result = _train(tmp_path / "xattn", bert, "--fusion", "cross-attention", "--channels", "4,8",
                    "--fusion-lr-scale", "10")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "xattn" / "config.json").read_text())
    assert config["generator"]["fusion"] == "cross-attention"
    assert config["text_normalisation"]["token_dims"] == 16  # half the 32-d encoder
    assert config["training"]["arguments"]["fusion_lr_scale"] == 10
    state = json.loads((tmp_path / "xattn" / "training_state.json").read_text())
    assert [g["lr"] for g in state["optimizer_g"]] == [5e-4, 5e-3]


@pytest.mark.parametrize("extra, message", [
    (["--patch", "17"], "--patch: got '17'; with 2 levels every side must be a multiple of 2"),
    (["--patch", "a,b"], "--patch: got 'a,b'; give X,Y,Z"),
    (["--channels", "8"], "--channels: got '8'; give at least two positive integers"),
    (["--drop-rate", "1.5"], "--drop-rate: got 1.5; give a probability in [0, 1)"),
    (["--lr", "0"], "--lr: got 0.0; give a positive learning rate"),
    (["--fusion-lr-scale", "-1"], "--fusion-lr-scale: got -1.0; give a positive factor"),
    (["--cohort", "phantom:0"], "--cohort: got 'phantom:0'; give a folder, 'phantom' or"),
    (["--fusion", "concat"], "got 'concat'; choose one of affine, cross-attention"),
    (["--arch", "vae"], "got 'vae'; choose one of gan"),
    (["--steps", "0"], "got 0; give an integer >= 1"),
    (["--text-encoder", "/no/such/encoder"], "--text-encoder: text encoder '/no/such/encoder' is "
     "not a local folder"),
])
def test_user_errors(tmp_path, bert, extra, message):
    out = tmp_path / "out"
    args = ["train", "--cohort", "phantom:4", "--out", str(out), "--steps", "2", "--patch",
            "16", "--phantom-shape", "16", "--channels", "4,8", "--text-encoder", bert,
            "--device", "cpu", *extra]
    assert message in cli_error(args)
    assert not out.exists()


def test_out_not_empty_without_resume(tmp_path, bert):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep")
    line = cli_error(["train", "--cohort", "phantom:4", "--out", str(out), "--text-encoder",
                   bert])
    assert "--out: " in line and "exists and is not empty; give a new folder or add --resume" \
        in line
    assert [p.name for p in out.iterdir()] == ["x"]


def test_resume_errors(tmp_path, bert):
    line = cli_error(["train", "--out", str(tmp_path / "none"), "--resume"])
    assert "--resume: " in line and "not a checkpoint folder" in line
    assert _train(tmp_path / "done", bert, steps=2).exit_code == 0
    line = cli_error(["train", "--out", str(tmp_path / "done"), "--resume", "--steps", "2"])
    assert "--steps: " in line and "already has 2 steps; give a larger total" in line
    (tmp_path / "done" / "training_state.json").unlink()
    line = cli_error(["train", "--out", str(tmp_path / "done"), "--resume", "--steps", "4"])
    assert "has no training state to continue from" in line


def test_missing_cohort(tmp_path):
    line = cli_error(["train", "--out", str(tmp_path / "o")])
    assert "--cohort: missing; give a cohort folder, 'phantom' or 'phantom:N'" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_a_gpu(tmp_path):
    line = cli_error(["train", "--cohort", "phantom", "--out", str(tmp_path / "o"), "--device",
                   "cuda"])
    assert "--device: cuda asked for but no CUDA device is visible" in line


@pytest.fixture(scope="module")
def cohort_folder(tmp_path_factory):
    from cfx.counterfactual.phantom import PhantomSettings, write_phantom

    out = tmp_path_factory.mktemp("c") / "cohort"
    write_phantom(out, PhantomSettings(subjects=3, shape=(16, 16, 16), spacing=(20.0,) * 3),
                  quiet=True)
    return out


def test_trains_on_a_cohort_folder(tmp_path, bert, cohort_folder):
    out = tmp_path / "ckpt"
    result = runner.invoke(app, ["train", "--cohort", str(cohort_folder), "--out", str(out),
                                 "--steps", "2", "--patch", "16", "--channels", "4,8",
                                 "--batch-size", "2", "--text-encoder", bert, "--device", "cpu",
                                 "-q"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["training_cohort"] == {"kind": "cohort", "source": str(cohort_folder),
                                         "subjects": 3, "prompt_field_drop_rate": 0.2}
    assert f"the cohort {cohort_folder} (3 subjects)" in (out / "README.md").read_text()
    assert "warning: 3 training subjects; on phantoms" in " ".join(result.stderr.split())


def test_a_cohort_without_cts_is_refused(tmp_path, bert, cohort_folder):
    import shutil

    copy = tmp_path / "noct"
    shutil.copytree(cohort_folder, copy)
    shutil.rmtree(copy / "ct")
    line = cli_error(["train", "--cohort", str(copy), "--out", str(tmp_path / "o"),
                   "--text-encoder", bert])
    assert "subject P000 has no CT; cfx train needs a CT for every subject" in line
    assert not (tmp_path / "o").exists()
