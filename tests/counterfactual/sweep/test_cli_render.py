import numpy as np
import pytest
from PIL import Image, ImageSequence
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.render import RenderConfig, run_render
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep

runner = CliRunner()
PANEL = "sub-A1_attr-smoking_contrast-yes-vs-no_seed-0_axis-axial_panel.png"
MOSAICS = ["sub-A1_attr-smoking_val-no_seed-0_axis-axial_mosaic.png",
           "sub-A1_attr-smoking_val-yes_seed-0_axis-axial_mosaic.png"]
CT_GIFS = ["sub-A1_attr-smoking_val-no_seed-0_axis-axial_ct.png",
           "sub-A1_attr-smoking_val-yes_seed-0_axis-axial_ct.png"]
DIFF_GIF = "sub-A1_attr-smoking_contrast-yes-vs-no_seed-0_axis-axial_diff.png"


@pytest.fixture
def run(tmp_path, cohort, fake):
    out = tmp_path / "run"
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0,), out, quiet=True), cohort, fake)
    return out


def _frames(path):
    with Image.open(path) as image:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
                        ).astype(int)


def test_render_writes_animated_png_panels_and_still_mosaics_by_default(run, labels):
    result = runner.invoke(app, ["render", str(run), "--subject", "A1", "--fps", "5", "-q"])
    assert result.exit_code == 0, result.stderr
    folder = run / "render" / "sub-A1"
    assert sorted(p.name for p in folder.iterdir()) == sorted([PANEL, *MOSAICS])
    with Image.open(folder / PANEL) as panel:
        assert panel.format == "PNG" and panel.is_animated
        assert panel.n_frames == labels.shape[2] and panel.info["loop"] == 0
        durations = [f.info["duration"] for f in ImageSequence.Iterator(panel)]
    assert durations == [200] * labels.shape[2]
    for name in MOSAICS:  # the .png stills are single images, never an animation
        with Image.open(folder / name) as still:
            assert not getattr(still, "is_animated", False)
    assert not (run / "render" / "sub-B2").exists()


def test_animation_gif_writes_the_same_pixels_as_gif_files(run, labels):
    result = runner.invoke(app, ["render", str(run), "--subject", "A1", "--gifs", "all",
                                 "--animation", "gif", "-q"])
    assert result.exit_code == 0, result.stderr
    folder = run / "render" / "sub-A1"
    gifs = [n.replace(".png", ".gif") for n in (PANEL, DIFF_GIF, *CT_GIFS)]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*gifs, *MOSAICS])
    for name in gifs:
        with Image.open(folder / name) as gif:
            assert gif.format == "GIF" and gif.n_frames == labels.shape[2]
    pngs = run_render(RenderConfig(run, subjects=("A1",), gifs="all", quiet=True))
    for name in gifs:  # the default run wrote the APNG twins: every pixel the same
        np.testing.assert_array_equal(_frames(folder / name),
                                      _frames(pngs / "sub-A1" / name.replace(".gif", ".png")))


def test_gifs_all_adds_per_volume_and_difference_animations_the_panel_shows(run, labels):
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
    ("animation", "webp", "--animation: got 'webp'; choose one of png, gif"),
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
    (["--animation", "apng"], "'--animation': got 'apng'; choose one of png, gif"),
])
def test_bad_render_options_write_nothing(run, args, message):
    result = runner.invoke(app, ["render", str(run), *args])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (run / "render").exists()


def test_render_help_says_what_each_set_and_format_writes():
    result = runner.invoke(app, ["render", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert "panels: a reference | counterfactual | difference animation" in text
    assert "all: the panels and mosaics, plus an animation per volume" in text
    assert "png: animated PNG (APNG, .png)" in text and "gif: GIF (.gif), for slide" in text


def test_render_of_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["render", str(tmp_path)])
    assert result.exit_code == 2 and "not a cfx run (no manifest.json)" in result.stderr
