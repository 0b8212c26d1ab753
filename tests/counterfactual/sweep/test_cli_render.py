import imageio.v3 as iio
import pytest
from PIL import Image
from typer.testing import CliRunner

from counterfactual.cli import app
from counterfactual.sweep.engine import SweepConfig, run_sweep

runner = CliRunner()


@pytest.fixture
def run(tmp_path, cohort, fake):
    out = tmp_path / "run"
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0,), out, quiet=True), cohort, fake)
    return out


def test_render_writes_gifs_panels_and_mosaics(run, labels):
    result = runner.invoke(app, ["render", str(run), "--subject", "A1", "--fps", "5", "-q"])
    assert result.exit_code == 0, result.stderr
    folder = run / "render" / "sub-A1"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "sub-A1_attr-smoking_contrast-yes-vs-no_seed-0_axis-axial_diff.gif",
        "sub-A1_attr-smoking_contrast-yes-vs-no_seed-0_axis-axial_panel.gif",
        "sub-A1_attr-smoking_val-no_seed-0_axis-axial_ct.gif",
        "sub-A1_attr-smoking_val-no_seed-0_axis-axial_mosaic.png",
        "sub-A1_attr-smoking_val-yes_seed-0_axis-axial_ct.gif",
        "sub-A1_attr-smoking_val-yes_seed-0_axis-axial_mosaic.png",
    ]
    n_slices = labels.shape[2]
    for name in names:
        if name.endswith(".gif"):
            assert iio.improps(folder / name, index=None).shape[0] == n_slices
            with Image.open(folder / name) as gif:
                assert gif.info["duration"] == 200
    assert not (run / "render" / "sub-B2").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--axis", "oblique"], "--axis: got 'oblique'; choose one of axial, coronal, sagittal"),
    (["--window", "bone"], "--window: window must be lung, mediastinum or 'W,L'"),
    (["--fps", "0"], "--fps: must be > 0, got 0"),
    (["--subject", "ZZ"], "--subject: ZZ not in"),
])
def test_bad_render_options_write_nothing(run, args, message):
    result = runner.invoke(app, ["render", str(run), *args])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (run / "render").exists()


def test_render_of_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["render", str(tmp_path)])
    assert result.exit_code == 2 and "not a cfx run (no manifest.json)" in result.stderr
