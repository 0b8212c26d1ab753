"""Viewer-ready statistic maps: exact voxels, -log10 p, intents, outside values, sidecars."""

import numpy as np
import pytest

from cfx.analysis.permutation import one_sample_permutation
from cfx.analysis.statmaps import stat_maps


@pytest.fixture
def planted(rng):
    data = rng.standard_normal((9, 6, 6, 4))
    data[:, 0, 0, 0] = 5.0  # constant: t = +inf
    data[:, 0, 0, 1] = -3.0 + rng.normal(0, 1e-6, 9)  # constant up to rounding: |t| ~ 1e7
    data[:, 2:5, 2:5, 1:3] += 1.5
    tested = np.ones(data.shape[1:], bool)
    tested[5] = False
    return data, tested


def _by_stat(maps):
    return {m.stat: m for m in maps}


def test_exact_voxels_are_nan_in_t_and_signed_in_the_exact_map(planted):
    data, tested = planted
    result = one_sample_permutation(data, 200, mask=tested, random_state=0)
    assert np.isinf(result.t[0, 0, 0]) and abs(result.t[0, 0, 1]) > 1e5
    maps = _by_stat(stat_maps(result, tested, resolution=1e-3))
    t, exact = maps["t"].values, maps["exact"].values
    assert np.isnan(t[0, 0, 0]) and np.isnan(t[0, 0, 1])
    assert exact[0, 0, 0] == 1 and exact[0, 0, 1] == -1
    assert np.count_nonzero(exact) == 2 and np.isnan(t).sum() == 2
    finite = tested & ~np.isnan(t)
    np.testing.assert_allclose(t[finite], result.t[finite].astype(np.float32))
    assert maps["t"].sidecar["voxels_exact"] == 2
    # without a resolution only the infinite t is exact
    strict = _by_stat(stat_maps(result, tested))
    assert np.count_nonzero(strict["exact"].values) == 1
    assert strict["t"].values[0, 0, 1] == np.float32(result.t[0, 0, 1])


def test_no_exact_map_when_no_voxel_is_exact(rng):
    data = rng.standard_normal((6, 4, 4, 3))
    result = one_sample_permutation(data, 10, random_state=0)
    stats = [m.stat for m in stat_maps(result, np.ones((4, 4, 3), bool), resolution=1e-3)]
    assert stats == ["mean", "t", "pfwe", "logpfwe", "qfdr"]


def test_log_p_intents_outside_values_and_sidecars(planted):
    data, tested = planted
    result = one_sample_permutation(data, 200, mask=tested, random_state=0, tfce=False)
    maps = _by_stat(stat_maps(result, tested, description="demo"))
    np.testing.assert_allclose(maps["logpfwe"].values[tested],
                               -np.log10(result.p_fwe[tested]), rtol=1e-6)
    assert maps["t"].intent == "t test" and maps["t"].intent_params == (8.0,)
    assert maps["pfwe"].intent == "p value" and maps["qfdr"].intent == "p value"
    assert maps["mean"].intent == "estimate" and maps["logpfwe"].intent == "none"
    assert all(len(m.intent_name) <= 16 for m in maps.values())
    for stat, outside in {"mean": 0, "t": 0, "exact": 0, "pfwe": 1, "logpfwe": 0,
                          "qfdr": 1}.items():
        assert np.all(maps[stat].values[~tested] == outside), stat
        assert maps[stat].values.dtype == np.float32
        sidecar = maps[stat].sidecar
        assert sidecar["outside_tested_value"] == outside and sidecar["description"] == "demo"
        assert sidecar["permutations"] == 200 and sidecar["exhaustive"] is False
    assert maps["pfwe"].sidecar["smallest_counted_p"] == pytest.approx(1 / 201)
    assert maps["pfwe"].sidecar["tail"] == "none"


def test_tfce_maps_and_tested_only_results(rng):
    data = rng.standard_normal((6, 5, 5, 4))
    data[:, 1:4, 1:4, 1:3] += 1.0
    tested = np.ones((5, 5, 4), bool)
    result = one_sample_permutation(data, 1000, tfce=True, random_state=0)
    maps = _by_stat(stat_maps(result, tested))
    assert result.exhaustive and maps["ptfce"].sidecar["exhaustive"] is True
    np.testing.assert_allclose(maps["logptfce"].values, -np.log10(result.p_tfce), rtol=1e-6)
    assert maps["ptfce"].sidecar["correction"].startswith("FWE, max-TFCE")
    assert maps["pfwe"].sidecar["smallest_counted_p"] == 1 / 32
    # a result on the tested voxels only (2-D data) is put back on the grid
    flat = one_sample_permutation(data[:, tested], 1000)
    np.testing.assert_array_equal(_by_stat(stat_maps(flat, tested))["pfwe"].values,
                                  maps["pfwe"].values)
    with pytest.raises(ValueError, match="does not match the result's mean map"):
        stat_maps(flat, np.ones((5, 5, 5), bool))
