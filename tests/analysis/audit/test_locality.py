import math

import numpy as np
import pytest

from cfx.analysis.audit import change_locality, pool_locality


@pytest.fixture
def inside():
    mask = np.zeros((4, 3, 2), bool)
    mask[:2] = True  # 12 voxels inside, 12 outside
    return mask


def test_locality_by_hand(inside):
    difference = np.zeros(inside.shape)
    difference[0, 0, 0], difference[1, 2, 1] = 30.0, -10.0  # inside: |d| sums to 40
    difference[3, 1, 0] = -6.0  # outside: 6 over 12 voxels
    part = change_locality(difference, inside)
    assert (part.n_inside, part.n_outside) == (12, 12)
    assert part.share_inside == pytest.approx(40 / 46)
    assert part.mean_abs_inside == pytest.approx(40 / 12)
    assert part.mean_abs_outside == pytest.approx(6 / 12)
    assert part.max_abs_outside == 6.0
    assert part.mean_inside == pytest.approx((30 - 10) / 12)  # signed: the edit's size


def test_pooling_weights_every_voxel_alike(inside, rng):
    maps = [rng.normal(0, s, inside.shape) for s in (1.0, 5.0, 20.0)]
    pooled = pool_locality(change_locality(m, inside) for m in maps)
    stacked = np.abs(np.stack(maps))
    assert pooled.share_inside == pytest.approx(stacked[:, inside].sum() / stacked.sum())
    assert pooled.mean_abs_outside == pytest.approx(stacked[:, ~inside].mean())
    assert pooled.max_abs_outside == pytest.approx(stacked[:, ~inside].max())
    assert pooled.mean_inside == pytest.approx(np.stack(maps)[:, inside].mean())


def test_no_change_has_no_share_and_a_whole_mask_has_no_outside(inside):
    part = change_locality(np.zeros(inside.shape), inside)
    assert math.isnan(part.share_inside) and part.mean_abs_outside == 0.0
    everything = change_locality(np.ones(inside.shape), np.ones(inside.shape, bool))
    assert everything.share_inside == 1.0 and math.isnan(everything.mean_abs_outside)
    assert everything.max_abs_outside == 0.0


@pytest.mark.parametrize(("difference", "mask", "message"), [
    (np.zeros((4, 3, 2)), np.zeros((4, 3, 2), int), "inside: expected a boolean mask"),
    (np.zeros((4, 3, 2)), np.zeros((4, 3, 3), bool), "inside: expected a boolean mask"),
    (np.zeros((4, 3, 2)), np.zeros((4, 3, 2), bool), "inside: the region is empty"),
    (np.full((4, 3, 2), np.inf), np.ones((4, 3, 2), bool), "non-finite"),
])
def test_bad_inputs_are_refused(difference, mask, message):
    with pytest.raises(ValueError, match=message):
        change_locality(difference, mask)


def test_pooling_nothing_is_refused():
    with pytest.raises(ValueError, match="parts: expected at least one"):
        pool_locality([])
