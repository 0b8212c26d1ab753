import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from cfx.analysis.permutation import one_sample_permutation
from cfx.analysis.regions import zone_masks
from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.phantom import NO_EFFECTS, PhantomOracle, PhantomSettings, write_phantom
from cfx.counterfactual.sweep.engine import SweepConfig, noise_seed, run_sweep
from cfx.counterfactual.sweep.generators import resolve_generator
from cfx.counterfactual.volume import write_volume

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
    (["--tail", "gpd"], "--tail: the tail fit is of the voxel maps' permutation maxima"),
    (["--specificity-ratio", "1"], "--specificity-ratio: must be a fraction in (0, 1), got 1"),
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


def _sweep(tmp_path, cohort, generator, attribute="smoking", values=("no", "yes"), seeds=(0,)):
    out = tmp_path / f"run-{attribute}"
    run_sweep(SweepConfig(attribute, values, seeds, out, quiet=True), cohort, generator)
    return out


def test_one_subject_is_a_one_line_error(tmp_path, labels, affine, fake):
    root = tmp_path / "one"
    write_volume(root / "masks" / "A1.nii.gz", labels, affine)
    (root / "clinical.csv").write_text("subject,smoking\nA1,yes\n")
    run = _sweep(tmp_path, load_cohort(root), fake)
    result = runner.invoke(app, ["stats", str(run)])
    assert result.exit_code == 2
    assert "got 1 subject(s); paired statistics need at least 2" in result.stderr
    assert not (run / "stats").exists()


def test_zero_variance_voxel_maps_are_a_one_line_error(tmp_path, cohort, fake):
    # the fake's difference is +20 HU in every lung voxel of every subject: nothing varies
    run = _sweep(tmp_path, cohort, fake)
    result = runner.invoke(app, ["stats", str(run), "--voxelwise", "--permutations", "10"])
    assert result.exit_code == 2
    assert "--voxelwise: data: all" in result.stderr and "constant across subjects" in result.stderr
    assert not (run / "stats").exists()


def test_empty_region_is_a_one_line_error(tmp_path, labels, affine, fake):
    root = tmp_path / "no-airway"
    no_airway = np.where(labels == 3, 0, labels).astype(np.int16)
    for sid in ("A1", "B2"):
        write_volume(root / "masks" / f"{sid}.nii.gz", no_airway, affine)
    (root / "clinical.csv").write_text("subject,smoking\nA1,yes\nB2,no\n")
    run = _sweep(tmp_path, load_cohort(root), fake)
    result = runner.invoke(app, ["stats", str(run), "--region", "airway"])
    assert result.exit_code == 2 and "region 'airway' is empty" in result.stderr
    assert not (run / "stats").exists()


def test_tfce_needs_voxelwise(run):
    result = runner.invoke(app, ["stats", str(run), "--tfce"])
    assert result.exit_code == 2 and "--tfce: TFCE maps are voxelwise; add --voxelwise" in \
        result.stderr


def test_statsmodels_warnings_do_not_reach_the_terminal(run):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping the mixed model would fail the run
        result = runner.invoke(app, ["stats", str(run), "-q"])
    assert result.exit_code == 0, result.stderr
    assert "Warning" not in result.stderr


@pytest.fixture(scope="module")
def oracle_cohort(tmp_path_factory):
    """8 phantom subjects (20³ voxels of 12 mm), default effects: smoking +20 HU over the lung,
    mortality (dead) +30 HU over the lower third of each lung."""
    return write_phantom(tmp_path_factory.mktemp("oracle") / "cohort",
                         PhantomSettings(subjects=8, shape=(20, 20, 20), spacing=(12.0,) * 3),
                         quiet=True)


def _fwe_map(run, attribute, contrast):
    stats_dir = run / "stats"
    p = nib.load(stats_dir / f"attr-{attribute}_contrast-{contrast}_stat-pfwe.nii.gz")
    return p.get_fdata()


def _planted(oracle, attribute, value, reference):
    maps = [oracle.expected_difference(s, attribute, value, reference) != 0
            for s in oracle.subject_ids]
    return np.any(maps, axis=0), np.all(maps, axis=0)


def test_oracle_smoking_sweep_finds_the_planted_lungs_and_nothing_else(oracle_cohort, tmp_path):
    cohort = load_cohort(oracle_cohort)
    run = _sweep(tmp_path, cohort, resolve_generator("phantom-oracle", cohort))
    result = runner.invoke(app, ["stats", str(run), "--voxelwise", "--permutations", "500", "-q"])
    assert result.exit_code == 0, result.stderr
    effects = pd.read_csv(run / "stats" / "effects.csv")
    lung = effects[(effects.region == "lung") & (effects.metric == "mean")].iloc[0]
    assert lung.estimate == pytest.approx(20.0, abs=1e-3)
    significant = _fwe_map(run, "smoking", "yes-vs-no") < 0.05
    anywhere, everywhere = _planted(PhantomOracle.from_cohort(oracle_cohort), "smoking", "yes",
                                    "no")
    assert everywhere.sum() > 100
    assert np.all(significant[everywhere])  # the region planted in every subject is found
    assert not np.any(significant & ~anywhere)  # and nothing where nothing was planted


def test_oracle_mortality_sweep_is_significant_low_and_not_high(oracle_cohort, tmp_path):
    cohort = load_cohort(oracle_cohort)
    run = _sweep(tmp_path, cohort, resolve_generator("phantom-oracle", cohort), "mortality",
                 ("alive", "dead"))
    result = runner.invoke(app, ["stats", str(run), "--voxelwise", "--permutations", "500", "-q"])
    assert result.exit_code == 0, result.stderr
    effects = pd.read_csv(run / "stats" / "effects.csv").set_index(["region", "metric"])
    assert effects.loc[("lung-upper", "mean"), "estimate"] == pytest.approx(0.0, abs=1e-3)
    assert effects.loc[("lung-lower", "mean"), "estimate"] > 20.0
    oracle = PhantomOracle.from_cohort(oracle_cohort)
    significant = _fwe_map(run, "mortality", "dead-vs-alive") < 0.05
    lungs = np.any([oracle.lung_mask(s) for s in oracle.subject_ids], axis=0)
    thirds = zone_masks(lungs, oracle.affine())
    assert significant[thirds["lower"]].sum() > 50
    assert not significant[thirds["upper"]].any()
    anywhere, _ = _planted(oracle, "mortality", "dead", "alive")
    assert not np.any(significant & ~anywhere)


def _null_datasets(oracle, n_datasets):
    """Seed-vs-seed differences of the oracle at equal attributes, fresh seeds per dataset, shape
    (n_datasets, n_subjects, X, Y, Z); the subjects' noise is independent through the sweep's
    per-subject noise seeds. Subject by subject, so each anatomy is built once."""
    ids = oracle.subject_ids
    data = np.empty((n_datasets, len(ids), *oracle.shape), np.float32)
    for j, s in enumerate(ids):
        for k in range(n_datasets):
            data[k, j] = (oracle.render(s, {}, noise_seed(s, 2 * k))
                          - oracle.render(s, {}, noise_seed(s, 2 * k + 1)))
    return data


def _fwe_hits(oracle, n_datasets, tfce):
    lungs = np.any([oracle.lung_mask(s) for s in oracle.subject_ids], axis=0)
    smallest = []
    for k, data in enumerate(_null_datasets(oracle, n_datasets)):
        result = one_sample_permutation(data, 99, tfce=tfce, mask=lungs, random_state=k)
        smallest.append(np.nanmin(result.p_tfce if tfce else result.p_fwe))
    return np.asarray(smallest)


@pytest.fixture(scope="module")
def null_oracle(tmp_path_factory):
    folder = write_phantom(tmp_path_factory.mktemp("null") / "cohort",
                           PhantomSettings(subjects=8, shape=(16, 16, 16), spacing=(15.0,) * 3,
                                           effects=NO_EFFECTS), quiet=True)
    return PhantomOracle.from_cohort(folder)


def test_null_phantom_fwe_false_positive_rate_is_nominal(null_oracle):
    # 100 '--effects none' datasets of spatially smooth phantom noise: P(any voxel p_fwe <= 0.05)
    smallest = _fwe_hits(null_oracle, 100, tfce=False)
    hits = int(np.sum(smallest <= 0.05))
    low, high = stats.binomtest(hits, smallest.size).proportion_ci(0.99)
    assert low <= 0.05 <= high, hits
    # the smallest FWE p-value of a dataset is uniform under the null (up to its 1/100 grid)
    assert stats.kstest(smallest, "uniform").pvalue > 0.01


@pytest.mark.slow
def test_null_phantom_tfce_false_positive_rate_is_nominal(null_oracle):
    smallest = _fwe_hits(null_oracle, 100, tfce=True)
    hits = int(np.sum(smallest <= 0.05))
    low, high = stats.binomtest(hits, smallest.size).proportion_ci(0.99)
    assert low <= 0.05 <= high, hits


def test_covariates_need_real_cts_in_the_runs_cohort(run):
    # the fixture cohort has masks only: nothing to adjust
    result = runner.invoke(app, ["stats", str(run), "--covariates", "age"])
    assert result.exit_code == 2
    assert "--covariates: they adjust the observational comparison" in result.stderr
    assert not (run / "stats").exists()
