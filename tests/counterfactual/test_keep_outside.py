"""``cfx sweep --from-ct --keep-outside REGION``: the edit acts only inside REGION, the run says
so, and ``cfx stats`` and ``cfx audit`` never count the held controls as evidence."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def held_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keep")
    result = runner.invoke(app, ["phantom", "--out", str(folder / "cohort"), "--subjects", "3",
                                 "--shape", "32,32,32", "--spacing", "10", "--quiet"])
    assert result.exit_code == 0, result.output
    run = folder / "run"
    result = runner.invoke(app, ["sweep", "--cohort", str(folder / "cohort"), "--model",
                                 "phantom-diffusion-32", "--attribute", "smoking", "--values",
                                 "no,yes", "--seeds", "0", "--from-ct", "--keep-outside", "lung",
                                 "--steps", "3", "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder


def test_outside_the_lungs_every_value_is_the_subjects_ct(held_run):
    manifest = json.loads((held_run / "run" / "manifest.json").read_text())
    assert manifest["settings"]["sampling"]["keep_outside"] == "lung"
    for subject in ("P000", "P001"):
        mask = nib.load(held_run / "cohort" / "masks" / f"{subject}.nii.gz").get_fdata()
        ct = nib.load(held_run / "cohort" / "ct" / f"{subject}.nii.gz").get_fdata()
        outputs = sorted((held_run / "run").rglob(f"sub-{subject}*_ct.nii.gz"))
        volumes = [nib.load(p).get_fdata() for p in outputs]
        assert len(volumes) == 2
        outside = ~np.isin(mask, (1, 2))
        held = np.clip(ct, -1024.0, 1024.0)[outside]  # the CT as the model's window holds it
        for volume in volumes:  # up to int16 rounding
            np.testing.assert_allclose(volume[outside], held, atol=1.0)
        assert np.abs(volumes[0] - volumes[1])[~outside].mean() > 1.0  # edited in the lungs


def test_stats_and_audit_label_the_controls_as_held(held_run):
    run = held_run / "run"
    result = runner.invoke(app, ["stats", str(run)])
    assert result.exit_code == 0, result.output
    assert "by construction = the sweep held every voxel outside" in result.output
    effects = pd.read_csv(run / "stats" / "effects.csv")
    judged = effects[effects["unit"] == "HU"]
    assert "specific" not in set(effects["verdict"])
    lung = judged[judged["region"] == "lung"].set_index("metric")["verdict"]
    assert lung["mean"] == "by construction"  # an effect, held off the lungs by the sweep
    assert set(lung) <= {"by construction", "no effect"}  # never a finding
    result = runner.invoke(app, ["audit", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    minimality = json.loads((run / "audit" / "audit.json").read_text())["criteria"]["minimality"]
    assert minimality["verdict"] == "not applicable"
    assert any("by construction" in note for note in minimality["notes"])


@pytest.mark.parametrize("extra, message", [
    (["--keep-outside", "lung"], "--keep-outside: holds voxels to each subject's CT; add "
                                 "--from-ct"),
    (["--from-ct", "--keep-outside", "spleen"], "--keep-outside: region 'spleen' is not "
                                                "defined"),
])
def test_keep_outside_errors(tmp_path, extra, message):
    out = tmp_path / "run"
    result = runner.invoke(app, ["sweep", "--model", "phantom-diffusion-32", "--attribute",
                                 "smoking", "--values", "no,yes", "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_a_gan_refuses_keep_outside(tmp_path):
    result = runner.invoke(app, ["sweep", "--model", "phantom-gan-64", "--attribute", "smoking",
                                 "--values", "no,yes", "--out", str(tmp_path / "run"),
                                 "--keep-outside", "lung"])
    assert result.exit_code == 2
    assert "--keep-outside: only diffusion models take this option" in result.stderr
