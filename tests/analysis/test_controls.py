import numpy as np
import pytest
from scipy import ndimage

from cfx.analysis.controls import (
    BODY,
    CONTROL_REGIONS,
    MARGIN,
    OUTSIDE_BODY,
    body_outline,
    control_labels,
    synthetic_body,
)
from cfx.counterfactual.phantom.anatomy import _Grid, _sample_params, _superellipse, build_anatomy

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


def test_body_outline_is_the_phantoms_body_and_keeps_an_open_airway(anatomy):
    body = body_outline(anatomy.base, anatomy.labels)
    expected = ~(_outside_outline(SHAPE, SEED) & (anatomy.base == -1000.0))
    np.testing.assert_array_equal(body, expected)
    # an airway cut open onto the top face is air touching a face: the labels keep it inside
    ct, labels = anatomy.base.copy(), anatomy.labels.copy()
    ct[14:18, 14:18, -4:], labels[14:18, 14:18, -4:] = -1000.0, 3
    assert body_outline(ct, labels)[14:18, 14:18, -4:].all()
    assert not body_outline(ct)[14:18, 14:18, -1].any()


def test_synthetic_body_grows_the_lungs_hull_by_the_margin():
    labels = np.zeros((40, 40, 6), np.int16)
    labels[10:15, 12:28, 1:5] = 1  # two lungs: the hull spans the gap between them
    labels[25:30, 12:28, 2:4] = 2
    body = synthetic_body(labels, (2.0, 2.0, 5.0), margin_mm=6.0)
    assert (body == body[:, :, :1]).all()  # the same section on every slice
    section = body[:, :, 0]
    assert section[20, 20]  # between the lungs, inside the hull
    # the hull is the box 10..29 x 12..27; 6 mm is 3 voxels of 2 mm
    assert section[7, 20] and not section[6, 20] and section[32, 20] and not section[33, 20]
    assert section[20, 9] and not section[20, 8] and section[20, 30] and not section[20, 31]
    assert not section[7, 9]  # a corner is rounded: 3·√2 voxels away


def test_synthetic_body_overlaps_the_phantoms_body():
    """Dice with the true body outline over phantom subjects at 64³ / 5 mm: 0.94-0.98 with the
    default 30 mm margin (measured on seeds 0-5)."""
    for seed in range(3):
        anatomy = build_anatomy((64, 64, 64), seed)
        truth = body_outline(anatomy.base, anatomy.labels)
        drawn = synthetic_body(anatomy.labels, (5.0, 5.0, 5.0))
        assert 2 * (truth & drawn).sum() / (truth.sum() + drawn.sum()) > 0.93


def test_synthetic_body_needs_an_area():
    labels = np.zeros((8, 8, 4), np.int16)
    with pytest.raises(ValueError, match="labels: need a labelled region with an area"):
        synthetic_body(labels, (1.0, 1.0, 1.0))
    labels[2:6, 3, :] = 1  # a line
    with pytest.raises(ValueError, match="area"):
        synthetic_body(labels, (1.0, 1.0, 1.0))
