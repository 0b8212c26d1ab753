import numpy as np
import pytest
from typer.testing import CliRunner

from counterfactual.cli import app
from counterfactual.volume import write_volume

runner = CliRunner()


@pytest.fixture
def cohort(tmp_path, labels, affine):
    root = tmp_path / "cohort"
    for sid in ("A", "B"):
        write_volume(root / "masks" / f"{sid}.nii.gz", labels, affine)
        write_volume(root / "ct" / f"{sid}.nii.gz", np.full(labels.shape, -850.0), affine)
    (root / "clinical.csv").write_text("subject,age\nA,60\nB,70\n")
    return root


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "validate" in result.stdout
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("cfx ")


def test_unknown_option_is_one_line_exit_2():
    result = runner.invoke(app, ["--bogus"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("cfx: error: No such option: --bogus")


def test_validate_prints_a_table_of_valid_subjects(cohort, labels):
    result = runner.invoke(app, ["validate", str(cohort), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert "2 subjects, all valid" in result.stdout
    lung_ml = ((labels == 1) | (labels == 2)).sum() * 0.75 * 0.8 * 2.5 / 1000
    assert f"{lung_ml:.1f}" in result.stdout


def test_user_error_is_one_line_and_verbose_adds_the_traceback(cohort, affine):
    write_volume(cohort / "ct" / "B.nii.gz", np.zeros((3, 3, 3)), affine)
    result = runner.invoke(app, ["validate", str(cohort), "--quiet"])
    assert result.exit_code == 2
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("cfx: error: ") and "B.nii.gz has shape (3, 3, 3)" in line
    verbose = runner.invoke(app, ["--verbose", "validate", str(cohort), "--quiet"])
    assert verbose.exit_code == 2
    assert "Traceback" in verbose.stderr and "check_same_grid" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == line


def test_region_absent_from_a_mask(cohort, labels, affine):
    write_volume(cohort / "masks" / "A.nii.gz", np.where(labels == 3, 0, labels), affine)
    result = runner.invoke(app, ["validate", str(cohort), "--region", "airway", "-q"])
    assert result.exit_code == 2
    assert "A.nii.gz: region 'airway' is absent" in result.stderr


def test_unknown_region_and_missing_cohort(tmp_path, cohort):
    result = runner.invoke(app, ["validate", str(cohort), "--region", "liver"])
    assert result.exit_code == 2 and "region 'liver' is not defined" in result.stderr
    result = runner.invoke(app, ["validate", str(tmp_path / "none")])
    assert result.exit_code == 2 and "none: cohort not found" in result.stderr
