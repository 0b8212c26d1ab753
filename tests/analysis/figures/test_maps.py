"""Stat-map and difference-map slices: orientation from the affine, symmetric scales, outlines."""

import numpy as np
import pytest
from matplotlib.contour import ContourSet

from cfx.analysis.figures.difference import difference_figure
from cfx.analysis.figures.statmap import stat_map_figure
from cfx.analysis.render.slices import slice_stack

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
FLIPPED_X = np.array([[-2.0, 0, 0, 30], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])


def _marker(shape=(16, 16, 16)):
    """t = 5 at the patient's right (+x), anterior (+y), middle slice; -2 elsewhere in a slab."""
    stat = np.zeros(shape)
    stat[2:14, 2:14, 8] = -2.0
    stat[13, 12, 8] = 5.0
    return stat


def _shown(ax):
    return np.ma.filled(ax.get_images()[-1].get_array().astype(float), np.nan)


@pytest.mark.parametrize(("stat", "affine"), [(_marker(), AFFINE),
                                              (_marker()[::-1], FLIPPED_X)])
def test_stat_map_puts_the_patients_right_on_the_left_and_anterior_up(stat, affine):
    fig = stat_map_figure(stat, affine, n_slices=1)
    image = _shown(fig.axes[0])
    row, col = np.unravel_index(np.nanargmax(image), image.shape)
    assert col < image.shape[1] / 2 and row < image.shape[0] / 2
    np.testing.assert_array_equal(image, slice_stack(np.where(stat != 0, stat, np.nan), affine,
                                                     "axial", [8])[0])
    assert fig.axes[0].get_images()[-1].get_clim() == (-5.0, 5.0)


def test_stat_map_outlines_only_fwe_significant_voxels():
    stat = _marker()
    p = np.ones_like(stat)
    fig = stat_map_figure(stat, AFFINE, p_fwe=p, n_slices=1)
    assert not any(isinstance(c, ContourSet) for c in fig.axes[0].get_children())
    p[13, 12, 8] = 0.01
    fig = stat_map_figure(stat, AFFINE, p_fwe=p, n_slices=1, background=np.full(stat.shape, -800))
    assert any(isinstance(c, ContourSet) for c in fig.axes[0].get_children())
    assert len(fig.axes[0].get_images()) == 2  # background CT + map


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"p_fwe": np.ones((4, 4, 4))}, r"p_fwe: expected shape \(16, 16, 16\)"),
    ({"alpha": 0.0}, r"alpha: must be in \(0, 1\), got 0.0"),
    ({"limit": -1.0}, "limit: must be > 0, got -1.0"),
    ({"axis": "oblique"}, "axis: expected one of axial, coronal, sagittal, got 'oblique'"),
    ({"n_slices": 0}, "n_slices: must be >= 1, got 0"),
    ({"affine": np.eye(3)}, "affine: expected a finite invertible 4x4 matrix"),
])
def test_stat_map_errors(kwargs, message):
    args = {"stat": _marker(), "affine": AFFINE} | kwargs
    with pytest.raises(ValueError, match=message):
        stat_map_figure(**args)


def test_stat_map_needs_a_volume():
    with pytest.raises(ValueError, match=r"stat: expected a 3-D volume, got shape \(4, 4\)"):
        stat_map_figure(np.zeros((4, 4)), AFFINE)


def test_difference_rows_share_one_symmetric_scale_centred_on_zero():
    rng = np.random.default_rng(0)
    diffs = {"A": rng.normal(0, 5, (16, 16, 16)), "B": rng.normal(3, 5, (16, 16, 16))}
    fig = difference_figure(diffs, AFFINE, limit=12.0, n_slices=3)
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 6
    for image in images:
        assert image.get_clim() == (-12.0, 12.0)
        assert image.norm(0.0) == pytest.approx(0.5)  # 0 HU is the colormap's centre colour
    picks = np.array([4, 8, 11])  # 3 evenly spaced inner slices of 16
    expected = slice_stack(diffs["B"], AFFINE, "axial", picks)
    np.testing.assert_array_equal(images[3].get_array(), expected[0])
    assert fig.axes[3].get_ylabel() == "B"


def test_difference_outlines_each_rows_own_mask_and_default_limit_covers_both():
    diffs = {"A": np.zeros((16, 16, 16)), "B": np.zeros((16, 16, 16))}
    diffs["A"][4:8, 4:8, 4:12] = 7.0
    masks = {"A": diffs["A"] != 0, "B": np.zeros((16, 16, 16), bool)}
    masks["B"][9:12, 9:12, 4:12] = True
    fig = difference_figure(diffs, AFFINE, mask=masks, n_slices=2)
    rows = [fig.axes[0:2], fig.axes[2:4]]
    for axes in rows:
        assert all(any(isinstance(c, ContourSet) for c in ax.get_children()) for ax in axes)
    assert rows[0][0].get_images()[0].get_clim() == (-7.0, 7.0)


@pytest.mark.parametrize(("diffs", "kwargs", "message"), [
    ({}, {}, "diffs: expected a non-empty mapping"),
    ({"A": np.zeros((4, 4, 4)), "B": np.zeros((4, 4, 5))}, {},
     r"diffs\['B'\]: expected shape \(4, 4, 4\)"),
    ({"A": np.zeros((4, 4, 4))}, {"mask": {"B": np.zeros((4, 4, 4))}},
     r"mask: no mask for row\(s\) \['A'\]"),
    ({"A": np.zeros((4, 4, 4))}, {"limit": 0}, "limit: must be > 0, got 0"),
])
def test_difference_errors(diffs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        difference_figure(diffs, AFFINE, **kwargs)


def test_infinite_t_is_drawn_saturated_and_does_not_set_the_scale():
    stat = _marker()
    stat[5, 5, 8] = np.inf
    stat[6, 5, 8] = np.finfo(np.float32).max  # what nan_to_num stores for +inf in float32
    fig = stat_map_figure(stat, AFFINE, n_slices=1)
    image = fig.axes[0].get_images()[-1]
    assert image.get_clim() == (-5.0, 5.0)
    finite = stat.copy()
    finite[5:7, 5, 8] = 5.0
    np.testing.assert_array_equal(_shown(fig.axes[0]), slice_stack(
        np.where(stat != 0, finite, np.nan), AFFINE, "axial", [8])[0])


def test_with_p_fwe_only_survivors_are_coloured_and_columns_state_mm_and_letters():
    mean = np.zeros((16, 16, 16))
    mean[2:14, 2:14, 8] = 3.0
    mean[13, 12, 8] = 20.0  # the only survivor; its 20 HU sets the default scale
    p = np.ones_like(mean)
    p[13, 12, 8] = 0.01
    fig = stat_map_figure(mean, AFFINE, p_fwe=p, mask=mean != 0, n_slices=1, label="mean Δ (HU)")
    image = _shown(fig.axes[0])
    assert np.count_nonzero(~np.isnan(image)) == 1 and np.nanmax(image) == 20.0
    assert fig.axes[0].get_images()[-1].get_clim() == (-20.0, 20.0)
    assert fig.axes[0].get_title() == "z = 16 mm"  # slice 8 at 2 mm
    assert {t.get_text() for t in fig.axes[0].texts} == {"R", "L", "A", "P"}
