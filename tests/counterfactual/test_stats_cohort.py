"""``cfx stats --cohort``: observational tests on a phantom's real CTs, confounding by age, and the
concordance with the counterfactual (oracle) effect of a run.

The phantom makes smokers older (logit P(smoker) rises 0.08 per year) and here age lowers lung HU
by 2 HU per year while smoking adds exactly +20 HU over the whole lung. The naive smoker - non-
smoker difference is therefore biased downwards and adjusting for age removes the bias. The lung
15th percentile (pd15) is the clean read-out: a uniform shift moves it by exactly the shift, and
it is less sensitive than the mean to the vessels, whose share varies from subject to subject.
"""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.phantom.effects import parse_effects
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.sweep.generators import resolve_generator

runner = CliRunner()
EFFECTS = {"smoking": {"reference": "no", "values": {"yes": {"shift_hu": 20, "pattern": "lung"}}},
           "age": {"centre": 60, "slope_hu_per_unit": -2.0, "pattern": "lung"}}


@pytest.fixture(scope="module")
def confounded(tmp_path_factory):
    """60 phantom subjects (24³ voxels of 12 mm) with the effects above."""
    settings = PhantomSettings(subjects=60, shape=(24, 24, 24), spacing=(12.0, 12.0, 12.0),
                               seed=0, effects=parse_effects(EFFECTS, "test effects"))
    return write_phantom(tmp_path_factory.mktemp("stats") / "cohort", settings, quiet=True)


@pytest.fixture(scope="module")
def oracle_run(confounded, tmp_path_factory):
    """The oracle's smoking sweep (no, yes) of the confounded cohort, one seed."""
    cohort = load_cohort(confounded)
    out = tmp_path_factory.mktemp("runs") / "smoking"
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0,), out, quiet=True), cohort,
              resolve_generator("phantom-oracle", cohort))
    return out


def _row(frame, region="lung", metric="pd15"):
    rows = frame[(frame.region == region) & (frame.metric == metric)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_age_adjustment_removes_the_confounding_of_smoking(confounded, tmp_path):
    out = tmp_path / "obs"
    result = runner.invoke(app, ["stats", "--cohort", str(confounded), "--attribute", "smoking",
                                 "--covariates", "age", "--out", str(out), "--no-zones"])
    assert result.exit_code == 0, result.stderr
    observed = pd.read_csv(out / "observational.csv")
    pd15 = _row(observed)
    assert pd15.level == "yes" and pd15.reference == "no" and pd15.covariates == "age"
    # naive: biased downwards by the older smokers; adjusted: back near the planted +20 HU
    assert pd15.naive_estimate < pd15.estimate
    assert abs(pd15.estimate - 20.0) < abs(pd15.naive_estimate - 20.0)
    assert pd15.ci_low < 20.0 < pd15.ci_high
    assert pd15.naive_ci_high < 20.0  # the naive CI misses the truth
    mean = _row(observed, metric="mean")
    assert mean.naive_estimate < mean.estimate  # same direction on the noisier mean


def test_observational_estimates_equal_a_direct_statsmodels_fit(confounded, tmp_path):
    out = tmp_path / "obs"
    assert runner.invoke(app, ["stats", "--cohort", str(confounded), "-a", "smoking",
                               "--covariates", "age", "--out", str(out), "-q"]).exit_code == 0
    regions = pd.read_csv(out / "cohort_regions.csv")
    clinical = pd.read_csv(confounded / "clinical.csv")
    lung = regions[(regions.region == "lung") & (regions.metric == "pd15")]
    frame = lung.merge(clinical[["subject", "age"]], on="subject").dropna(subset=["age"])
    fit = smf.ols("estimate ~ C(smoking, Treatment('no')) + age", frame).fit()
    name = "C(smoking, Treatment('no'))[T.yes]"
    got = _row(pd.read_csv(out / "observational.csv"))
    assert got.estimate == pytest.approx(fit.params[name], rel=1e-9)
    assert (got.ci_low, got.ci_high) == pytest.approx(tuple(fit.conf_int().loc[name]), rel=1e-9)
    assert got.n == len(frame)
    # subjects missing smoking are left out of the region table and counted
    summary = json.loads((out / "summary.json").read_text())
    missing = int(clinical["smoking"].isna().sum())
    assert missing > 0 and summary["subjects"]["without_attribute"] == missing
    assert summary["subjects"]["used"] == len(clinical) - missing == lung.subject.nunique()


def test_concordance_of_the_oracle_effect_with_the_adjusted_observation(oracle_run):
    result = runner.invoke(app, ["stats", str(oracle_run), "--covariates", "age", "--no-zones"])
    assert result.exit_code == 0, result.stderr
    out = oracle_run / "stats"
    agreement = pd.read_csv(out / "concordance.csv")
    pd15 = _row(agreement)
    assert pd15.value == "yes" and pd15.reference == "no"
    assert pd15.cf_estimate == pytest.approx(20.0, abs=1e-3)  # the oracle's exact shift
    observed = _row(pd.read_csv(out / "observational.csv"))
    assert pd15.obs_estimate == pytest.approx(observed.estimate)
    assert pd15.naive_estimate == pytest.approx(observed.naive_estimate)
    assert pd15.cis_overlap and abs(pd15.difference) < abs(pd15.cf_estimate - pd15.naive_estimate)
    # the table: counterfactual beside observed, every line within 80 columns
    assert "counterfactual" in result.stdout and "+20.0 [+20.0, +20.0]" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "the run has one seed; sweep with --seeds 0,1,..." in result.stdout


def test_reference_can_be_switched(oracle_run, tmp_path):
    out = tmp_path / "switched"
    result = runner.invoke(app, ["stats", str(oracle_run), "--reference", "yes", "--no-zones",
                                 "--voxelwise", "--permutations", "50", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    effects = pd.read_csv(out / "effects.csv")
    assert _row(effects).value == "no" and _row(effects).estimate == pytest.approx(-20.0, abs=1e-3)
    mean = out / "attr-smoking_contrast-no-vs-yes_stat-mean.nii.gz"
    import nibabel as nib

    data = nib.load(mean).get_fdata()
    assert data.min() == pytest.approx(-20.0, abs=1e-3) and data.max() <= 1e-3


@pytest.mark.parametrize(("args", "message"), [
    (["--attribute", "smoking", "--covariates", "height"],
     "--covariates: 'height' not a column of"),
    (["--covariates", "age"], "--attribute: name the attribute to compare in --cohort"),
    (["--attribute", "smoking", "--reference", "sometimes"],
     "--reference: 'sometimes' is not a level of smoking in the cohort; levels: no, yes"),
    (["--attribute", "smoking", "--covariates", "smoking"],
     "--covariates: 'smoking' is the compared attribute"),
    (["--attribute", "smoking", "--voxelwise"], "--voxelwise: voxel maps compare the volumes"),
    (["--attribute", "smoking", "--covariates", "age,,sex"],
     "--covariates: 'age,,sex' must be distinct comma-separated column names"),
])
def test_bad_cohort_options_are_one_line_errors(confounded, args, message):
    result = runner.invoke(app, ["stats", "--cohort", str(confounded), *args])
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (confounded / "stats").exists()


def test_cohort_without_cts_is_refused(confounded, tmp_path):
    masks_only = tmp_path / "masks-only"
    (masks_only / "masks").mkdir(parents=True)
    for mask in (confounded / "masks").iterdir():
        (masks_only / "masks" / mask.name).symlink_to(mask)
    (masks_only / "clinical.csv").write_text((confounded / "clinical.csv").read_text())
    result = runner.invoke(app, ["stats", "--cohort", str(masks_only), "-a", "smoking"])
    assert result.exit_code == 2
    assert "the cohort has no CTs" in result.stderr
    assert not (masks_only / "stats").exists()


def test_nothing_to_do_and_unsafe_out_are_refused(confounded, oracle_run, tmp_path):
    result = runner.invoke(app, ["stats"])
    assert result.exit_code == 2 and "give a RUN folder made by cfx sweep" in result.stderr
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["stats", str(oracle_run), "--out", str(precious)])
    assert result.exit_code == 2 and "is not a cfx stats folder" in result.stderr
    assert (precious / "notes.txt").read_text() == "keep me"
    result = runner.invoke(app, ["stats", str(oracle_run), "--attribute", "age"])
    assert result.exit_code == 2 and "--attribute: the run sweeps 'smoking'" in result.stderr
    result = runner.invoke(app, ["stats", str(oracle_run), "--reference", "maybe"])
    assert result.exit_code == 2 and "--reference: 'maybe' is not a value of" in result.stderr


def test_numeric_attribute_slope_is_scaled_to_the_run_contrast(confounded, tmp_path):
    cohort = load_cohort(confounded)
    out = tmp_path / "age"
    run_sweep(SweepConfig("age", (50, 70), (0,), out, quiet=True), cohort,
              resolve_generator("phantom-oracle", cohort))
    result = runner.invoke(app, ["stats", str(out), "--cohort", str(confounded), "--covariates",
                                 "smoking", "--no-zones", "-q"])
    assert result.exit_code == 0, result.stderr
    pd15 = _row(pd.read_csv(out / "stats" / "concordance.csv"))
    assert pd15.cf_estimate == pytest.approx(-40.0, abs=1e-3)  # -2 HU/yr over 20 years
    observed = _row(pd.read_csv(out / "stats" / "observational.csv"))
    assert np.isnan(observed.level) if not isinstance(observed.level, str) else False
    assert pd15.obs_estimate == pytest.approx(20.0 * observed.estimate)
    assert pd15.obs_ci_low == pytest.approx(20.0 * observed.ci_low)
    assert pd15.obs_ci_low < -40.0 < pd15.obs_ci_high
