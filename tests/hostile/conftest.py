"""Hostile inputs: every case must end in exit code 2, one line on stderr naming the file or field,
no traceback, and no file created or changed anywhere under the test's folder.

Each test works in ``tmp_path/a/b/c/d/work`` so that a path escaping its root by up to four
levels still lands inside ``tmp_path``, where :func:`refused` sees it.
"""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.volume import write_volume
from tests.conftest import oracle_run

runner = CliRunner()
SHAPE = (16, 16, 16)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed): kind, mode and content hash or target."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", info.st_mode)
            else:
                out[rel] = ("file", info.st_mode, info.st_mtime_ns,
                            hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture
def refused(tmp_path):
    """``refused(args, *fragments)``: run ``cfx args``; assert exit 2, one ``cfx: error:`` line
    holding every fragment, no traceback, and nothing under ``tmp_path`` created or changed."""

    def check(args, *fragments, root: Path = tmp_path) -> str:
        before = snapshot(root)
        result = runner.invoke(app, [str(a) for a in args])
        output = result.stdout + result.stderr
        assert result.exit_code == 2, (result.exit_code, output, result.exception)
        assert "Traceback" not in output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("cfx: error: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], (fragment, lines[0])
        assert snapshot(root) == before
        return lines[0]

    return check


@pytest.fixture
def work(tmp_path) -> Path:
    """A folder four levels below ``tmp_path``."""
    folder = tmp_path / "a" / "b" / "c" / "d" / "work"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    """A tiny phantom cohort (2 subjects, 16³) and a swept run of it with statistics, made once
    through the CLI: ``phantom/`` and ``run/``."""
    root = tmp_path_factory.mktemp("pristine")
    oracle_run(root)
    return root


@pytest.fixture
def phantom(pristine, work) -> Path:
    """A private copy of the phantom cohort."""
    return Path(shutil.copytree(pristine / "phantom", work / "phantom"))


@pytest.fixture
def run(pristine, work) -> Path:
    """A private copy of the swept run (with ``stats/``)."""
    return Path(shutil.copytree(pristine / "run", work / "run"))


@pytest.fixture
def labels() -> np.ndarray:
    """A 16³ label map: left lung, right lung, airway."""
    data = np.zeros(SHAPE, np.int16)
    data[2:7, 3:13, 3:12] = 1
    data[9:14, 3:13, 3:12] = 2
    data[7:9, 7:9, 6:15] = 3
    return data


@pytest.fixture
def cohort(work, labels) -> Path:
    """A cohort folder of two subjects (masks and CTs on a 1.5 mm grid) and clinical.csv."""
    root = work / "cohort"
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    for sid in ("A", "B"):
        write_volume(root / "masks" / f"{sid}.nii.gz", labels, affine)
        write_volume(root / "ct" / f"{sid}.nii.gz", np.where(labels > 0, -850, 40), affine)
    (root / "clinical.csv").write_text("subject,age,smoking\nA,60,yes\nB,70,no\n")
    return root
