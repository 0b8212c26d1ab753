"""``benchmarks/voxelwise_end_to_end.py --quick``: every timed step runs at tiny sizes, cfx and
nilearn agree on the same flips, and the cold-start children report their first call."""

import numpy as np
import pytest

from tests.conftest import load_benchmark

pytest.importorskip("nilearn")


@pytest.fixture(scope="module")
def end_to_end():
    return load_benchmark("voxelwise_end_to_end")


def test_quick_run_times_every_tool_and_agrees_with_nilearn(end_to_end, capsys):
    figures = end_to_end.main(["--quick"])
    printed = capsys.readouterr().out

    # the same statistic and the same FWE p-values as nilearn on the same flips
    assert figures["tfce map vs nilearn"] < 1e-10
    assert figures["p_tfce vs nilearn"] == 0.0
    timed = ("cfx", "nilearn", "cold tfce map", "warm tfce map", "cold end to end",
             "warm end to end", "cfx max-T", "cfx max-T torch cpu", "GEMM float32",
             "GEMM float64")
    assert all(np.isfinite(figures[name]) and figures[name] > 0 for name in timed)
    assert "EXTRAPOLATED" in printed and "target >= 50x" in printed
    assert ("tfce package" in printed) and ("target <= 3x" in printed)


def test_lung_data_tests_the_lungs_with_a_planted_upper_left_effect(end_to_end):
    data, mask = end_to_end.lung_data(6, (16, 16, 16))
    assert data.shape == (6, 16, 16, 16) and mask.dtype == bool
    assert 0 < mask.sum() < mask.size
    # the planted 0.8 sd shows in the cohort mean of the upper left lung only
    mean = data.mean(axis=0)
    shifted = mean - np.median(mean)
    upper = np.arange(16) > 0.6 * 16
    labels = end_to_end.build_anatomy((16, 16, 16), end_to_end.SEED).labels
    assert shifted[(labels == 1) & upper].mean() > 0.5
    assert abs(shifted[(labels == 2)].mean()) < 0.3
