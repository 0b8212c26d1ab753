import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.render import RenderConfig, run_render
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep

runner = CliRunner()
PANEL = "sub-A1_attr-smoking_contrast-yes-vs-no_seed-0_axis-axial_panel.gif"
MOSAICS = ["sub-A1_attr-smoking_val-no_seed-0_axis-axial_mosaic.png",
           "sub-A1_attr-smoking_val-yes_seed-0_axis-axial_mosaic.png"]
CT_GIFS = ["sub-A1_attr-smoking_val-no_seed-0_axis-axial_ct.gif",
           "sub-A1_attr-smoking_val-yes_seed-0_axis-axial_ct.gif"]
DIFF_GIF = "sub-A1_attr-smoking_contrast-yes-vs-no_seed-0_axis-axial_diff.gif"


@pytest.fixture
def run(tmp_path, cohort, fake):
    out = tmp_path / "run"
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0,), out, quiet=True), cohort, fake)
    return out


def _frames(path):
    return np.asarray(iio.imread(path, index=None))[..., :3].astype(int)


def test_render_writes_panels_and_mosaics_by_default(run, labels):
    result = runner.invoke(app, ["render", str(run), "--subject", "A1", "--fps", "5", "-q"])
    assert result.exit_code == 0, result.stderr
    folder = run / "render" / "sub-A1"
    assert sorted(p.name for p in folder.iterdir()) == sorted([PANEL, *MOSAICS])
    assert iio.improps(folder / PANEL, index=None).shape[0] == labels.shape[2]
    with Image.open(folder / PANEL) as gif:
        assert gif.info["duration"] == 200
    assert not (run / "render" / "sub-B2").exists()


def test_gifs_all_adds_per_volume_and_difference_gifs_that_the_panel_already_shows(run, labels):
    result = runner.invoke(app, ["render", str(run), "--subject", "A1", "--gifs", "all", "-q"])
    assert result.exit_code == 0, result.stderr
    folder = run / "render" / "sub-A1"
    assert sorted(p.name for p in folder.iterdir()) == sorted([PANEL, DIFF_GIF, *CT_GIFS,
                                                               *MOSAICS])
    panel = _frames(folder / PANEL)
    for name in (*CT_GIFS, DIFF_GIF):
        frames = _frames(folder / name)
        assert frames.shape[0] == panel.shape[0] == labels.shape[2]
    # the panel's first and second columns are the two CT GIFs, below the title strip
    rows, cols = _frames(folder / CT_GIFS[0]).shape[1:3]
    top = panel.shape[1] - rows
    for column, name in enumerate(CT_GIFS):
        start = column * (cols + 4)  # 4-pixel gap between panel columns
        shown = panel[:, top:, start:start + cols]
        assert np.abs(shown - _frames(folder / name)).mean() < 3  # both palettes: a few greys


def test_run_render_engine_returns_the_render_folder(run):
    out = run_render(RenderConfig(run, subjects=("B2",), size=16, quiet=True))
    assert out == run / "render"
    assert sorted(p.name for p in (out / "sub-B2").iterdir()) == sorted(
        n.replace("A1", "B2") for n in [PANEL, *MOSAICS])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("gifs", "some", "--gifs: got 'some'; choose one of panels, all"),
    ("axis", "oblique", "--axis: got 'oblique'; choose one of axial, coronal, sagittal"),
    ("size", 0, "--size: must be 1..4096 pixels, got 0"),
])
def test_run_render_refuses_a_bad_option_before_reading_the_run(tmp_path, field, value,
                                                                 message):
    with pytest.raises(UserInputError, match=message):
        run_render(RenderConfig(tmp_path / "no-such-run", **{field: value}))


@pytest.mark.parametrize(("args", "message"), [
    (["--axis", "oblique"], "--axis: got 'oblique'; choose one of axial, coronal, sagittal"),
    (["--window", "bone"], "--window: window must be lung, mediastinum or 'W,L'"),
    (["--fps", "0"], "--fps: must be > 0, got 0"),
    (["--subject", "ZZ"], "--subject: ZZ not in"),
    (["--gifs", "panel"], "'--gifs': got 'panel'; choose one of panels, all (did you mean "
                          "'panels'?)"),
])
def test_bad_render_options_write_nothing(run, args, message):
    result = runner.invoke(app, ["render", str(run), *args])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (run / "render").exists()


def test_render_help_says_what_each_gif_set_writes():
    result = runner.invoke(app, ["render", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert "panels: a reference | counterfactual | difference GIF" in text
    assert "all: the panels and mosaics, plus a GIF per volume" in text


def test_render_of_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["render", str(tmp_path)])
    assert result.exit_code == 2 and "not a cfx run (no manifest.json)" in result.stderr
