import numpy as np
import pytest

from cfx.analysis.audit import volume_distance


def test_distance_is_the_mean_and_largest_absolute_voxel_difference():
    a = np.zeros((2, 2, 2), np.float32)
    b = a.copy()
    b[0, 0, 0], b[1, 1, 1] = 8.0, -4.0
    distance = volume_distance(a, b)
    assert distance.mean_abs == pytest.approx(12.0 / 8)
    assert distance.max_abs == 8.0
    assert volume_distance(b, b) == volume_distance(a, a)
    assert volume_distance(a, a).max_abs == 0.0


@pytest.mark.parametrize(("a", "b", "message"), [
    (np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), r"a has shape \(2, 2, 2\) but b has shape"),
    (np.zeros((0, 2, 2)), np.zeros((0, 2, 2)), "empty"),
    (np.full((2, 2, 2), np.nan), np.zeros((2, 2, 2)), "non-finite"),
])
def test_bad_volumes_are_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        volume_distance(a, b)
