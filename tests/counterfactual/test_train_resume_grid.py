"""``cfx train --resume`` compares the cohort's grid with the checkpoint's ``grid`` block and
refuses a mismatch in one line (exit 2), leaving the checkpoint as it was."""

import json

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.grid import check_resumed_grid
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.volume import read_labels, read_volume, write_volume
from tests.models.conftest import save_tiny_bert

runner = CliRunner()
_GRID = {"spacing_mm": [20.0, 20.0, 20.0], "orientation": "RAS", "patch_voxels": [16, 16, 16],
         "field_of_view_mm": [320.0, 320.0, 320.0], "hu_window": [-1024.0, 1024.0]}


@pytest.mark.parametrize("spacing, orientation", [((20.0, 20.0, 20.0), "RAS"),
                                                  ((20.0005, 20.0, 19.9995), "ras")])
def test_the_same_grid_resumes(spacing, orientation):
    check_resumed_grid({"grid": _GRID}, spacing, orientation, "ckpt/config.json")
    check_resumed_grid({}, (1.0, 1.0, 1.0), "LPS", "ckpt/config.json")  # no block: no check


@pytest.mark.parametrize("spacing, orientation, now", [
    ((10.0, 20.0, 20.0), "RAS", "10x20x20 mm RAS"),
    ((20.0, 20.0, 20.0), "LPS", "20x20x20 mm LPS"),
])
def test_another_grid_is_refused(spacing, orientation, now):
    with pytest.raises(UserInputError, match=f"^--resume: ckpt/config.json was trained on "
                                             f"20x20x20 mm RAS voxels but its cohort now gives "
                                             f"{now}; resume on the cohort"):
        check_resumed_grid({"grid": _GRID}, spacing, orientation, "ckpt/config.json")


def test_cfx_train_resume_refuses_a_cohort_on_another_grid(tmp_path):
    bert = str(save_tiny_bert(tmp_path / "bert"))
    cohort = tmp_path / "cohort"
    write_phantom(cohort, PhantomSettings(subjects=3, shape=(16, 16, 16), spacing=(20.0,) * 3),
                  quiet=True)
    out = tmp_path / "ckpt"
    common = ["--patch", "16", "--channels", "4,8", "--batch-size", "2", "--text-encoder", bert,
              "--device", "cpu", "-q"]
    result = runner.invoke(app, ["train", "--cohort", str(cohort), "--out", str(out),
                                 "--steps", "2", *common])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["grid"]["spacing_mm"] == [20.0] * 3
    # the same cohort on a 10 mm grid (same arrays, half the voxel size)
    for folder in ("masks", "ct"):
        for path in sorted((cohort / folder).glob("*.nii.gz")):
            volume = read_labels(path) if folder == "masks" else read_volume(path)
            affine = volume.affine.copy()
            affine[:3, :3] /= 2
            write_volume(path, volume.data, affine)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--steps", "4",
                                 *common])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith(f"cfx: error: --resume: {out / 'config.json'} was trained on "
                               "20x20x20 mm RAS voxels but its cohort now gives 10x10x10 mm "
                               "RAS;"), lines[0]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
