import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from counterfactual.cli import app
from counterfactual.sweep.engine import SweepConfig, run_sweep

runner = CliRunner()


@pytest.fixture
def run(tmp_path, cohort, fake):
    """A sweep whose smoking effect is +20 HU in the lungs plus subject-specific voxel noise."""
    plain = fake.generate

    def generate(subject, mask, attribute, requests, seed):
        rng = np.random.default_rng([ord(c) for c in subject.id] + [seed])
        jitter = rng.normal(0, 2, mask.shape).astype(np.float32) * np.isin(mask.data, (1, 2))
        volumes = plain(subject, mask, attribute, requests, seed)
        return [v + jitter * (r.value == "yes") for v, r in zip(volumes, requests, strict=True)]

    fake.generate = generate
    out = tmp_path / "run"
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0, 1), out, quiet=True), cohort, fake)
    return out


def test_stats_reports_the_planted_shift_beside_the_noise_floor(run, labels):
    result = runner.invoke(app, ["stats", str(run), "--voxelwise", "--permutations", "20"])
    assert result.exit_code == 0, result.stderr
    assert "noise floor" in result.stdout and "lung" in result.stdout
    effects = pd.read_csv(run / "stats" / "effects.csv")
    lung = effects[(effects.region == "lung") & (effects.metric == "mean")].iloc[0]
    assert lung.value == "yes" and lung.reference == "no"
    assert lung.estimate == pytest.approx(20.0, abs=0.5)
    assert lung.ci_low < 20.0 < lung.ci_high or abs(lung.estimate - 20.0) < 0.1
    assert lung.noise_ci_low < 0 < lung.noise_ci_high  # seed vs seed: chance alone
    regions = pd.read_csv(run / "stats" / "regions.csv")
    assert set(regions.region) == {"lung", "lung-upper", "lung-middle", "lung-lower"}
    assert len(regions[(regions.region == "lung") & (regions.metric == "mean")]) == 3 * 2 * 2
    mean_map = nib.load(run / "stats" / "attr-smoking_contrast-yes-vs-no_stat-mean.nii.gz")
    in_lung = np.isin(labels, (1, 2))
    assert abs(mean_map.get_fdata()[in_lung].mean() - 20.0) < 0.5
    np.testing.assert_allclose(mean_map.get_fdata()[~in_lung], 0.0, atol=1e-3)
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["voxelwise"]["yes-vs-no"]["voxels_tested"] == int(in_lung.sum())


def test_rerun_replaces_the_stats_folder(run):
    assert runner.invoke(app, ["stats", str(run), "-q"]).exit_code == 0
    assert runner.invoke(app, ["stats", str(run), "-q", "--no-zones"]).exit_code == 0
    regions = pd.read_csv(run / "stats" / "regions.csv")
    assert set(regions.region) == {"lung"}


@pytest.mark.parametrize(("args", "message"), [
    (["--region", "liver"], "region 'liver' is not defined"),
    (["--permutations", "0"], "--permutations: must be >= 1, got 0"),
])
def test_bad_stats_options_write_nothing(run, args, message):
    result = runner.invoke(app, ["stats", str(run), *args])
    assert result.exit_code == 2 and message in result.stderr
    assert not (run / "stats").exists()


def test_incomplete_run_is_refused(run):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.pop("complete")
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["stats", str(run)])
    assert result.exit_code == 2 and "the sweep is incomplete" in result.stderr
