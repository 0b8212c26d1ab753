"""``cfx audit`` on phantom sweeps: a sound model (the exact oracle) against broken text
conditions (one that ignores the attribute, one that swaps it for every other subject) and a
leaky one (the right lung effect plus a shift outside the lungs); its verdicts, ``--strict``,
and the audit table of ``cfx report``."""

import json
import math
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.audit import AuditConfig, run_audit
from cfx.counterfactual.cli import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.phantom import PhantomOracle
from cfx.counterfactual.sweep import generators

runner = CliRunner()
SUBJECTS = 12
LARGE_SMOKING = {"smoking": {"reference": "no",
                             "values": {"yes": {"shift_hu": 60, "pattern": "lung"}}}}
AGE_ONLY = {"age": {"centre": 60, "slope_hu_per_unit": -4, "pattern": "lung"}}


LEAKED_VALUE = "IPF"  # the non-reference diagnosis


class BrokenText:
    """The phantom oracle behind a broken text condition.

    ``ignores``: every request gets the subject's own attribute value (the text is ignored).
    ``shuffled``: for every other subject the values are handed to the requests in reverse.
    ``leaks<H>``: the exact volume, plus ``H`` HU everywhere outside the lungs at
    :data:`LEAKED_VALUE` (a generator whose edit leaks off the lungs).
    """

    text_encoder = None

    def __init__(self, cohort, mode):
        self.name = f"phantom-{mode}"
        self.content_hash = f"sha256:{mode}"
        self.mode = mode
        self._oracle = PhantomOracle.from_cohort(cohort.source)

    def check(self, cohort, attribute):
        pass

    def generate(self, subject, mask, attribute, requests, seed):
        if self.mode.startswith("leaks"):
            off_lung = ~np.isin(mask.data, (1, 2))
            volumes = [self._oracle.render(subject.id, {attribute: r.value}, seed).copy()
                       for r in requests]
            for request, volume in zip(requests, volumes, strict=True):
                volume[off_lung] += float(self.mode.removeprefix("leaks")) * (
                    request.value == LEAKED_VALUE)
            return volumes
        if self.mode == "ignores":
            return [self._oracle.render(subject.id, {}, seed) for _ in requests]
        values = [r.value for r in requests]
        if int(subject.id[1:]) % 2:
            values.reverse()
        return [self._oracle.render(subject.id, {attribute: v}, seed) for v in values]


def resolve(name, cohort, sampling=None):
    if name.startswith("phantom-") and name != "phantom-oracle":
        return BrokenText(cohort, name.removeprefix("phantom-"))
    return generators.resolve_generator(name, cohort, sampling)


def cfx(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three 12-subject phantoms (default effects, +60 HU smoking, -4 HU/yr age) and sweeps."""
    root = tmp_path_factory.mktemp("audit")
    for name, effects in (("smoking", LARGE_SMOKING), ("age", AGE_ONLY)):
        (root / f"{name}.json").write_text(json.dumps(effects))
    common = ("--subjects", SUBJECTS, "--shape", "24,24,24", "-q")
    cfx("phantom", "--out", root / "default", *common)
    cfx("phantom", "--out", root / "smoking", "--effects", root / "smoking.json", *common)
    cfx("phantom", "--out", root / "age", "--effects", root / "age.json", *common)
    sweeps = {"diagnosis": ("default", "diagnosis", "CTD-ILD,IPF", "phantom-oracle", "0,1"),
              "smoking": ("smoking", "smoking", "no,yes", "phantom-oracle", "0"),
              "age": ("age", "age", "55,75", "phantom-oracle", "0"),
              "ignores": ("default", "diagnosis", "CTD-ILD,IPF", "phantom-ignores", "0"),
              "shuffled": ("default", "diagnosis", "CTD-ILD,IPF", "phantom-shuffled", "0"),
              "leaks30": ("default", "diagnosis", "CTD-ILD,IPF", "phantom-leaks30", "0"),
              "leaks5": ("default", "diagnosis", "CTD-ILD,IPF", "phantom-leaks5", "0")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cfx.counterfactual.cli.sweep.resolve_generator", resolve)
        for run, (cohort, attribute, values, model, seeds) in sweeps.items():
            cfx("sweep", "--cohort", root / cohort, "--attribute", attribute, "--values", values,
                "--model", model, "--seeds", seeds, "--out", root / "runs" / run, "-q")
    return root


@pytest.fixture
def broken(monkeypatch):
    monkeypatch.setattr("cfx.counterfactual.audit.resolve_generator", resolve)


def audit(run, *args):
    cfx("audit", run, "-q", *args)
    text = (run / "audit" / "audit.json").read_text()
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in audit.json"))


def value(result, criterion, metric):
    return result["criteria"][criterion]["metrics"][metric]["value"]


def verdicts(result):
    return {name: criterion["verdict"] for name, criterion in result["criteria"].items()}


def test_the_exact_oracle_passes_every_criterion(root):
    run = root / "runs" / "diagnosis"
    result = audit(run)
    assert result["format"] == "cfx-audit/2" and result["subjects"] == SUBJECTS
    assert [result["criteria"][c]["status"] for c in result["criteria"]] == [
        "measured", "measured", "measured", "not applicable", "measured"]
    assert verdicts(result) == {"composition": "pass", "effectiveness": "pass",
                                "minimality": "pass", "reversibility": "not applicable",
                                "oracle_agreement": "pass"}
    assert (result["verdict"], result["verdict_reason"]) == (
        "pass", "all 4 applicable criteria pass")
    composition = result["criteria"]["composition"]
    assert composition["key_metric"] == "null_to_seed_ratio"
    assert composition["thresholds"] == [{"metric": "null_to_seed_ratio", "better": "lower",
                                          "pass": 0.05, "fail": 0.25, "unit": "1"}]
    # Composition: regenerating at the subject's own value with the run's noise is exact, far
    # below the seed-to-seed scale.
    assert value(result, "composition", "null_max_abs") == 0.0
    assert value(result, "composition", "seed_to_seed_mean_abs") > 5.0
    assert value(result, "composition", "null_to_seed_ratio") == 0.0
    # Effectiveness: IPF vs CTD-ILD is large, every counterfactual is read as its value.
    accuracy = result["criteria"]["effectiveness"]["metrics"]["accuracy"]
    assert accuracy == {"value": 1.0, "unit": "fraction", "chance": 0.5}
    assert value(result, "effectiveness", "auc") == 1.0
    assert value(result, "effectiveness", "counterfactual_volumes") == SUBJECTS * 2 * 2
    # Minimality: the phantom changes lung voxels only.
    assert value(result, "minimality", "share_inside_lung") == 1.0
    assert value(result, "minimality", "mean_abs_outside_lung") == 0.0
    assert value(result, "minimality", "mean_abs_inside_lung") > 10.0
    assert value(result, "minimality", "off_lung_to_effect_ratio") == 0.0
    # Oracle agreement: the run's maps are the oracle's.
    assert value(result, "oracle_agreement", "correlation") == pytest.approx(1.0, abs=1e-6)
    assert value(result, "oracle_agreement", "rmse") < 1e-3
    assert abs(value(result, "oracle_agreement", "region_mean_error")) < 1e-3
    assert value(result, "oracle_agreement", "oracle_region_mean") > 10.0
    differences = pd.read_csv(run / "audit" / "differences.csv")
    assert len(differences) == SUBJECTS * 2 and (differences.oracle_correlation > 0.999).all()
    volumes = pd.read_csv(run / "audit" / "volumes.csv")
    assert (volumes.predicted == volumes.value).all()
    composition = pd.read_csv(run / "audit" / "composition.csv")
    assert len(composition) == SUBJECTS and (composition.max_abs_hu == 0).all()
    assert sorted(result["files"]) == ["audit.json", "composition.csv", "differences.csv",
                                       "volumes.csv"]


def test_a_large_smoking_effect_is_read_back_from_every_counterfactual(root):
    result = audit(root / "runs" / "smoking")
    assert value(result, "effectiveness", "accuracy") == 1.0
    assert value(result, "effectiveness", "auc") == 1.0
    assert value(result, "effectiveness", "real_ct_cv_auc") > 0.5
    assert "seed-to-seed" in " ".join(result["criteria"]["composition"]["notes"])


def test_a_numeric_attribute_is_scored_by_mean_absolute_error(root):
    result = audit(root / "runs" / "age")
    mae = result["criteria"]["effectiveness"]["metrics"]["mae"]
    assert mae["unit"] == "years" and mae["chance"] == pytest.approx(10.0)
    assert mae["value"] < 3.0
    assert value(result, "effectiveness", "correlation") > 0.9
    assert value(result, "effectiveness", "mae_to_chance_ratio") == pytest.approx(
        mae["value"] / mae["chance"])
    assert result["criteria"]["effectiveness"]["verdict"] == "pass"
    # -4 HU/yr over 20 years, only in the lungs, recovered exactly.
    assert value(result, "oracle_agreement", "oracle_region_mean_abs") == pytest.approx(80.0)
    assert value(result, "oracle_agreement", "relative_region_error") < 1e-6
    # Nobody is 55 or 75 in the table: composition regenerates at the reference, and says so.
    assert value(result, "composition", "subjects_at_reference") >= 1
    assert value(result, "composition", "null_max_abs") == 0.0


def test_a_model_that_ignores_the_text_is_caught(root, broken):
    result = audit(root / "runs" / "ignores")
    assert value(result, "effectiveness", "accuracy") == 0.5  # chance
    assert value(result, "effectiveness", "auc") == 0.5
    assert value(result, "oracle_agreement", "correlation") is None
    assert value(result, "oracle_agreement", "correlation_undefined") == SUBJECTS
    expected = value(result, "oracle_agreement", "oracle_region_mean")
    assert value(result, "oracle_agreement", "region_mean_error") == pytest.approx(-expected)
    assert value(result, "minimality", "share_inside_lung") is None
    assert "changed nothing" in result["criteria"]["minimality"]["notes"][0]
    assert verdicts(result) == {
        "composition": "pass", "effectiveness": "fail", "minimality": "pass",
        "reversibility": "not applicable", "oracle_agreement": "fail"}
    assert result["verdict"] == "fail"
    assert result["verdict_reason"] == "fail: effectiveness, oracle_agreement"
    assert value(result, "oracle_agreement", "relative_region_error") == pytest.approx(1.0)


def test_a_model_with_a_shuffled_text_condition_is_caught(root, broken):
    result = audit(root / "runs" / "shuffled")
    assert abs(value(result, "effectiveness", "accuracy") - 0.5) <= 0.1
    assert abs(value(result, "effectiveness", "auc") - 0.5) <= 0.25
    assert abs(value(result, "oracle_agreement", "correlation")) < 0.05
    # The swap depends on the batch, so the same noise alone no longer gives the same volume.
    assert value(result, "composition", "null_mean_abs") > 1.0
    # One seed: no scale to judge the drift by, so it warns; the read-back fails.
    assert verdicts(result)["composition"] == "warn"
    assert result["criteria"]["composition"]["key_metric"] == "null_mean_abs"
    assert verdicts(result)["effectiveness"] == "fail" and result["verdict"] == "fail"


def test_the_table_names_every_criterion_and_a_rerun_replaces_the_audit(root):
    run = root / "runs" / "age"
    result = cfx("audit", run)
    for word in ("composition", "effectiveness", "minimality", "reversibility",
                 "oracle_agreement", "mae", "not applicable"):
        assert word in result.stdout
    assert "\noverall: pass (all 4 applicable criteria pass)\n" in result.stdout
    assert "│ composition: pass " in result.stdout and "│ reversibility: not applicable " in (
        result.stdout)
    assert re.search(r"│   mae_to_chance_ratio +│ +0\.\d+ │ pass ≤", result.stdout)  # threshold
    assert "\nminimality: pass, no change outside the lungs beside a lung effect" in result.stdout
    (run / "audit" / "stale.txt").write_text("old")
    audit(run)
    assert not (run / "audit" / "stale.txt").exists()


def copy_run(run, out, cohort=None, edit=None):
    """A copy of ``run`` whose manifest points at ``cohort`` and went through ``edit``."""
    shutil.copytree(run, out)
    shutil.rmtree(out / "audit", ignore_errors=True)
    manifest = json.loads((out / "manifest.json").read_text())
    if cohort is not None:
        manifest["settings"]["cohort"] = str(cohort)
    if edit is not None:
        edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_cohort_without_ct_skips_effectiveness_with_a_note(root, tmp_path):
    cohort = tmp_path / "masks-only"
    shutil.copytree(root / "smoking", cohort, ignore=shutil.ignore_patterns("ct"))
    run = copy_run(root / "runs" / "smoking", tmp_path / "run", cohort)
    result = runner.invoke(app, ["audit", str(run)])
    assert result.exit_code == 0, result.output
    assert "note: effectiveness needs real CTs" in result.stderr
    summary = json.loads((run / "audit" / "audit.json").read_text())
    assert summary["criteria"]["effectiveness"]["status"] == "skipped"
    # Could not look: a warning whose reason is the note, not a pass.
    assert summary["criteria"]["effectiveness"]["verdict"] == "warn"
    assert summary["criteria"]["effectiveness"]["reason"].startswith(
        "not measured: effectiveness needs real CTs")
    assert (summary["verdict"], summary["verdict_reason"]) == ("warn", "warn: effectiveness")
    assert summary["predictor_cohort"] is None
    assert summary["criteria"]["oracle_agreement"]["status"] == "measured"
    assert "volumes.csv" not in summary["files"]
    with_ct = audit(run, "--cohort", root / "smoking")
    assert value(with_ct, "effectiveness", "accuracy") == 1.0
    assert with_ct["predictor_cohort"] == str(root / "smoking")


def test_too_few_training_subjects_of_a_value_skip_effectiveness(root, tmp_path):
    cohort = tmp_path / "one-non-smoker"
    shutil.copytree(root / "smoking", cohort)
    table = pd.read_csv(cohort / "clinical.csv", dtype={"subject": str})
    table["smoking"] = ["no"] + ["yes"] * (SUBJECTS - 1)
    table.to_csv(cohort / "clinical.csv", index=False)
    result = audit(root / "runs" / "smoking", "--cohort", cohort)
    effectiveness = result["criteria"]["effectiveness"]
    assert effectiveness["status"] == "skipped" and effectiveness["metrics"] == {}
    assert "at least 2 training subjects of every swept value, got no: 1, yes: 11" in (
        effectiveness["notes"][-1])
    assert result["criteria"]["composition"]["status"] == "measured"


def test_without_truth_or_the_model_the_other_criteria_are_still_reported(root, tmp_path):
    cohort = tmp_path / "no-truth"
    shutil.copytree(root / "smoking", cohort, ignore=shutil.ignore_patterns("truth.json"))
    run = copy_run(root / "runs" / "smoking", tmp_path / "run", cohort)
    result = audit(run)
    composition = result["criteria"]["composition"]
    assert composition["status"] == "skipped" and "cannot be loaded" in composition["notes"][0]
    assert result["criteria"]["oracle_agreement"]["status"] == "not applicable"
    assert value(result, "effectiveness", "accuracy") == 1.0


def test_another_model_version_is_not_used_for_composition(root, tmp_path):
    def rehash(manifest):
        manifest["model"]["content_hash"] = "sha256:other"

    run = copy_run(root / "runs" / "smoking", tmp_path / "run", edit=rehash)
    composition = audit(run)["criteria"]["composition"]
    assert composition["status"] == "skipped" and "content hash" in composition["notes"][0]


def test_a_model_whose_name_does_not_resolve_is_given_with_model(root, tmp_path):
    def rename(manifest):
        manifest["model"]["name"] = "moved-checkpoint"

    run = copy_run(root / "runs" / "smoking", tmp_path / "run", edit=rename)
    composition = audit(run)["criteria"]["composition"]
    assert composition["status"] == "skipped" and "--model" in composition["notes"][0]
    assert value(audit(run, "--model", "phantom-oracle"), "composition", "null_max_abs") == 0.0


def _prompt_edited(manifest):
    for item in manifest["items"]:
        item["prompt"] = "Lung CT scan: something else."


def _masks_only(root, tmp):
    shutil.copytree(root / "smoking", tmp / "masks-only", ignore=shutil.ignore_patterns("ct"))
    return root / "runs" / "smoking", ("--cohort", tmp / "masks-only")


@pytest.mark.parametrize(("setup", "message"), [
    (lambda root, tmp: (tmp, ()), "not a cfx run"),
    (lambda root, tmp: (copy_run(root / "runs" / "smoking", tmp / "r",
                                 edit=lambda m: m.update(complete=False)), ()),
     "the sweep is incomplete"),
    (lambda root, tmp: (copy_run(root / "runs" / "smoking", tmp / "r", tmp / "gone"), ()),
     r"the run's cohort .*gone no longer exists"),
    (lambda root, tmp: (copy_run(root / "runs" / "smoking", tmp / "r", edit=_prompt_edited), ()),
     "prompt is now .* but the run used 'Lung CT scan: something else.'"),
    (_masks_only, r"--cohort: .*masks-only has no CTs"),
    (lambda root, tmp: (root / "runs" / "smoking", ("--penalty", "0")),
     "--penalty: must be a positive number, got 0"),
    (lambda root, tmp: (root / "runs" / "smoking", ("--device", "tpu")),
     r"Invalid value for '--device': got 'tpu'; choose one of auto, cpu, cuda \(see"),
    (lambda root, tmp: (root / "runs" / "smoking", ("--specificity-ratio", "0")),
     r"--specificity-ratio: must be in \(0, 1\], got 0.0"),
    (lambda root, tmp: (root / "runs" / "smoking", ("--specificity-ratio", "1.5")),
     r"--specificity-ratio: must be in \(0, 1\], got 1.5"),
])
def test_user_errors_are_one_line_and_write_nothing(root, tmp_path, setup, message):
    run, args = setup(root, tmp_path)
    summary = run / "audit" / "audit.json"
    before = summary.read_bytes() if summary.exists() else None
    result = runner.invoke(app, ["audit", str(run), *map(str, args)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("cfx: error: ") and "\n" not in line
    assert re.search(message, line), line
    assert (summary.read_bytes() if summary.exists() else None) == before


def test_run_audit_checks_its_options_before_reading_anything(tmp_path):
    with pytest.raises(UserInputError, match=r"--penalty: must be a positive number, got nan"):
        run_audit(AuditConfig(tmp_path / "missing", penalty=math.nan))
    with pytest.raises(UserInputError, match=r"--device: 'gpu' is not one of"):
        run_audit(AuditConfig(tmp_path / "missing", device="gpu"))


def off_lung_ratio_from_files(run):
    """Mean |Δ| outside the lungs over |mean Δ| inside, pooled over every voxel of every map,
    read straight from the run's difference maps and masks (the reference for minimality)."""
    manifest = json.loads((run / "manifest.json").read_text())
    inside, outside = [], []
    for path in sorted(run.glob("sub-*/*_diff.nii.gz")):
        subject = path.name.split("_")[0].removeprefix("sub-")
        lung = np.isin(np.asarray(nib.load(manifest["masks"][subject]).dataobj), (1, 2))
        difference = np.asarray(nib.load(path).dataobj, dtype=np.float64)
        inside.append(difference[lung])
        outside.append(difference[~lung])
    assert len(inside) == SUBJECTS
    return np.abs(np.concatenate(outside)).mean() / abs(np.concatenate(inside).mean())


def test_off_lung_change_is_judged_against_the_lung_effect(root, broken):
    """30 HU off the lungs beside a ~16 HU lung effect fails; 5 HU beside it warns at the
    default ratio 0.25 and passes at --specificity-ratio 0.4 (5 HU is within the 5 HU bar)."""
    run = root / "runs" / "leaks30"
    result = audit(run)
    minimality = result["criteria"]["minimality"]
    expected = off_lung_ratio_from_files(run)
    assert expected > 1.0
    assert minimality["verdict"] == "fail" and minimality["key_metric"] == (
        "off_lung_to_effect_ratio")
    assert value(result, "minimality", "off_lung_to_effect_ratio") == pytest.approx(expected)
    assert value(result, "minimality", "worst_contrast_mean_abs_outside_lung") == (
        pytest.approx(30.0))
    assert minimality["reason"].startswith("IPF vs CTD-ILD: off-lung 30 HU is ")
    assert result["verdict"] == "fail"
    # The lung effect itself is the oracle's: effectiveness still passes.
    assert verdicts(result)["effectiveness"] == "pass"

    small = root / "runs" / "leaks5"
    expected = off_lung_ratio_from_files(small)
    assert 0.25 < expected < 0.4
    default = audit(small)
    assert verdicts(default)["minimality"] == "warn"
    assert value(default, "minimality", "off_lung_to_effect_ratio") == pytest.approx(expected)
    assert default["criteria"]["minimality"]["thresholds"][0]["pass"] == 0.25
    looser = audit(small, "--specificity-ratio", "0.4")
    assert verdicts(looser)["minimality"] == "pass"
    assert looser["criteria"]["minimality"]["thresholds"][0] == {
        "metric": "off_lung_to_effect_ratio", "better": "lower", "pass": 0.4, "fail": 1.0,
        "unit": "1"}


def test_strict_exits_1_on_a_failing_criterion_and_0_otherwise(root, broken, tmp_path):
    failing = runner.invoke(app, ["audit", str(root / "runs" / "leaks30"), "--strict"])
    assert failing.exit_code == 1, failing.output
    assert re.search(r"cfx audit --strict: .*minimality.* failed", failing.stderr)
    assert "\noverall: fail (fail: " in failing.stdout
    written = json.loads((root / "runs" / "leaks30" / "audit" / "audit.json").read_text())
    assert written["verdict"] == "fail"  # the audit is written either way
    quiet = runner.invoke(app, ["audit", str(root / "runs" / "ignores"), "--strict", "-q"])
    assert quiet.exit_code == 1 and quiet.stdout == "" and quiet.stderr == ""
    passing = runner.invoke(app, ["audit", str(root / "runs" / "diagnosis"), "--strict", "-q"])
    assert passing.exit_code == 0, passing.output
    cohort = tmp_path / "masks-only"
    shutil.copytree(root / "smoking", cohort, ignore=shutil.ignore_patterns("ct"))
    warning = runner.invoke(app, ["audit", str(copy_run(root / "runs" / "smoking",
                                                        tmp_path / "run", cohort)), "--strict"])
    assert warning.exit_code == 0, warning.output
    assert "\noverall: warn (warn: effectiveness)" in warning.stdout
    help_text = runner.invoke(app, ["audit", "--help"]).stdout
    assert "--strict" in help_text and "--specificity-ratio" in help_text


@pytest.fixture(scope="module")
def reports(root, tmp_path_factory):
    """The leaky run with statistics, audited, reported with both templates; and the same run
    without an audit, reported."""
    folder = tmp_path_factory.mktemp("reports")
    audited = copy_run(root / "runs" / "leaks30", folder / "audited")
    cfx("stats", audited, "-q")
    bare = folder / "bare"
    shutil.copytree(audited, bare)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cfx.counterfactual.audit.resolve_generator", resolve)
        cfx("audit", audited, "-q")
    for run in (audited, bare):
        for template in ("summary", "paper"):
            cfx("report", run, "--template", template, "--subjects", "1", "-q")
    return audited, bare


@pytest.mark.parametrize("template", ["summary", "paper"])
def test_the_report_shows_the_audit_as_a_verdict_table(reports, template):
    audited, _ = reports
    result = json.loads((audited / "audit" / "audit.json").read_text())
    folder = audited / "report" / template
    html = (folder / "index.html").read_text(encoding="utf-8")
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert "<b>Overall verdict: fail</b> (fail: " in html
    assert "**Overall verdict: fail** (fail: " in markdown
    assert "| criterion | verdict | key metric (threshold) | reason |" in markdown
    for name, criterion in result["criteria"].items():
        assert f"<tr><td>{name}</td><td><b>{criterion['verdict']}</b></td>" in html
        assert f"| {name} | **{criterion['verdict']}** | " in markdown
    ratio = value(result, "minimality", "off_lung_to_effect_ratio")
    cell = (f"`off_lung_to_effect_ratio` {ratio:.4g} (pass ≤ 0.25, fail > 1; "
            "worst_contrast_mean_abs_outside_lung: pass ≤ 5 HU, else warn)")
    assert f"| minimality | **fail** | {cell} | IPF vs CTD-ILD: off-lung 30 HU" in markdown
    assert f"<code>off_lung_to_effect_ratio</code> {ratio:.4g}" in html
    assert "| key | value |" not in markdown and "<th>key</th>" not in html
    assert "not audited" not in markdown


@pytest.mark.parametrize("template", ["summary", "paper"])
def test_a_report_without_an_audit_says_not_audited(reports, template):
    _, bare = reports
    folder = bare / "report" / template
    for name in ("index.html", "report.md"):
        text = (folder / name).read_text(encoding="utf-8")
        assert "This run is not audited" in text and "Overall verdict" not in text
