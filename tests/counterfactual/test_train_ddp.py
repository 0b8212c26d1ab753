"""``cfx train`` on a streamed cohort folder, alone and as two ``torchrun`` processes (gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from tests.models.conftest import save_tiny_bert

runner = CliRunner()
ATOL = 1e-5  # data-parallel vs one process, L1 only (models/training/distributed.py)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    result = runner.invoke(app, ["phantom", "--out", str(root / "cohort"), "--subjects", "3",
                                 "--shape", "20,20,20", "--spacing", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    return root, str(save_tiny_bert(root / "bert"))


def _arguments(root: Path, bert: str, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--cohort", str(root / "cohort"), "--out", str(out), "--steps", str(steps),
            "--patch", "16", "--channels", "4,8", "--batch-size", "4", "--text-encoder", bert,
            "--device", "cpu", "--save-every", "2", "--adversarial-weight", "0", "--body",
            "--cache", str(root / "cache"), "--quiet", *extra,
            # levels fitted quickly, as in the test process; the edit loss pairs rows within
            # each process (GANTrainer.distribute), so it is off to compare like with like
            *(() if "--resume" in extra else ("--level-rows", "64", "--edit-weight", "0"))]


def _torchrun(arguments: list[str]) -> subprocess.CompletedProcess:
    cfx = shutil.which("cfx") or str(Path(sys.executable).with_name("cfx"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--standalone", "--no-python", cfx, *arguments, "--ddp"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=environment,
                          timeout=600)


def _weights(out: Path) -> dict:
    return load_file(out / "model.safetensors")


def test_a_streamed_run_resumes_exactly(setup, tmp_path):
    root, bert = setup
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out, steps in ((straight, 3), (split, 2)):
        result = runner.invoke(app, _arguments(root, bert, out, steps, "--workers", "0"))
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, _arguments(root, bert, split, 3, "--workers", "2",
                                           "--resume"))
    assert result.exit_code == 0, result.output
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    config = json.loads((straight / "config.json").read_text())
    assert config["training"]["processes"] == 1
    assert config["training_cohort"]["subjects"] == 3


def test_two_processes_train_save_and_resume_like_one(setup, tmp_path):
    root, bert = setup
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    result = runner.invoke(app, _arguments(root, bert, single, 3, "--workers", "0"))
    assert result.exit_code == 0, result.output
    run = _torchrun(_arguments(root, bert, parallel, 2, "--workers", "1"))
    assert run.returncode == 0, run.stderr[-3000:]
    config = json.loads((parallel / "config.json").read_text())
    assert config["training"]["processes"] == 2 and config["training"]["steps"] == 2
    run = _torchrun(_arguments(root, bert, parallel, 3, "--workers", "1", "--resume"))
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = _weights(single), _weights(parallel)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=ATOL, err_msg=key)
    assert json.loads((parallel / "config.json").read_text())["training"]["steps"] == 3


def test_a_batch_that_does_not_split_is_refused(setup, tmp_path):
    root, bert = setup
    arguments = _arguments(root, bert, tmp_path / "odd", 2)
    arguments[arguments.index("--batch-size") + 1] = "3"
    run = _torchrun(arguments)
    assert run.returncode != 0  # torchrun reports a failed process as 1; cfx itself exits 2
    assert "exitcode  : 2" in run.stderr
    assert ("--batch-size: 3 rows cannot be split evenly over 2 processes; give a multiple "
            "of 2") in run.stderr
    assert not (tmp_path / "odd").exists()


def test_ddp_without_torchrun_is_refused(setup, tmp_path):
    root, bert = setup
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    result = runner.invoke(app, [*_arguments(root, bert, tmp_path / "o", 2), "--ddp"],
                           env=environment)
    assert result.exit_code == 2
    assert "--ddp: RANK and WORLD_SIZE are not set; launch with torchrun" in result.output
