import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.cohort import load_cohort
from cfx.counterfactual.phantom import PhantomOracle

runner = CliRunner()
SMALL = ["--subjects", "2", "--shape", "16,16,16", "--quiet"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _run(*args):
    return runner.invoke(app, ["phantom", *args])


def test_same_seed_same_bytes_other_seed_other_files(tmp_path):
    runs = {}
    for name, seed in (("a", "4"), ("b", "4"), ("c", "5")):
        result = _run("--out", str(tmp_path / name), "--seed", seed, *SMALL)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""
        runs[name] = _files(tmp_path / name)
    assert sorted(runs["a"]) == ["clinical.csv", "ct/P000.nii.gz", "ct/P001.nii.gz",
                                 "masks/P000.nii.gz", "masks/P001.nii.gz", "truth.json"]
    assert runs["a"] == runs["b"]
    for name in ("ct/P000.nii.gz", "masks/P000.nii.gz", "truth.json"):
        assert runs["a"][name] != runs["c"][name]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_progress_and_summary_go_to_stderr(tmp_path):
    result = _run("--out", str(tmp_path / "o"), "--subjects", "2", "--shape", "16,16,16")
    assert result.exit_code == 0
    assert result.stdout == "" and "wrote 2 subjects to" in result.stderr


def test_effects_none_and_file(tmp_path):
    assert _run("--out", str(tmp_path / "none"), "--effects", "none", *SMALL).exit_code == 0
    oracle = PhantomOracle.from_cohort(tmp_path / "none")
    assert json.loads((tmp_path / "none" / "truth.json").read_text())["effects"] == {}
    for attribute, value, reference in (("smoking", "yes", "no"), ("age", "80", "40"),
                                        ("diagnosis", "IPF", "UILD")):
        diff = oracle.render("P000", {attribute: value}, 3) - oracle.render(
            "P000", {attribute: reference}, 3)
        assert np.all(diff == 0), attribute
    effects = tmp_path / "plus40.json"
    effects.write_text(json.dumps({"smoking": {"reference": "no", "values": {
        "yes": {"shift_hu": 40, "pattern": "lung"}}}}))
    result = _run("--out", str(tmp_path / "plus40"), "--effects", str(effects), *SMALL)
    assert result.exit_code == 0, result.stderr
    oracle = PhantomOracle.from_cohort(tmp_path / "plus40")
    lung = oracle.lung_mask("P001")
    yes, no = (oracle.render("P001", {"smoking": v}, 0) for v in ("yes", "no"))
    diff = yes - no
    assert abs(diff[lung].mean() - 40) < 1e-3 and np.all(diff[~lung] == 0)
    assert np.all(oracle.expected_difference("P001", "age", 70, 50) == 0)


def test_clinical_table_has_missing_cells_at_about_the_rate(tmp_path):
    out = tmp_path / "big"
    result = _run("--out", str(out), "--subjects", "100", "--shape", "16,16,16", "--quiet")
    assert result.exit_code == 0, result.stderr
    cohort = load_cohort(out)
    cells = sum(len(s.record) for s in cohort.subjects)
    missing_rate = 1 - cells / (100 * 5)
    assert 0.05 < missing_rate < 0.16
    assert [s.id for s in cohort.subjects][-1] == "P099"
    assert cohort.has_ct


def test_spacing_scalar_or_per_axis(tmp_path):
    result = _run("--out", str(tmp_path / "s"), "--spacing", "0.8,0.8,2.5", *SMALL)
    assert result.exit_code == 0, result.stderr
    affine = PhantomOracle.from_cohort(tmp_path / "s").affine()
    assert np.allclose(np.diag(affine), [0.8, 0.8, 2.5, 1])


@pytest.mark.parametrize("args, message", [
    (["--shape", "16,16"], "Invalid value for '--shape': got '16,16'; give three integers X,Y,Z, "
                           "each from 16 to 1024"),
    (["--shape", "a,b,c"], "Invalid value for '--shape': got 'a,b,c'"),
    (["--shape", "8,16,16"], "Invalid value for '--shape': got '8,16,16'"),
    (["--spacing", "0"], "Invalid value for '--spacing': got '0'; give a voxel size in mm > 0"),
    (["--spacing", "-1,1,1"], "Invalid value for '--spacing': got '-1,1,1'"),
    (["--spacing", "nan"], "Invalid value for '--spacing': got 'nan'"),
    (["--spacing", "1,2"], "Invalid value for '--spacing': got '1,2'"),
    (["--subjects", "0"], "Invalid value for '--subjects': got 0; give an integer >= 1"),
    (["--seed", "-1"], "Invalid value for '--seed': got -1; give an integer >= 0"),
    (["--effects", "missing.json"], "missing.json: effects file not found"),
])
def test_invalid_option_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = _run("--out", str(out), *SMALL, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("cfx: error: ") and message in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, message", [
    ("{oops", "effects.json: not valid JSON"),
    ('{"weight": {}}', "effects.json: unknown attribute 'weight'"),
    ('{"mortality": {"reference": "alive", "values": {"dead": {"shift_hu": 30, '
     '"pattern": "base"}}}}', 'effects.json: mortality.values.dead.pattern: unknown pattern'),
    ('{"mortality": {"reference": "alive", "values": {"dead": {"shift_hu": "x", '
     '"pattern": "lung"}}}}', "effects.json: mortality.values.dead.shift_hu: expected a number"),
    ('{"age": {"slope_hu_per_unit": 1, "pattern": "lung"}}',
     "effects.json: age: missing field 'centre'"),
])
def test_invalid_effects_file_is_one_line_exit_2_and_writes_nothing(tmp_path, text, message):
    effects = tmp_path / "effects.json"
    effects.write_text(text)
    result = _run("--out", str(tmp_path / "out"), "--effects", str(effects), *SMALL)
    assert result.exit_code == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"cfx: error: {effects}") and message in line
    assert [p.name for p in tmp_path.iterdir()] == ["effects.json"]


def test_out_must_be_new_or_empty(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    result = _run("--out", str(full), *SMALL)
    assert result.exit_code == 2
    assert "Invalid value for '--out': " in result.stderr and "is a folder that is not empty" \
        in result.stderr
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    result = _run("--out", str(full / "keep.txt"), *SMALL)
    assert result.exit_code == 2 and "keep.txt is a file; give a new or empty folder" \
        in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run("--out", str(empty), *SMALL).exit_code == 0
    assert (empty / "truth.json").exists()


def test_a_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    import cfx.counterfactual.phantom.cohort as cohort_module

    written = []

    def failing_write(path, data, affine):
        if written:
            raise OSError("disk full")
        written.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    monkeypatch.setattr(cohort_module, "write_volume", failing_write)
    result = _run("--out", str(tmp_path / "out"), *SMALL)
    assert result.exit_code == 2  # an operating-system failure is one line, like a user error
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "disk full" in result.stderr
    assert written and list(tmp_path.iterdir()) == []
