"""TFCE against nilearn's calculate_tfce and a hand computation, by both routes (the compiled
kernel and the scipy labelling of a cold process's small calls); the compiled kernel's cache."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import cfx.analysis.tfce as tfce_module
from cfx import analysis
from cfx.analysis import _tfce_kernel
from cfx.analysis.tfce import tfce

nilearn_utils = pytest.importorskip("nilearn.mass_univariate._utils")

_STRUCTURE_RANK = {6: 1, 18: 2, 26: 3}


def nilearn_tfce(stat_map, connectivity=6, two_sided=True):
    structure = ndimage.generate_binary_structure(3, _STRUCTURE_RANK[connectivity])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = nilearn_utils.calculate_tfce(
            stat_map[..., np.newaxis], structure, two_sided_test=two_sided
        )
    return scores[..., 0]


@pytest.fixture(params=["kernel", "labels"])
def route(request, monkeypatch):
    """Every call of ``tfce`` goes through the compiled kernel, or through scipy labelling (as a
    small call does when the kernel is neither compiled nor cached)."""
    labels = request.param == "labels"
    monkeypatch.setattr(tfce_module, "kernel_ready", lambda: not labels)
    monkeypatch.setattr(tfce_module, "_LABEL_BUDGET", np.inf)
    return request.param


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("two_sided", [True, False])
def test_equals_nilearn_on_smooth_random_maps(rng, connectivity, two_sided, route):
    for _ in range(3):
        stat_map = ndimage.gaussian_filter(rng.standard_normal((14, 11, 9)), 1.0) * 4.0
        expected = nilearn_tfce(stat_map, connectivity, two_sided)
        result = tfce(stat_map, connectivity=connectivity, two_sided=two_sided)
        np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-9)
        assert (result > 0).any() and (two_sided == (result < 0).any())


def test_equals_nilearn_on_white_noise_t_map_of_both_signs(rng, route):
    stat_map = rng.standard_normal((20, 20, 20)) * 2.0
    expected = nilearn_tfce(stat_map)
    result = tfce(stat_map)
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-9)
    first_step = np.abs(stat_map).max() / 100
    reached = np.abs(stat_map) >= first_step
    assert np.all(np.sign(result[reached]) == np.sign(stat_map[reached]))
    assert np.all(result[~reached] == 0.0)


def test_batch_equals_maps_one_by_one(rng, route):
    maps = rng.standard_normal((4, 8, 7, 6))
    maps[2] = 0.0  # an all-zero map has no threshold above 0
    batch = tfce(maps)
    for stat_map, scores in zip(maps, batch, strict=True):
        np.testing.assert_allclose(scores, tfce(stat_map), rtol=1e-11)  # summation order
    assert np.all(batch[2] == 0.0)


def test_hand_computed_two_voxel_cluster(route):
    # values 1 and 2 side by side; thresholds 0.02, 0.04, ..., 2.00 (100 steps up to max=2)
    stat_map = np.zeros((3, 1, 1))
    stat_map[0, 0, 0], stat_map[1, 0, 0] = 1.0, 2.0
    heights = np.linspace(0, 2.0, 101)[1:]
    low = heights[heights <= 1.0]
    high = heights[heights > 1.0]
    expected_first = np.sum(np.sqrt(2) * low**2)
    expected_second = expected_first + np.sum(high**2)
    result = tfce(stat_map)
    assert result[0, 0, 0] == pytest.approx(expected_first, rel=1e-12)
    assert result[1, 0, 0] == pytest.approx(expected_second, rel=1e-12)
    assert result[2, 0, 0] == 0.0


def test_custom_powers_and_steps_match_the_definition(rng, route):
    stat_map = rng.standard_normal((6, 5, 4))
    stat_map[stat_map < 0] = 0.0
    n_steps, extent, height = 7, 1.0, 1.0
    heights = np.linspace(0, stat_map.max(), n_steps + 1)[1:]
    expected = np.zeros_like(stat_map)
    structure = ndimage.generate_binary_structure(3, 1)
    for h in heights:
        labels, _ = ndimage.label(stat_map >= h, structure)
        sizes = np.bincount(labels.ravel())
        expected += np.where(labels > 0, sizes[labels] ** extent * h**height, 0.0)
    result = tfce(stat_map, extent_power=extent, height_power=height, n_steps=n_steps)
    np.testing.assert_allclose(result, expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("stat_maps", "kwargs", "message"),
    [
        (np.zeros((4, 4)), {}, "stat_maps: got an array with shape \\(4, 4\\)"),
        (np.full((3, 3, 3), np.nan), {}, "NaN or infinite"),
        (np.zeros((3, 3, 3)), {"extent_power": 0}, "extent_power, height_power: got 0"),
        (np.zeros((3, 3, 3)), {"n_steps": 0}, "n_steps: got 0"),
        (np.zeros((3, 3, 3)), {"connectivity": 8}, "connectivity: got 8"),
    ],
)
def test_invalid_inputs_raise(stat_maps, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfce(stat_maps, **kwargs)


def test_every_call_pattern_runs_one_compiled_kernel(rng, monkeypatch):
    """Single maps, batches, one-sided, other powers and neighbourhoods, float32 input: one
    signature, so a fresh process never compiles the kernel twice (a row of a column slice once
    made a second one)."""
    monkeypatch.setattr(tfce_module, "_LABEL_BUDGET", 0)  # the kernel, whatever the cache
    maps = rng.standard_normal((3, 6, 5, 4))
    tfce(maps[0])
    tfce(maps)
    tfce(maps.astype(np.float32), two_sided=False, extent_power=1.0, height_power=1.5,
         n_steps=7, connectivity=26)
    tfce(np.zeros((4, 4, 4)))
    assert len(_tfce_kernel._sweep.signatures) == 1


_READ_ONLY_CHILD = """
import json, sys
import numpy as np
from cfx import analysis
import cfx.analysis.tfce as tfce_module
from cfx.analysis import _tfce_kernel
from cfx.analysis.tfce import tfce
tfce_module._LABEL_BUDGET = 0  # the kernel, not the labelling of small cold calls
scores = tfce(np.load(sys.argv[1]))
stats = _tfce_kernel._sweep.stats
print(json.dumps({"package": analysis.__file__, "cache": stats.cache_path,
                  "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()), "scores": scores.tolist()}))
"""


def _read_only_mount_works(tmp_path):
    source, target = tmp_path / "probe_source", tmp_path / "probe_target"
    source.mkdir()
    target.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {source} {target} && "
         f"mount -o remount,bind,ro {target} && ! touch {target}/x"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_read_only_install_compiles_once_into_the_user_cache(tmp_path, rng):
    """The package folder on a read-only file system, ``NUMBA_CACHE_DIR`` unset: the first
    process compiles and caches under the user's cache folder, the second loads from there."""
    if shutil.which("unshare") is None or not _read_only_mount_works(tmp_path):
        pytest.skip("needs unshare and mount (a private read-only bind mount)")
    source, mounted, home = tmp_path / "site", tmp_path / "mounted", tmp_path / "home"
    package = Path(analysis.__file__).parent
    shutil.copytree(
        package, source / "cfx" / "analysis", ignore=shutil.ignore_patterns("__pycache__")
    )
    mounted.mkdir()
    home.mkdir()
    stat_map = rng.standard_normal((9, 8, 7)) * 2.0
    np.save(tmp_path / "map.npy", stat_map)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(mounted))
    script = (f"mount --bind {source} {mounted} && mount -o remount,bind,ro {mounted} && "
              f"cd {tmp_path} && {sys.executable} -c '{_READ_ONLY_CHILD}' {tmp_path / 'map.npy'}")
    runs = []
    for _ in range(2):
        done = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env,
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout))
    for run in runs:
        assert run["package"] == str(mounted / "cfx" / "analysis" / "__init__.py")
        assert Path(run["cache"]).is_relative_to(home / ".cache" / "numba")
        np.testing.assert_allclose(run["scores"], nilearn_tfce(stat_map), rtol=1e-10)
    assert (runs[0]["misses"], runs[0]["hits"]) == (1, 0)  # compiled once, then cached
    assert (runs[1]["misses"], runs[1]["hits"]) == (0, 1)  # loaded, not compiled
    assert not list(source.rglob("*.nbi"))  # nothing written next to the read-only sources


def test_permutation_null_on_a_cropped_grid_in_blocks_equals_full_grid_tfce(rng, monkeypatch):
    """The permutation null crops TFCE to the mask's bounding box and computes the permuted
    t-maps in blocks of draws: the maxima equal TFCE of every permuted t-map on the full grid."""
    from cfx.analysis import permutation

    monkeypatch.setattr(permutation, "_CHUNK_BYTES", 8 * 40 * 16)  # 40 tested: blocks of 16
    data = rng.standard_normal((7, 9, 8, 7))
    mask = np.zeros((9, 8, 7), dtype=bool)
    mask[5:8, 1:5, 3:7] = True  # off-centre: the box is a corner of the grid
    mask[6, 2, 4] = False  # a hole
    flips = np.where(rng.random((37, 7)) < 0.5, -1.0, 1.0)  # 3 blocks, the last one partial
    result = permutation.one_sample_permutation(data, 37, tfce=True, mask=mask, sign_flips=flips)
    expected = []
    for signs in flips:
        flipped = data * signs[:, None, None, None]
        t = flipped.mean(0) / (flipped.std(0, ddof=1) / np.sqrt(7))
        expected.append(np.abs(tfce(np.where(mask, t, 0.0))).max())
    np.testing.assert_allclose(result.h0_max_tfce, expected, rtol=1e-10)
    t_obs = np.where(mask, result.t, 0.0)
    np.testing.assert_allclose(result.tfce[mask], nilearn_tfce(t_obs)[mask], rtol=1e-10)


def test_small_calls_are_labelled_only_while_the_kernel_would_compile(rng, monkeypatch):
    calls = []
    monkeypatch.setattr(tfce_module, "tfce_maps_labelled",
                        lambda *args: calls.append("labels") or np.zeros(args[0].shape))
    monkeypatch.setattr(tfce_module, "tfce_maps",
                        lambda *args: calls.append("kernel") or np.zeros(args[0].shape))
    small = rng.standard_normal((2, 10, 10, 10))  # 2 x 1000 voxels x 100 steps x 2 signs
    monkeypatch.setattr(tfce_module, "_LABEL_BUDGET", 2 * 1000 * 100 * 2)
    for ready in (False, True):
        monkeypatch.setattr(tfce_module, "kernel_ready", lambda ready=ready: ready)
        tfce(small)
        tfce(small[0], two_sided=False, n_steps=150)  # 1000 x 150 x 1: within the budget
        tfce(np.concatenate([small, small[:1]]))  # 3 maps: over the budget
    assert calls == ["labels", "labels", "kernel", "kernel", "kernel", "kernel"]


_PROBE_CHILD = """
import json
import numpy as np
from cfx.analysis import _tfce_kernel
from cfx.analysis.tfce import tfce
before = _tfce_kernel.kernel_ready()
tfce(np.arange(27.0).reshape(3, 3, 3) - 13)  # small: labelled unless the kernel is ready
labelled = not _tfce_kernel._sweep.signatures
tfce(np.ones((2, 60, 60, 60)))  # over the budget: compiled (or loaded)
print(json.dumps([before, labelled, _tfce_kernel.kernel_ready()]))
"""


def test_kernel_ready_reads_numbas_cache_without_compiling(tmp_path):
    """A fresh process with an empty cache labels a small map and compiles only for a large
    call; the next process finds the kernel in the cache and never labels."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [json.loads(subprocess.run([sys.executable, "-c", _PROBE_CHILD], env=env, check=True,
                                      capture_output=True, text=True).stdout)
            for _ in range(2)]
    assert runs == [[False, True, True], [True, False, True]]
