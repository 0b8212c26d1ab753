import numpy as np
import pytest
from scipy import ndimage

from analysis.controls import BODY, CONTROL_REGIONS, MARGIN, OUTSIDE_BODY, control_labels
from counterfactual.phantom.anatomy import _Grid, _sample_params, _superellipse, build_anatomy

SHAPE, SEED = (32, 30, 28), 5


@pytest.fixture(scope="module")
def anatomy():
    return build_anatomy(SHAPE, SEED)


def _outside_outline(shape, seed):
    """The phantom's body outline drawn again from its parameters: True outside the body."""
    p = _sample_params(np.random.default_rng(seed))  # build_anatomy's first draw
    g = _Grid.of(shape)
    xc, yc = g.x - np.float32(p["cx"]), g.y - np.float32(p["cy"])
    a, b = p["body_a"] * (1.0 + 0.04 * g.z), p["body_b"]
    return np.broadcast_to(_superellipse(xc / a, yc / b) > 1, shape)


@pytest.mark.parametrize("noise", [0.0, 25.0])
def test_outside_body_is_the_phantoms_air_around_its_outline(anatomy, noise):
    ct = anatomy.base + np.random.default_rng(0).normal(0, noise, SHAPE).astype(np.float32)
    regions = control_labels(ct, anatomy.labels)
    # the spine's spinous process may reach past the outline; it is tissue, not air
    expected = _outside_outline(SHAPE, SEED) & (anatomy.base == -1000.0)
    assert expected.sum() > 1000
    np.testing.assert_array_equal(regions == OUTSIDE_BODY, expected)


def test_body_keeps_internal_air_and_leaves_the_masked_structures_out(anatomy):
    regions = control_labels(anatomy.base, anatomy.labels)
    inside_air = (anatomy.base < -500) & (anatomy.labels == 0) & ~_outside_outline(SHAPE, SEED)
    assert inside_air.any()  # the stomach gas bubble
    assert np.all(regions[inside_air] != OUTSIDE_BODY)
    # every body voxel is more than 2 steps (6-connected) from a lung or airway voxel
    steps = ndimage.distance_transform_cdt(anatomy.labels == 0, metric="taxicab")
    body = regions == BODY
    assert body.sum() > 1000 and steps[body].min() == 3
    near = (steps <= 2) & ~_outside_outline(SHAPE, SEED)
    assert np.all(regions[near] == MARGIN)


def test_whole_covers_every_voxel_once(anatomy):
    regions = control_labels(anatomy.base, anatomy.labels)
    assert np.isin(regions, CONTROL_REGIONS["whole"]).all()
    assert CONTROL_REGIONS["outside-body"] == (OUTSIDE_BODY,) and CONTROL_REGIONS["body"] == (BODY,)


def test_margin_zero_keeps_the_mask_as_it_is(anatomy):
    regions = control_labels(anatomy.base, anatomy.labels, margin=0)
    np.testing.assert_array_equal(regions == MARGIN, anatomy.labels != 0)


def test_a_volume_cropped_inside_the_body_has_no_outside_air():
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:6, 2:6, 2:6] = 1
    regions = control_labels(np.full((8, 8, 8), 40.0), labels, margin=1)
    assert not (regions == OUTSIDE_BODY).any()
    assert (regions == BODY).sum() == 8 ** 3 - (4 ** 3 + 6 * 4 ** 2)  # cube + one layer a face


@pytest.mark.parametrize(("volume", "labels", "margin", "message"), [
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), 2, "one shape"),
    (np.full((4, 4, 4), np.nan), np.zeros((4, 4, 4)), 2, "non-finite"),
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), -1, "margin"),
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), 1.5, "margin"),
])
def test_bad_input_is_refused(volume, labels, margin, message):
    with pytest.raises(ValueError, match=message):
        control_labels(volume, labels, margin=margin)
