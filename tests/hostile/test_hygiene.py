"""Hygiene: outputs get the permissions the user's umask gives, and the same inputs give the same
bytes (no creation date in PDFs or SVGs, renders byte-identical)."""

import os
import stat

import pytest
from typer.testing import CliRunner

from cfx.analysis.figures.output import new_figure, save_figure
from cfx.counterfactual.cli import app

runner = CliRunner()


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _modes(root):
    """{kind: set of permission bits} of every file and folder under ``root``."""
    out = {"file": set(), "dir": set()}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out["dir"].add(stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode))
        for name in files:
            out["file"].add(stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode))
    out["dir"].add(stat.S_IMODE(os.stat(root).st_mode))
    return out


def _ok(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [
    (0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)])
def test_phantom_sweep_and_render_outputs_follow_the_umask(work, umask, mask, file_mode,
                                                           dir_mode):
    umask(mask)
    _ok(["phantom", "--out", work / "cohort", "--subjects", "1", "--shape", "16,16,16", "-q"])
    _ok(["sweep", "-a", "smoking", "--values", "no,yes", "--cohort", work / "cohort",
         "--model", "phantom-oracle", "--out", work / "run", "-q"])
    _ok(["render", work / "run", "--size", "32", "-q"])
    for root in (work / "cohort", work / "run"):
        modes = _modes(root)
        assert {m & 0o777 for m in modes["file"]} == {file_mode}, root
        assert {m & 0o777 for m in modes["dir"]} == {dir_mode}, root


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_the_same_figure_gives_the_same_bytes(tmp_path, monkeypatch, fmt):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    paths = []
    for name in ("first", "second"):
        fig = new_figure(2, 1)
        fig.add_subplot().plot([0, 1], [1, 0])
        (path,) = save_figure(fig, tmp_path / name, formats=(fmt,))
        paths.append(path)
    first, second = (p.read_bytes() for p in paths)
    assert first == second
    assert b"CreationDate" not in first and b"<dc:date>" not in first


def test_render_twice_gives_the_same_bytes(run):
    _ok(["render", run, "--size", "32", "--gifs", "all", "-q"])  # every kind of output
    first = {p: p.read_bytes() for p in (run / "render").rglob("*") if p.is_file()}
    _ok(["render", run, "--size", "32", "--gifs", "all", "-q"])
    second = {p: p.read_bytes() for p in (run / "render").rglob("*") if p.is_file()}
    assert len(first) == 12 and first == second
