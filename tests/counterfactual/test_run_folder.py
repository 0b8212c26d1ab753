"""RunFolder: the one reader of a run folder (manifest checked once, volumes by key from the
manifest's paths, each checked against its recorded sha256 once), and the commands on it."""

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import cfx.counterfactual.run_folder as run_folder
from cfx.counterfactual.attributes import (
    DEFAULT_ATTRIBUTES,
    AttributeVocabulary,
    CategoricalAttribute,
    NumericAttribute,
)
from cfx.counterfactual.cli import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfx.counterfactual.run_folder import NOT_VERIFIED, RunFolder, load_run
from tests.conftest import oracle_run

runner = CliRunner()
NO = "sub-P000/sub-P000_attr-smoking_val-no_seed-0_ct.nii.gz"
YES = "sub-P000/sub-P000_attr-smoking_val-yes_seed-0_ct.nii.gz"
DIFF = "sub-P000/sub-P000_attr-smoking_contrast-yes-vs-no_seed-1_diff.nii.gz"


MINE = PromptTemplate("Lung CT scan:{% if smoking is defined %} Smoker: {{ smoking }}."
                      "{% endif %}", "mine.j2")


def _ok(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A phantom cohort of 3 subjects (16³) swept over smoking at seeds 0 and 1, with stats."""
    return oracle_run(tmp_path_factory.mktemp("runfolder"), subjects=3, seeds="0,1")


@pytest.fixture
def run(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "run")


def _manifest(run):
    return json.loads((run / "manifest.json").read_text())


def _save(run, manifest):
    (run / "manifest.json").write_text(json.dumps(manifest))


def _swap(run, a=NO, b=YES):
    """Swap two volumes of a run behind its manifest's back."""
    (run / a).rename(run / "tmp.nii.gz")
    (run / b).rename(run / a)
    (run / "tmp.nii.gz").rename(run / b)


def _nifti(path):
    image = nib.load(path)
    return np.asarray(image.dataobj, np.float32), image.affine


def test_volumes_by_key_are_the_files_the_manifest_records(pristine):
    folder = RunFolder.open(pristine)
    manifest = _manifest(pristine)
    assert folder.subjects == tuple(manifest["settings"]["subjects"])
    assert (folder.attribute, folder.values, folder.reference, folder.seeds) == (
        "smoking", ("no", "yes"), "no", (0, 1))
    for item in manifest["items"]:
        data, affine = _nifti(pristine / item["path"])
        ct = folder.ct(item["subject"], item["value"], item["seed"])
        np.testing.assert_array_equal(ct.data, data)
        np.testing.assert_array_equal(ct.affine, affine)
    data, _ = _nifti(pristine / DIFF)
    np.testing.assert_array_equal(folder.difference("P000", "yes", 1).data, data)
    # against another reference: CT minus CT, read from the items' files
    reverse = _nifti(pristine / NO)[0] - _nifti(pristine / YES)[0]
    np.testing.assert_array_equal(folder.difference("P000", "no", 0, reference="yes").data,
                                  reverse)
    mask = _nifti(manifest["masks"]["P001"])[0]
    np.testing.assert_array_equal(folder.mask("P001").data, mask)


def test_paths_come_from_the_manifest_not_from_naming_rules(run):
    manifest = _manifest(run)
    moved = "sub-P000/renamed.nii.gz"
    (run / NO).rename(run / moved)
    for entry in manifest["items"] + manifest["files"]:
        if entry["path"] == NO:
            entry["path"] = moved
    _save(run, manifest)
    folder = RunFolder.open(run)
    assert folder.ct_path("P000", "no", 0) == run / moved
    np.testing.assert_array_equal(folder.ct("P000", "no", 0).data, _nifti(run / moved)[0])


def test_a_value_is_found_as_written_or_as_text(pristine, tmp_path):
    folder = RunFolder.open(pristine)
    assert folder.ct_path("P001", "yes", 1) == pristine / folder.item("P001", "yes", 1)["path"]
    with pytest.raises(UserInputError, match="no item of subject P001, value 'maybe', seed 1"):
        folder.ct("P001", "maybe", 1)


def test_each_file_is_hashed_once_per_reader(pristine, monkeypatch):
    calls = []
    real = run_folder.sha256

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(run_folder, "sha256", counting)
    folder = RunFolder.open(pristine)
    for _ in range(3):
        folder.ct("P000", "yes", 0)
        folder.difference("P000", "yes", 1)
        folder.difference("P000", "no", 0, reference="yes")  # reads both CTs of seed 0
    folder.check([pristine / NO, pristine / YES])
    assert sorted(calls) == sorted(str(pristine / p) for p in (NO, YES, DIFF))
    calls.clear()
    RunFolder.open(pristine, verify=False).ct("P000", "yes", 0)
    assert calls == []


def test_stats_hashes_every_ct_once(run, monkeypatch):
    calls = []
    real = run_folder.sha256
    monkeypatch.setattr(run_folder, "sha256", lambda path: calls.append(path) or real(path))
    _ok(["stats", run, "--voxelwise", "--permutations", "10", "-q"])
    recorded = {run / e["path"] for e in _manifest(run)["files"]}
    assert len(calls) == len(set(calls)) == len(recorded)  # every CT and diff, once each
    assert set(calls) == recorded


@pytest.mark.parametrize("command", [["stats"], ["render"], ["report", "--out", "REPORT"],
                                     ["audit"]])
def test_a_swapped_pair_of_volumes_is_refused_by_every_reader(run, tmp_path, command):
    _swap(run)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [command[0], run, *(str(tmp_path / a) if a == "REPORT" else a for a in command[1:])]
    result = runner.invoke(app, [str(a) for a in args + ["-q"]])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{run / NO}: its sha256 differs from the one manifest.json recorded" in result.stderr
    assert "changed after cfx sweep wrote it" in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_no_verify_reads_a_swapped_run_and_says_so(run, pristine):
    _swap(run)
    result = _ok(["stats", run, "--no-verify", "-q"])
    assert f"warning: {NOT_VERIFIED}" in result.stderr
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["verified"] is False
    assert json.loads((pristine / "stats" / "summary.json").read_text())["verified"] is True
    # the swap is what the check protects against: the lung effect of the run changes
    swapped = pd.read_csv(run / "stats" / "effects.csv").set_index(["region", "metric"])
    original = pd.read_csv(pristine / "stats" / "effects.csv").set_index(["region", "metric"])
    assert swapped.loc[("lung", "mean"), "estimate"] != pytest.approx(
        original.loc[("lung", "mean"), "estimate"], abs=0.5)
    for command in (["render"], ["audit"], ["report", "--out", str(run.parent / "report")]):
        result = _ok([command[0], run, *command[1:], "--no-verify", "-q"])
        assert f"warning: {NOT_VERIFIED}" in result.stderr, command
    assert json.loads((run / "audit" / "audit.json").read_text())["verified"] is False


def test_a_manifest_path_outside_the_run_is_refused(run):
    shutil.copy(run / NO, run.parent / "outside.nii.gz")
    manifest = _manifest(run)
    manifest["items"][0]["path"] = "../outside.nii.gz"
    _save(run, manifest)
    with pytest.raises(UserInputError, match=r"items\[0\].path: path '../outside.nii.gz' points "
                                             "outside"):
        RunFolder.open(run)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda m: m["masks"].pop("P001"), "missing or bad field 'P001'"),
    (lambda m: m["items"].pop(), "items of subject P002, value 'yes', seed 1"),
    (lambda m: m["settings"].update(reference="maybe"), "settings.reference"),
    (lambda m: m["items"][0].update(value=[1]), "items[0]"),
])
def test_a_malformed_manifest_is_one_user_error(run, edit, fragment):
    manifest = _manifest(run)
    edit(manifest)
    _save(run, manifest)
    with pytest.raises(UserInputError, match="malformed manifest") as info:
        RunFolder.open(run)
    assert fragment in str(info.value)


def test_a_recorded_hash_that_matches_is_read(run):
    """Re-recording a changed file's hash makes it the run's file again (what --resume does)."""
    _swap(run)
    manifest = _manifest(run)
    for entry in manifest["files"]:
        if entry["path"] in (NO, YES):
            entry["sha256"] = hashlib.sha256((run / entry["path"]).read_bytes()).hexdigest()
    _save(run, manifest)
    np.testing.assert_array_equal(RunFolder.open(run).ct("P000", "no", 0).data,
                                  _nifti(run / NO)[0])


def _lungs_only(tmp_path):
    vocabulary = tmp_path / "lungs_only.json"
    vocabulary.write_text(json.dumps({"labels": {"1": "left-lung", "2": "right-lung"},
                                      "regions": {"lung": [1, 2]}}))
    return vocabulary


def test_the_run_records_its_vocabularies_and_readers_take_them(run):
    manifest = _manifest(run)
    assert manifest["labels"] == DEFAULT_VOCABULARY.to_json()
    assert manifest["attributes"] == DEFAULT_ATTRIBUTES.to_json()
    assert manifest["prompt_template"]["text"] == DEFAULT_TEMPLATE.text
    # a run of its own labels: the readers take them, not the built-in ones
    manifest["labels"] = {"labels": {"1": "left-lung", "2": "right-lung", "3": "airway"},
                          "regions": {"lung": [1], "airway": [3]}}
    manifest["prompt_template"] = {"name": "mine.j2", "sha256": MINE.sha256, "text": MINE.text}
    _save(run, manifest)
    folder = RunFolder.open(run)
    assert folder.labels.region_labels("lung") == (1,)
    assert folder.template() == MINE
    assert folder.attributes.attribute("smoking") == DEFAULT_ATTRIBUTES.attribute("smoking")


def test_labels_that_are_not_the_runs_are_refused_by_every_reader(run, tmp_path):
    vocabulary = _lungs_only(tmp_path)
    with pytest.raises(UserInputError, match=r"--labels: its labels differ from those of the run"
                                             r" .* \(1 left-lung, 2 right-lung, 3 airway\)"):
        RunFolder.open(run, LabelVocabulary({1: "left-lung", 2: "right-lung"}))
    for command in ("stats", "render", "report", "audit"):
        out = ["--out", str(tmp_path / "report")] if command == "report" else []
        result = runner.invoke(app, [command, str(run), "--labels", str(vocabulary), *out, "-q"])
        assert result.exit_code == 2, (command, result.stderr)
        assert "--labels: its labels differ from those of the run" in result.stderr, command
        assert len(result.stderr.strip().splitlines()) == 1, command


def test_labels_of_the_run_with_other_regions_are_used(run):
    folder = RunFolder.open(run, LabelVocabulary({1: "left-lung", 2: "right-lung", 3: "airway"},
                                                 {"left": (1,)}))
    assert folder.labels.region_labels("left") == (1,)


def test_labels_reach_every_reader_of_a_run_that_records_none(run, tmp_path):
    """A run made before cfx recorded its vocabularies takes --labels unchecked, as before."""
    manifest = _manifest(run)
    for key in ("labels", "attributes"):
        del manifest[key]
    manifest["prompt_template"] = {"name": "default", "sha256": DEFAULT_TEMPLATE.sha256}
    _save(run, manifest)
    assert RunFolder.open(run).labels == DEFAULT_VOCABULARY
    assert RunFolder.open(run).template() is DEFAULT_TEMPLATE
    vocabulary = _lungs_only(tmp_path)
    folder = RunFolder.open(run, LabelVocabulary({1: "left-lung", 2: "right-lung"}))
    with pytest.raises(UserInputError, match=r"labels \[3\] outside the vocabulary"):
        folder.mask("P000")
    for command in ("stats", "render", "report", "audit"):
        out = ["--out", str(tmp_path / "report")] if command == "report" else []
        result = runner.invoke(app, [command, str(run), "--labels", str(vocabulary), *out, "-q"])
        assert result.exit_code == 2, (command, result.stderr)
        assert "labels [3] outside the vocabulary" in result.stderr, command


def test_a_template_other_than_the_runs_is_refused(run):
    with pytest.raises(UserInputError, match=r"--template: mine.j2 is not the prompt template "
                                             r"of the run .* \(default, sha256 35a90f23f64c\)"):
        RunFolder.open(run).template(MINE)
    assert RunFolder.open(run).template(PromptTemplate(DEFAULT_TEMPLATE.text, "copy.j2")).name \
        == "copy.j2"


def test_an_attribute_defined_otherwise_than_in_the_run_is_refused(run):
    smoking = CategoricalAttribute("smoking", ("current", "never"))
    fvc = NumericAttribute("fvc", "% predicted", 0, 200)
    with pytest.raises(UserInputError, match=r"--attributes: attribute 'smoking' is defined "
                                             r"otherwise than in the run .* \(yes, no\)"):
        RunFolder.open(run, attributes=AttributeVocabulary({"smoking": smoking}))
    folder = RunFolder.open(run, attributes=AttributeVocabulary({"fvc": fvc}))
    assert folder.attributes.attribute("fvc") == fvc  # added: the run does not define it
    assert folder.attributes.attribute("age") == DEFAULT_ATTRIBUTES.attribute("age")


def test_load_run_gives_the_stats_as_frames_and_volumes_as_images(pristine):
    run = load_run(pristine)
    effects = run.effects()
    expected = pd.read_csv(pristine / "stats" / "effects.csv", keep_default_na=False,
                           na_values=[""])
    pd.testing.assert_frame_equal(effects, expected)
    assert set(run.controls()["value"]) == {"yes"}
    assert run.dose_response() is None  # two categorical values: no dose-response
    image = run.ct_image("P002", "yes", 1)
    data, affine = _nifti(pristine / run.item("P002", "yes", 1)["path"])
    assert isinstance(image, nib.Nifti1Image)
    np.testing.assert_array_equal(image.get_fdata(dtype=np.float32), data)
    np.testing.assert_array_equal(image.affine, affine)
    assert run.difference_image("P002", "yes", 1).shape == data.shape
    assert run.mask_image("P002").get_data_dtype() == np.int16


def test_load_run_without_stats_says_what_to_run(run):
    shutil.rmtree(run / "stats")
    with pytest.raises(UserInputError, match=r"effects.csv: missing; run cfx stats .* first"):
        load_run(run).effects()
