"""cfx stats --voxelwise maps as a viewer opens them: finite ranges, intents, sidecars."""

import json

import matplotlib
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.sweep.generators import resolve_generator

matplotlib.use("Agg")
runner = CliRunner()
STEM = "attr-smoking_contrast-yes-vs-no_stat-"
INTENTS = {"mean": "estimate", "t": "t test", "exact": "none", "pfwe": "p value",
           "logpfwe": "none", "qfdr": "p value"}


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory):
    """An exact phantom-oracle smoking sweep of 8 subjects (20³ voxels of 12 mm): +20 HU in
    every lung voxel of every subject, so t is infinite there."""
    root = tmp_path_factory.mktemp("maps")
    cohort = load_cohort(write_phantom(root / "cohort", PhantomSettings(
        subjects=8, shape=(20, 20, 20), spacing=(12.0,) * 3), quiet=True))
    out = root / "run"
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0,), out, quiet=True), cohort,
              resolve_generator("phantom-oracle", cohort))
    return out


@pytest.fixture(scope="module")
def exhaustive(oracle_run):
    out = oracle_run.parent / "exhaustive"
    result = runner.invoke(app, ["stats", str(oracle_run), "--voxelwise", "--permutations",
                                 "500", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out, result


def test_exhaustive_flips_are_reported_in_the_terminal_and_summary(exhaustive):
    out, result = exhaustive
    assert ("voxel maps yes-vs-no: all 128 distinct sign flips of 8 subjects enumerated "
            "(exhaustive, exact p-values)") in result.stderr
    entry = json.loads((out / "summary.json").read_text())["voxelwise"]["yes-vs-no"]
    assert entry["exhaustive"] is True
    assert entry["permutations"] == 128 and entry["permutations_requested"] == 500
    assert entry["tail"] == "none" and entry["voxels_exact"] > 100


def test_every_map_has_a_finite_range_its_intent_and_a_sidecar(exhaustive):
    out, _ = exhaustive
    entry = json.loads((out / "summary.json").read_text())["voxelwise"]["yes-vs-no"]
    written = sorted(p.name for p in out.glob(f"{STEM}*.nii.gz"))
    assert written == sorted(f"{STEM}{stat}.nii.gz" for stat in INTENTS)
    assert sorted(entry["maps"]) == sorted(INTENTS)
    for stat, intent in INTENTS.items():
        image = nib.load(out / f"{STEM}{stat}.nii.gz")
        values = image.get_fdata(dtype=np.float32)
        finite = values[np.isfinite(values)]
        assert not np.isinf(values).any(), stat
        assert np.abs(finite).max() < 1e4, stat  # no float32-max stand-in for infinity
        code, params, name = image.header.get_intent()
        assert code == intent, stat
        sidecar = json.loads((out / f"{STEM}{stat}.json").read_text())
        assert sidecar["stat"] == stat and sidecar["nifti_intent"] == intent
        assert sidecar["exhaustive"] is True and sidecar["permutations"] == 128
        if stat == "t":
            assert params == (7.0,) and sidecar["degrees_of_freedom"] == 7
        if stat.startswith("p") or stat == "qfdr":
            assert finite.min() >= 0 and finite.max() <= 1, stat
    pfwe = json.loads((out / f"{STEM}pfwe.json").read_text())
    assert pfwe["correction"].startswith("FWE, max-T") and pfwe["tail"] == "none"


def test_infinite_t_is_nan_beside_an_exact_map_and_most_significant(exhaustive):
    out, _ = exhaustive
    t = nib.load(out / f"{STEM}t.nii.gz").get_fdata()
    exact = nib.load(out / f"{STEM}exact.nii.gz").get_fdata()
    mean = nib.load(out / f"{STEM}mean.nii.gz").get_fdata()
    p = nib.load(out / f"{STEM}pfwe.nii.gz").get_fdata()
    logp = nib.load(out / f"{STEM}logpfwe.nii.gz").get_fdata()
    assert np.array_equal(np.isnan(t), exact != 0)
    np.testing.assert_array_equal(exact[exact != 0], np.sign(mean[exact != 0]))
    # an exact voxel ties only with the data's own flip: p = 1 / 128, -log10 p = log10 128
    np.testing.assert_allclose(p[exact != 0], 1 / 128, rtol=1e-6)
    np.testing.assert_allclose(logp, -np.log10(p), rtol=1e-5, atol=1e-6)
    assert logp.max() == pytest.approx(np.log10(128), rel=1e-6)


def test_nilearn_plots_the_log_p_and_t_maps(exhaustive):
    plotting = pytest.importorskip("nilearn.plotting")
    out, _ = exhaustive
    for stat in ("logpfwe", "t"):
        display = plotting.plot_stat_map(str(out / f"{STEM}{stat}.nii.gz"), threshold=1.3)
        display.close()


def test_tail_option_is_recorded_and_bad_names_rejected(oracle_run):
    out = oracle_run.parent / "tail"
    result = runner.invoke(app, ["stats", str(oracle_run), "--voxelwise", "--permutations",
                                 "120", "--tail", "gpd", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    entry = json.loads((out / "summary.json").read_text())["voxelwise"]["yes-vs-no"]
    assert entry["exhaustive"] is False and entry["permutations"] == 120
    assert entry["tail"] == "gpd" and isinstance(entry["tail_fit_accepted"], bool)
    sidecar = json.loads((out / f"{STEM}pfwe.json").read_text())
    assert sidecar["tail"] == "gpd" and sidecar["tail_fit_accepted"] == entry["tail_fit_accepted"]
    bad = runner.invoke(app, ["stats", str(oracle_run), "--voxelwise", "--tail", "pareto",
                              "--out", str(oracle_run.parent / "bad")])
    assert bad.exit_code == 2 and "--tail" in bad.stderr
    assert not (oracle_run.parent / "bad").exists()
