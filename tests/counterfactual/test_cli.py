import importlib
import inspect
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cfx.counterfactual import cli
from cfx.counterfactual.cli import app
from cfx.counterfactual.cli.app import COMMANDS, load_command
from cfx.counterfactual.volume import write_volume

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


_HEAVY = ("torch", "monai", "transformers", "pandas", "scipy", "matplotlib", "statsmodels",
          "numba", "nibabel")
_PROBE = """
import sys
from cfx.counterfactual.cli import app
sys.argv = ["cfx", *{args!r}]
try:
    app()
except SystemExit as exc:
    code = exc.code
print("EXIT", code, "HEAVY", sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["models", "list"], ["--version"]])
def test_help_and_models_list_import_no_heavy_library(args, tmp_path):
    """Start-up: ``cfx --help`` and ``cfx models list`` (which reads config.json and the cards)
    never import torch, nor the statistics and plotting stacks."""
    probe = subprocess.run([sys.executable, "-c", _PROBE.format(args=args, heavy=_HEAVY)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    last = probe.stderr.strip().splitlines()[-1]
    assert last == "EXIT 0 HEAVY []", probe.stderr
    assert probe.stdout.strip()  # it did print the help, the table or the version


def test_every_command_is_listed_with_its_own_help():
    """The table that lists commands without importing them gives the first paragraph of each
    command's real help, and names every command the modules of ``counterfactual/cli``
    register."""
    for name in COMMANDS:
        real = load_command(name)
        first = " ".join(inspect.cleandoc(real.help).split("\n\n")[0].split())
        assert COMMANDS[name][1] == first, name
    for module in pkgutil.iter_modules(cli.__path__):
        importlib.import_module(f"cfx.counterfactual.cli.{module.name}")
    assert set(typer.main.get_command(app).commands) == set(COMMANDS)


def test_a_command_runs_through_its_lazy_entry():
    result = runner.invoke(app, ["models", "--help"])
    assert result.exit_code == 0 and "List and describe generator checkpoints" in result.stdout
    result = runner.invoke(app, ["swep"])
    assert result.exit_code == 2 and "No such command 'swep'" in result.stderr
