"""The newcomer test: a third architecture added from this module alone, touching no other file.

It registers itself (:func:`cfx.models.architectures.register`, undone after each test), saves a
checkpoint, which ``read_config``/``load_generator`` then accept, ``cfx models list`` lists, and
``cfx sweep`` serves through a :class:`cfx.counterfactual.sweep.learned.LearnedModel` subclass
defined here. The toy reads the mask only: what it shows is the plumbing, not conditioning.
"""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.labels import DEFAULT_VOCABULARY
from cfx.counterfactual.sweep import learned
from cfx.counterfactual.training_data import label_channels
from cfx.models.architectures import ARCHITECTURES, Architecture, look_up
from cfx.models.checkpoint import load_generator, save_checkpoint
from cfx.models.checkpoint_files import read_config

runner = CliRunner()
TOY = Architecture("toy", "toy_net3d", __name__, channels="4,8", lr=1e-3,
                   summary="label channels -> HU by one 1x1x1 convolution (a test toy)")
WINDOW = (-1024.0, 1024.0)  # HU of the network's [-1, 1]


class NETWORK(torch.nn.Module):
    """Label channels (N, C, X, Y, Z) -> one HU volume (N, 1, X, Y, Z) in the window's units."""

    def __init__(self, label_channels: int):
        super().__init__()
        self.config = {"label_channels": label_channels}
        self.fields = ("smoking",)
        self.conv = torch.nn.Conv3d(label_channels, 1, 1)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(labels))


@pytest.fixture
def toy(monkeypatch):
    """The toy registered as an architecture and as a served model, for one test."""
    monkeypatch.setitem(ARCHITECTURES, TOY.name, TOY)
    monkeypatch.setitem(learned.SERVED, TOY.checkpoint, None)  # undone: the key is removed

    class ToyModel(learned.LearnedModel):
        architecture = TOY
        kind = "a toy"

        def check(self, cohort, attribute):
            pass  # no text encoder to load

        def projected_seconds(self, shape, requests):
            return 0.0  # one convolution: nothing worth projecting

        def generate(self, subject, mask, attribute, requests, seed, ct=None):
            channels = torch.from_numpy(label_channels(mask.data, self.vocabulary))
            onehot = torch.nn.functional.one_hot(channels, self.model.config["label_channels"])
            out = self.model(onehot.permute(3, 0, 1, 2)[None].float())[0, 0].numpy()
            low, high = WINDOW
            hu = (out + 1) / 2 * (high - low) + low
            return [hu.astype(np.float32) for _ in requests]

    return ToyModel


def _checkpoint(folder):
    torch.manual_seed(0)
    network = NETWORK(len(DEFAULT_VOCABULARY.labels) + 1)
    metadata = {"name": "toy", "hu_window": list(WINDOW), "labels": DEFAULT_VOCABULARY.to_json(),
                "text_encoder": {"name": "none", "identifier": "none", "width": 1,
                                 "max_length": 2},
                "training": {"arguments": {"patch": [16, 16, 16]}, "steps": 0},
                # the grid of cfx phantom --shape 16,16,16 (5 mm voxels): served unresampled
                "grid": {"spacing_mm": [5, 5, 5], "orientation": "RAS",
                         "patch_voxels": [16, 16, 16], "field_of_view_mm": [80, 80, 80],
                         "hu_window": list(WINDOW)}}
    return save_checkpoint(folder, TOY.checkpoint, network, metadata, "# toy\n"), network


def test_the_toy_registers_and_round_trips_through_a_checkpoint(toy, tmp_path):
    assert look_up("toy") is TOY
    folder, network = _checkpoint(tmp_path / "toy")
    assert read_config(folder)["architecture"] == "toy_net3d"
    loaded = load_generator(folder)
    assert isinstance(loaded.generator, NETWORK)
    for name, tensor in network.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[name], tensor), name


def test_an_unregistered_toy_checkpoint_is_refused(tmp_path, toy, monkeypatch):
    folder, _ = _checkpoint(tmp_path / "toy")
    monkeypatch.delitem(ARCHITECTURES, TOY.name)
    result = runner.invoke(app, ["models", "show", str(folder)])
    assert result.exit_code == 2
    assert "unknown architecture 'toy_net3d'" in result.stderr


def test_the_toy_is_listed_and_served_by_the_sweep(toy, tmp_path):
    folder, network = _checkpoint(tmp_path / "models" / "toy")
    listed = runner.invoke(app, ["models", "list", str(tmp_path / "models")])
    assert listed.exit_code == 0, listed.output
    assert "toy_net3d" in listed.stdout
    cohort = tmp_path / "cohort"
    assert runner.invoke(app, ["phantom", "--out", str(cohort), "--subjects", "1", "--shape",
                               "16,16,16", "-q"]).exit_code == 0
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", "-a", "smoking", "--values", "yes,no", "--model",
                                 str(folder), "--cohort", str(cohort), "--out", str(out),
                                 "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "toy"
    item = manifest["items"][0]
    ct = np.asanyarray(nib.load(out / item["path"]).dataobj)
    # the toy's own output, by hand: one 1x1x1 convolution of the mask's label channels
    mask = np.asanyarray(nib.load(manifest["masks"][item["subject"]]).dataobj).astype(int)
    weight = network.conv.weight.detach().numpy().reshape(-1)
    expected = np.tanh(weight[mask] + network.conv.bias.item()) * 1024.0
    np.testing.assert_allclose(ct, expected, atol=1.0)  # int16 HU on disk
