"""``cfx models list`` / ``cfx models show``."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.sweep.catalog import bundled_models
from cfx.models.checkpoint import content_hash, save_checkpoint
from tests.models.conftest import tiny_generator

runner = CliRunner()


@pytest.fixture
def local(tmp_path):
    folder = save_checkpoint(tmp_path / "mine", "cond_gan3d", tiny_generator(),
                             {"name": "mine", "training": {"steps": 7},
                              "text_encoder": {"name": "tiny", "width": 32}},
                             "# mine\n\nA card for tests.\n")
    return folder


def test_list_shows_the_oracle_bundled_and_local_models(local, tmp_path):
    result = runner.invoke(app, ["models", "list", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "phantom-oracle" in result.stdout
    for name in bundled_models():
        assert name in result.stdout
    assert str(local) in result.stdout and "local" in result.stdout
    assert content_hash(local)[7:19] in result.stdout
    assert "cond_gan3d (affine)" in result.stdout


def test_show_prints_the_card_and_config(local):
    result = runner.invoke(app, ["models", "show", str(local)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "A card for tests." in result.stdout
    assert content_hash(local) in result.stdout
    assert "channels [4, 8, 8]" in result.stdout
    as_json = runner.invoke(app, ["models", "show", str(local), "--json"])
    assert json.loads(as_json.stdout)["generator"]["channels"] == [4, 8, 8]


def test_show_a_bundled_model_by_name():
    names = list(bundled_models())
    assert names, "a bundled checkpoint ships under models/bundled/"
    result = runner.invoke(app, ["models", "show", names[0]], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Not for diagnosis" in result.stdout


def _error(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfx: error: models show: ")
    return lines[0]


def test_show_unknown(tmp_path):
    assert "no model 'nope'; bundled: " in _error(["models", "show", "nope"])


def test_show_refuses_a_pickle(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, path)
    assert "a .pt file is a pickle" in _error(["models", "show", str(path)])


def test_show_not_a_checkpoint(tmp_path):
    (tmp_path / "x").mkdir()
    assert "no model.safetensors; not a cfx checkpoint folder" in _error(
        ["models", "show", str(tmp_path / "x")])
