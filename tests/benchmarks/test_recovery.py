"""``benchmarks/recovery.py``: one table per learned checkpoint (tiny GAN and tiny diffusion, from
noise and from each held-out subject's CT), the planted figures are the oracle's, and a GAN given
sampling options fails as the sweep does."""

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.phantom import PhantomOracle, PhantomSettings, make_truth
from cfx.counterfactual.sweep.generators import SamplingOptions
from cfx.counterfactual.sweep.learned import learned_generator
from cfx.counterfactual.volume import read_volume
from tests.models.conftest import save_tiny_bert

_TRAIN = ("--cohort", "phantom", "--patch", "16", "--phantom-shape", "16", "--batch-size", "2",
          "--device", "cpu", "-q")
_SIDE, _SPACING = 16, (20.0, 20.0, 20.0)  # the held-out grid: 16³ over 320 mm
runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny GAN and a tiny diffusion model (a few steps at a high rate, so the record already
    moves the output), both reading every phantom field."""
    root = tmp_path_factory.mktemp("recovery")
    bert = str(save_tiny_bert(root / "bert"))
    for arch, extra in (("gan", ("--channels", "4,8", "--steps", "2")),
                        ("diffusion", ("--channels", "8,8", "--steps", "6", "--lr", "0.01",
                                       "--sampling-steps", "3", "--level-rows", "64"))):
        result = runner.invoke(app, ["train", "--arch", arch, "--out", str(root / arch),
                                     "--text-encoder", bert, *_TRAIN, *extra])
        assert result.exit_code == 0, result.output
    return root


def _planted(subjects):
    """Per contrast, the oracle's lung-mean difference averaged over the held-out subjects,
    from an oracle built here (not the benchmark's)."""
    oracle = PhantomOracle.from_truth(make_truth(PhantomSettings(
        subjects=subjects, shape=(_SIDE,) * 3, spacing=_SPACING, seed=90_001)))  # EVAL_SEED
    planted = {}
    for attribute, value, reference in (("smoking", "yes", "no"), ("sex", "male", "female"),
                                        ("age", 80, 40), ("mortality", "dead", "alive"),
                                        ("diagnosis", "IPF", "CTD-ILD")):
        planted[attribute] = float(np.mean([
            oracle.expected_difference(s, attribute, value, reference)[oracle.lung_mask(s)]
            .astype(np.float64).mean() for s in oracle.subject_ids]))
    return planted


def _rows(printed):
    """The table's rows: contrast -> its cells."""
    rows = {}
    for line in printed.splitlines():
        if line.startswith("| ") and not line.startswith("| contrast"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("arch, extra", [
    ("gan", []),
    ("diffusion", []),
    ("diffusion", ["--from-ct", "--strength", "0.5", "--steps", "4"]),
    ("diffusion", ["--from-ct", "--strength", "0.5", "--steps", "4", "--keep-outside", "lung"]),
], ids=["gan", "diffusion-from-noise", "diffusion-from-ct", "diffusion-keep-outside"])
def test_one_row_per_contrast_with_finite_figures(recovery, root, capsys, arch, extra):
    assert recovery.main([str(root / arch), "--subjects", "2", *extra]) == 0
    printed = capsys.readouterr().out
    rows = _rows(printed)
    assert list(rows) == [f"{a} {v} − {r}" for a, v, r in recovery.CONTRASTS]
    planted = _planted(2)
    for (attribute, *_), cells in zip(recovery.CONTRASTS, rows.values(), strict=True):
        assert float(cells[0]) == pytest.approx(planted[attribute], abs=0.05)
        mean, sd = (float(x) for x in cells[1].split("±"))
        assert math.isfinite(mean) and math.isfinite(sd)
        assert all(math.isfinite(float(c)) for c in cells[3:6])  # off-lung, body, air
        if attribute == "sex":  # nothing planted: no ratio, and r is undefined
            assert cells[2] == "—" and cells[6] == "—"
        else:
            assert math.isfinite(float(cells[2])) and math.isfinite(float(cells[6]))
    # the options used, the grid of the training phantoms and the time per volume
    assert "16x16x16 voxels of 20 mm" in printed and "--shape 16" in printed
    assert "20 volumes in" in printed and " s per volume" in printed
    if arch == "gan":
        assert "Sampling: a GAN (`cond_gan3d`)" in printed
    elif extra:
        assert ("4 DDIM steps (eta 0), guidance 1, from each subject's CT noised to strength "
                "0.5") in printed
        held = "--keep-outside" in extra
        assert ("every voxel outside the lung held to the CT" in printed) is held
        assert ("--keep-outside lung" in printed) is held
        if held:  # nothing changes off the lungs
            assert all(float(c) == 0.0 for cells in rows.values() for c in cells[3:6])
    else:
        assert "3 DDIM steps (eta 0), guidance 1, from noise" in printed


def test_planted_is_the_oracles_in_both_modes(recovery, root, tmp_path):
    """From noise and from the written CTs, the planted column is the oracle's expected
    lung-mean difference; each written CT is the oracle's render of its subject."""
    shape, spacing = recovery.phantom_grid(_SIDE)
    assert shape == (16, 16, 16) and spacing == _SPACING
    oracle, cts = recovery.write_held_out(tmp_path / "held-out", 2, shape, spacing)
    sid = oracle.subject_ids[1]
    ct = read_volume(cts[sid]).data
    fresh = recovery.held_out(2, shape, spacing)
    assert np.array_equal(ct, np.rint(fresh.render(sid, {}, fresh.noise_seed(sid))))

    planted = _planted(2)
    assert planted["smoking"] == pytest.approx(20.0) and planted["sex"] == 0.0
    for from_ct in (False, True):
        model = learned_generator(root / "diffusion", SamplingOptions(from_ct=from_ct))
        rows = recovery.evaluate(model, oracle if from_ct else fresh, recovery.CONTRASTS,
                                 cts if from_ct else None)
        assert [r.attribute for r in rows] == list(planted)
        for r in rows:
            assert r.planted == pytest.approx(planted[r.attribute], rel=1e-9, abs=1e-12)
            assert r.volumes == 4 and r.seconds > 0
            assert all(math.isfinite(x) for x in (r.recovered, r.recovered_sd, r.off_lung))


def test_off_lung_change_is_split_into_the_body_and_the_air_outside_it(recovery):
    """A stand-in generator whose two values differ by 2 HU in the body (off the lungs), 5 HU
    in the air outside it and nothing in the lungs: the columns read those back, the body
    taken from the subject's true CT by hand (threshold -500 HU, air joined to a face)."""
    from scipy import ndimage

    oracle = recovery.held_out(2, (_SIDE,) * 3, _SPACING)

    class Stub:
        def generate(self, subject, mask, attribute, requests, seed):
            ct = oracle.render(subject.id)
            air = ndimage.label((ct < -500) & (mask.data == 0))[0]
            faces = np.unique(np.concatenate([air[0], air[-1]], axis=None))
            outside = np.isin(air, faces[faces > 0])  # joined to the x faces, enough here
            moved = np.where(outside, 5.0, np.where(oracle.lung_mask(subject.id), 0.0, 2.0))
            return moved, np.zeros_like(moved)

    rows = recovery.evaluate(Stub(), oracle, (("smoking", "yes", "no"),))
    assert rows[0].recovered == 0.0
    assert rows[0].body == pytest.approx(2.0) and rows[0].air == pytest.approx(5.0)
    assert 2.0 < rows[0].off_lung < 5.0


def test_body_from_ct_takes_the_body_from_each_held_out_ct(recovery, root, capsys, monkeypatch):
    """From noise, a model reading the body (the GAN here) draws it around the lungs; with
    --body-from-ct it reads it off each subject's CT and never draws one."""
    import cfx.counterfactual.sweep.learned as learned

    drawn = []
    synthetic = learned.synthetic_body
    monkeypatch.setattr(learned, "synthetic_body",
                        lambda *a, **k: drawn.append(1) or synthetic(*a, **k))
    for flag, text in ((), "the body label drawn around the lungs (no CT)"), (
            ("--body-from-ct",), "the body label from each subject's CT"):
        drawn.clear()
        assert recovery.main([str(root / "gan"), "--subjects", "1", "--contrasts", "smoking",
                              *flag]) == 0
        printed = capsys.readouterr().out
        assert text in printed and ("--body-from-ct" in printed) is bool(flag)
        assert bool(drawn) is not bool(flag)


def test_a_gan_given_sampling_options_fails_as_the_sweep_does(recovery, root, tmp_path, capsys):
    assert recovery.main([str(root / "gan"), "--guidance", "2", "--from-ct"]) == 2
    line = capsys.readouterr().err.strip()
    assert line == ("--guidance, --from-ct: only diffusion models take these options; model gan "
                    "is a GAN (cond_gan3d)")
    cohort = tmp_path / "cohort"
    recovery.write_held_out(cohort, 1, (_SIDE,) * 3, _SPACING)
    swept = runner.invoke(app, ["sweep", "--cohort", str(cohort), "--attribute", "smoking",
                                "--values", "no,yes", "--model", str(root / "gan"), "--guidance",
                                "2", "--from-ct", "--out", str(tmp_path / "run")])
    assert swept.exit_code == 2 and swept.stderr.strip() == f"cfx: error: {line}"


def test_update_card_keeps_one_subsection_per_mode(recovery, tmp_path):
    card = tmp_path / "README.md"
    card.write_text("# m\n\nintro\n\n## Recovery of planted effects\nNot evaluated yet.\n")
    recovery._update_card(tmp_path, "noise table", "### From noise")
    recovery._update_card(tmp_path, "ct table", "### From each subject's CT")
    recovery._update_card(tmp_path, "noise table 2", "### From noise")
    assert card.read_text() == ("# m\n\nintro\n\n## Recovery of planted effects\n"
                                "### From noise\nnoise table 2\n\n"
                                "### From each subject's CT\nct table\n")
    recovery._update_card(tmp_path, "gan table")  # a GAN: the whole section
    assert card.read_text() == "# m\n\nintro\n\n## Recovery of planted effects\ngan table\n"


def test_default_grid_is_the_training_phantoms(recovery, root):
    model = learned_generator(root / "gan")
    assert recovery.default_shape(model.config) == (16, 16, 16)
    assert recovery.default_shape({"training_cohort": {"kind": "cohort"}}) == (64, 64, 64)
    assert isinstance(recovery.held_out(1, *recovery.phantom_grid(16)), PhantomOracle)
