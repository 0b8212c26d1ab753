"""cfx stats puts every effect beside its negative controls and a specificity verdict."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cfx.analysis.controls import BODY, OUTSIDE_BODY, control_labels
from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.phantom import PhantomSettings, write_phantom
from cfx.counterfactual.sweep.engine import SweepConfig, run_sweep
from cfx.counterfactual.sweep.generators import resolve_generator
from cfx.counterfactual.volume import read_labels, read_volume

runner = CliRunner()


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """6 phantom subjects (20³ voxels of 12 mm) with the default planted effects."""
    return write_phantom(tmp_path_factory.mktemp("controls") / "cohort",
                         PhantomSettings(subjects=6, shape=(20, 20, 20), spacing=(12.0,) * 3),
                         quiet=True)


class _Shifted:
    """The oracle with ``shift`` HU added to every voxel of every value but the reference."""

    def __init__(self, oracle, reference, shift):
        self.oracle, self.reference, self.shift = oracle, reference, shift
        self.name, self.content_hash = "shifted-oracle", "sha256:shifted"
        self.text_encoder = None

    def check(self, cohort, attribute):
        self.oracle.check(cohort, attribute)

    def generate(self, subject, mask, attribute, requests, seed):
        volumes = self.oracle.generate(subject, mask, attribute, requests, seed)
        return [v + (0.0 if r.value == self.reference else self.shift)
                for v, r in zip(volumes, requests, strict=True)]


def _stats(tmp_path, phantom, shift, name):
    cohort = load_cohort(phantom)
    generator = resolve_generator("phantom-oracle", cohort)
    if shift:
        generator = _Shifted(generator, "no", shift)
    out = tmp_path / name
    run_sweep(SweepConfig("smoking", ("no", "yes"), (0,), out, quiet=True), cohort, generator)
    result = runner.invoke(app, ["stats", str(out), "--no-zones"])
    assert result.exit_code == 0, result.stderr
    effects = pd.read_csv(out / "stats" / "effects.csv", keep_default_na=False)
    row = effects[(effects.region == "lung") & (effects.metric == "mean")].iloc[0]
    return out, row, result.stdout


def test_oracle_controls_are_exactly_zero_and_the_effect_specific(tmp_path, phantom):
    run, row, shown = _stats(tmp_path, phantom, 0.0, "oracle")
    assert row.estimate == pytest.approx(20.0, abs=1e-3)
    for control in ("body", "outside_body"):
        assert (row[f"{control}_estimate"], row[f"{control}_ci_low"],
                row[f"{control}_ci_high"]) == (0.0, 0.0, 0.0)
    assert row.verdict == "specific"
    assert row.adjusted_estimate == pytest.approx(row.estimate)
    assert "specific" in shown and "outside body" in shown
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["specificity_ratio"] == 0.25
    assert set(summary["control_regions"]) == {"outside-body", "body", "whole"}
    assert {r["verdict"] for r in summary["effects"] if r["metric"] == "mean"} == {"specific"}
    controls = pd.read_csv(run / "stats" / "controls.csv")
    assert set(controls.region) == {"outside-body", "body", "whole"}


def test_a_shift_of_the_whole_image_is_a_global_shift(tmp_path, phantom):
    run, row, shown = _stats(tmp_path, phantom, 10.0, "shifted")
    assert row.estimate == pytest.approx(30.0, abs=1e-3)
    assert row.body_estimate == pytest.approx(10.0, abs=1e-3)
    assert row.outside_body_estimate == pytest.approx(10.0, abs=1e-3)
    assert row.adjusted_estimate == pytest.approx(20.0, abs=1e-3)  # the planted lung effect
    # 10 of 30 HU is neither below 25 % nor at least 75 %: the controls move, but less
    assert row.verdict == "leaky"
    assert "leaky" in shown


def test_a_pure_global_shift_is_named_so(tmp_path, phantom):
    """A generator whose only edit is +10 HU everywhere: the lungs move like everything else."""
    cohort = load_cohort(phantom)
    oracle = resolve_generator("phantom-oracle", cohort)

    out = tmp_path / "flat"
    run_sweep(SweepConfig("sex", ("female", "male"), (0,), out, quiet=True), cohort,
              _Shifted(oracle, "female", 10.0))
    result = runner.invoke(app, ["stats", str(out), "--no-zones"])
    assert result.exit_code == 0, result.stderr
    effects = pd.read_csv(out / "stats" / "effects.csv", keep_default_na=False)
    row = effects[(effects.region == "lung") & (effects.metric == "mean")].iloc[0]
    assert row.estimate == pytest.approx(10.0, abs=1e-3)  # sex has no planted effect
    assert row.verdict == "global shift"
    assert row.adjusted_estimate == pytest.approx(0.0, abs=1e-3)


def test_control_regions_come_from_the_reference_volume(tmp_path, phantom):
    """The regions measured are those of control_labels on the reference counterfactual."""
    run, _, _ = _stats(tmp_path, phantom, 0.0, "regions")
    manifest = json.loads((run / "manifest.json").read_text())
    item = next(i for i in manifest["items"] if i["value"] == "no")
    reference = read_volume(run / item["path"])
    mask = read_labels(manifest["masks"][item["subject"]])
    regions = control_labels(reference.data, mask.data)
    table = pd.read_csv(run / "stats" / "control_regions.csv")
    counts = table[(table.subject == item["subject"]) & (table.metric == "n_voxels")
                   & (table.value == "no")].set_index("region")["estimate"]
    assert counts["outside-body"] == np.sum(regions == OUTSIDE_BODY)
    assert counts["body"] == np.sum(regions == BODY)
    assert counts["whole"] == regions.size


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.1"])
def test_specificity_ratio_must_be_a_fraction(tmp_path, phantom, ratio):
    result = runner.invoke(app, ["stats", str(tmp_path / "missing"), "--specificity-ratio", ratio])
    assert result.exit_code == 2
    assert "--specificity-ratio" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_oracle_age_dose_response_is_the_planted_slope_exactly(tmp_path, phantom):
    cohort = load_cohort(phantom)
    out = tmp_path / "age"
    run_sweep(SweepConfig("age", (40, 60, 80), (0,), out, quiet=True), cohort,
              resolve_generator("phantom-oracle", cohort))
    result = runner.invoke(app, ["stats", str(out), "--no-zones"])
    assert result.exit_code == 0, result.stderr
    planted = json.loads((phantom / "truth.json").read_text())["effects"]["age"]
    dose = pd.read_csv(out / "stats" / "dose_response.csv", keep_default_na=False,
                       na_values=[""])
    lung = dose[(dose.region == "lung") & (dose.metric == "mean")].iloc[0]
    assert lung.slope == pytest.approx(10 * planted["slope_hu_per_unit"], abs=1e-6)
    assert lung.slope_unit == "HU per 10 years"
    assert lung.note.startswith("exact (no variance)") and np.isnan(lung.slope_p)
    assert lung.body_slope == 0.0 and lung.verdict == "specific"
    assert "dose-response" in result.stdout
    summary = json.loads((out / "stats" / "summary.json").read_text())
    assert {r["slope_unit"] for r in summary["dose_response"] if r["metric"] == "mean"} == {
        "HU per 10 years"}


def test_two_values_give_no_dose_response(tmp_path, phantom):
    run, _, shown = _stats(tmp_path, phantom, 0.0, "two")
    assert not (run / "stats" / "dose_response.csv").exists()
    assert "dose-response" not in shown
