"""Every pipeline command's output piped to a file (CliRunner: not a terminal): no table cell cut,
and each command ends naming where it wrote and the next command of the README pipeline."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.cli.app import COMMANDS

runner = CliRunner()


def _run(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    assert "…" not in result.output, result.output
    return result.output


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("piped")
    cohort, run = str(root / "a-cohort-folder-with-a-long-name"), str(root / "run")
    out = {"phantom": _run(["phantom", "--subjects", "3", "--shape", "16,16,16", "--out",
                            cohort])}
    out["validate"] = _run(["validate", cohort])
    out["sweep"] = _run(["sweep", "--cohort", cohort, "--attribute", "smoking", "--values",
                         "no,yes", "--model", "phantom-oracle", "--out", run])
    out["stats"] = _run(["stats", run, "--permutations", "20"])
    out["audit"] = _run(["audit", run])
    out["render"] = _run(["render", run, "--size", "16"])
    return run, out


def test_tables_are_whole_when_piped(outputs):
    run, out = outputs
    # the sweep summary's last cell is the run's absolute path, whole on one line
    assert re.search(r"\s" + re.escape(str(Path(run).resolve())) + r"\s",
                     out["sweep"])
    assert max(len(line) for line in out["stats"].splitlines()) > 80  # widened, not cut


@pytest.mark.parametrize("command, then", [("phantom", "cfx validate"), ("sweep", "cfx stats"),
                                           ("stats", "cfx audit"), ("audit", "cfx render"),
                                           ("render", "cfx report")])
def test_every_command_ends_with_where_it_wrote_and_the_next_step(outputs, command, then):
    run, out = outputs
    last = out[command].strip().splitlines()[-1]
    assert "next: " + then in last, last
    if command != "phantom":
        assert run in last


def test_sweep_summary_counts_the_groups_the_progress_counted(outputs):
    _, out = outputs
    progress = re.findall(r"sweep smoking: (\d+)/(\d+)", out["sweep"])
    assert progress and progress[-1][0] == progress[-1][1] == "3"  # 3 subjects x 1 seed
    header = next(line for line in out["sweep"].splitlines() if "groups" in line)
    row = out["sweep"].splitlines()[out["sweep"].splitlines().index(header) + 2]
    assert [c for c in re.split(r"[\s│┃]+", row) if c][:2] == ["3", "6"]  # 3 groups, 6 volumes


def test_help_keeps_brackets():
    assert "cfx[ray]" in runner.invoke(app, ["sweep", "--help"], terminal_width=200).output


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS), ["models", "list"],
                                     ["models", "show"]])
def test_every_help_shows_flags_as_flags(command):
    """No option of any command, --help and --body/--no-body included, prints a <bool> type."""
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--help" in result.output
    assert "<bool>" not in result.output, [line for line in result.output.splitlines()
                                            if "<bool>" in line]
