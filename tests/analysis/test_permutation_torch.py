"""The max-T null in torch (cfx.analysis.permutation_torch) against the numpy
path and brute force."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import cfx.analysis.permutation_torch as permutation_torch
from cfx.analysis.permutation import one_sample_permutation

torch = pytest.importorskip("torch")

ALTERNATIVES = ("two-sided", "greater", "less")


def _planted(rng, n_subjects=10, n_voxels=2500):
    """Noise with an effect of 2.5 sd in the first 40 voxels and -2.5 sd in the next 40."""
    data = rng.standard_normal((n_subjects, n_voxels))
    data[:, :40] += 2.5
    data[:, 40:80] -= 2.5
    return data


def _brute_force_max_t(data, flips, alternative):
    """Per flip, the max over voxels of scipy's t of the flipped data (|t| when two-sided)."""
    t = np.stack([stats.ttest_1samp(s[:, None] * data, 0.0).statistic for s in flips])
    oriented = np.abs(t) if alternative == "two-sided" else (t if alternative == "greater"
                                                             else -t)
    return oriented.max(axis=1)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_torch_cpu_equals_the_numpy_path(rng, alternative):
    data = _planted(rng, n_subjects=12)  # 2^11 flips: 600 random draws, tail fitted
    numpy_result = one_sample_permutation(data, 600, alternative=alternative, tail="gpd")
    torch_result = one_sample_permutation(data, 600, alternative=alternative, tail="gpd",
                                          device="cpu")
    np.testing.assert_array_equal(torch_result.t, numpy_result.t)
    # the same winners, recomputed by the same float64 expression: equal to the last bit
    np.testing.assert_array_equal(torch_result.h0_max_t, numpy_result.h0_max_t)
    np.testing.assert_array_equal(torch_result.p_fwe, numpy_result.p_fwe)
    assert torch_result.tail_fit_t.params == numpy_result.tail_fit_t.params
    assert np.sum(numpy_result.p_fwe < 0.05) >= 20  # the planted voxels are found


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_torch_null_maxima_equal_scipy_brute_force(rng, alternative):
    data = _planted(rng, n_subjects=9, n_voxels=400)
    flips = 2.0 * rng.integers(0, 2, size=(64, 9)) - 1.0
    result = one_sample_permutation(data, 64, sign_flips=flips, alternative=alternative,
                                    device="cpu")
    np.testing.assert_allclose(result.h0_max_t, _brute_force_max_t(data, flips, alternative),
                               rtol=1e-10)


def test_torch_chunks_give_the_same_maxima_as_one_block(rng, monkeypatch):
    data = _planted(rng, n_voxels=1000)
    whole = one_sample_permutation(data, 200, device="cpu")
    # 200 draws x 37 voxels x 4 bytes per block: 28 chunks, the last one partial
    monkeypatch.setitem(permutation_torch._CHUNK_BYTES, "cpu", 200 * 37 * 4)
    chunked = one_sample_permutation(data, 200, device="cpu")
    np.testing.assert_array_equal(chunked.h0_max_t, whole.h0_max_t)
    np.testing.assert_array_equal(chunked.p_fwe, whole.p_fwe)


def test_the_winner_of_each_chunk_is_the_peak_voxel(rng):
    normalised = rng.standard_normal((6, 50))
    flips = 2.0 * rng.integers(0, 2, size=(30, 6)) - 1.0
    (block, winner), = permutation_torch.winners_torch(flips, normalised, "two-sided", "cpu")
    assert block.shape == normalised.shape
    np.testing.assert_array_equal(winner, np.abs(flips @ normalised).argmax(axis=1))


@pytest.mark.parametrize(("device", "message"), [
    ("tpu", r"^device: got 'tpu'; expected None \(numpy\), 'cpu' or 'cuda'"),
    ("meta", r"^device: got 'meta'; expected None \(numpy\), 'cpu' or 'cuda'\.$"),
    ("cuda:7", r"^device: got 'cuda:7' but torch sees \d+ CUDA GPU\(s\); use device=None "),
])
def test_a_device_torch_cannot_use_is_refused(rng, device, message):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ValueError, match=message):
        one_sample_permutation(rng.standard_normal((5, 20)), 10, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_cuda_without_a_gpu_is_refused(rng):
    with pytest.raises(ValueError, match=r"^device: got 'cuda' but torch sees 0 CUDA GPU"):
        one_sample_permutation(rng.standard_normal((5, 20)), 10, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_the_numpy_path_within_float32_ties(rng):
    data = _planted(rng, n_subjects=20, n_voxels=50_000)
    numpy_result = one_sample_permutation(data, 1000)
    cuda_result = one_sample_permutation(data, 1000, device="cuda")
    # float32 products: a winner can differ only between voxels tied within float32 rounding
    np.testing.assert_allclose(cuda_result.h0_max_t, numpy_result.h0_max_t, rtol=1e-6)
    assert np.mean(cuda_result.h0_max_t == numpy_result.h0_max_t) > 0.99
    assert np.max(np.abs(cuda_result.p_fwe - numpy_result.p_fwe)) <= 2 / 1001


def test_importing_analysis_does_not_import_torch():
    code = ("import sys, cfx.analysis.permutation, cfx.analysis.permutation_torch, "
            "cfx.analysis.tfce; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_exhaustive_flips_run_in_torch_too(rng):
    data = _planted(rng, n_subjects=8, n_voxels=300)
    numpy_result = one_sample_permutation(data, 1000)
    torch_result = one_sample_permutation(data, 1000, device="cpu")
    assert torch_result.exhaustive and torch_result.n_permutations == 128
    np.testing.assert_array_equal(torch_result.h0_max_t, numpy_result.h0_max_t)
    np.testing.assert_array_equal(torch_result.p_fwe, numpy_result.p_fwe)
