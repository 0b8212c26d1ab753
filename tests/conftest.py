"""Shared fixtures: a seeded generator and tiny volumes on non-trivial grids; benchmark modules."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def oracle_run(root: Path, subjects: int = 2, seeds: str = "0") -> Path:
    """``root/phantom`` (``subjects`` phantoms of 16³) swept over smoking no/yes at ``seeds``
    with the phantom oracle, and its statistics, all through the CLI; returns ``root/run``."""
    from typer.testing import CliRunner

    from cfx.counterfactual.cli import app

    for args in (["phantom", "--out", root / "phantom", "--subjects", subjects, "--shape",
                  "16,16,16", "-q"],
                 ["sweep", "-a", "smoking", "--values", "no,yes", "--seeds", seeds, "--cohort",
                  root / "phantom", "--model", "phantom-oracle", "--out", root / "run", "-q"],
                 ["stats", root / "run", "-q"]):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.stderr
    return root / "run"


def cli_error(args: list[str]) -> str:
    """Run ``cfx ARGS``, which must fail as a user error: exit 2 and one ``cfx: error:`` line on
    stderr, returned."""
    from typer.testing import CliRunner

    from cfx.counterfactual.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cfx: error: "), result.stderr
    return lines[0]


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def recovery():
    """``benchmarks/recovery.py``, the held-out phantom evaluation of learned models."""
    return load_benchmark("recovery")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one torch thread (far faster than on busy shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def quick_level_fit(monkeypatch):
    """A new levelled run of the tests fits its label levels on 64 rows unless told otherwise
    (the default 4096 takes seconds per tiny run; ``--level-rows`` tests say what they give)."""
    from cfx.models.architectures import diffusion, gan
    for module in (gan, diffusion):
        monkeypatch.setattr(module, "LEVEL_ROWS", 64)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def affine():
    """An oblique, anisotropic RAS affine with a flipped axis (kept as is by cfx)."""
    c, s = np.cos(0.2), np.sin(0.2)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]])
    out = np.eye(4)
    out[:3, :3] = rotation @ np.diag([0.75, 0.8, 2.5])
    out[:3, 3] = [-120.5, 80.25, 310.0]
    return out.astype(np.float32).astype(np.float64)  # NIfTI stores float32


@pytest.fixture
def labels(rng):
    """Label map (16, 12, 10) int16 with left lung, right lung and airway."""
    data = np.zeros((16, 12, 10), np.int16)
    data[9:14, 2:10, 2:8] = 1
    data[2:7, 2:10, 2:8] = 2
    data[7:9, 5:7, 4:10] = 3
    return data
