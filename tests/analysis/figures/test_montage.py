"""Still montages: orientation letters from the affine, slice positions in mm, one scale."""

import numpy as np
import pytest

from cfx.analysis.figures.montage import display_letters, montage_figure, slice_mm
from cfx.analysis.render.slices import slice_stack

RAS = np.array([[2.0, 0, 0, -15], [0, 2, 0, -20], [0, 0, 3, -40], [0, 0, 0, 1]])
# The same grid stored as LPS (x and y flipped): index 0 is the patient's right, anterior.
LPS = np.array([[-2.0, 0, 0, 15], [0, -2, 0, 10], [0, 0, 3, -40], [0, 0, 0, 1]])
SHAPE = (16, 16, 12)


def _world(affine, index):
    return (affine @ np.append(np.asarray(index, float), 1.0))[:3]


def _marked(affine):
    """A volume with one bright voxel at the patient's right (+x) and anterior (+y)."""
    volume = np.zeros(SHAPE)
    centres = np.stack(np.meshgrid(*map(np.arange, SHAPE), indexing="ij"), -1).reshape(-1, 3)
    world = np.array([_world(affine, c) for c in centres])
    score = world[:, 0] + world[:, 1]  # most right + anterior
    volume[tuple(centres[np.argmax(score)])] = 1.0
    return volume


@pytest.mark.parametrize("affine", [RAS, LPS])
def test_axial_letters_name_the_side_where_the_patients_right_and_front_appear(affine):
    letters = display_letters(affine, "axial", SHAPE)
    assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    volume = _marked(affine)
    image = slice_stack(volume, affine, "axial").max(axis=0)  # collapse the slices
    row, col = np.unravel_index(np.argmax(image), image.shape)
    side = "left" if col < image.shape[1] / 2 else "right"
    edge = "top" if row < image.shape[0] / 2 else "bottom"
    assert letters[side] == "R" and letters[edge] == "A"


@pytest.mark.parametrize(("axis", "expected"), [
    ("coronal", {"left": "R", "right": "L", "top": "S", "bottom": "I"}),
    ("sagittal", {"left": "A", "right": "P", "top": "S", "bottom": "I"}),
])
def test_coronal_and_sagittal_letters(axis, expected):
    for affine in (RAS, LPS):
        assert display_letters(affine, axis, SHAPE) == expected


@pytest.mark.parametrize(("affine", "axis"), [(RAS, "axial"), (LPS, "axial"), (LPS, "coronal"),
                                              (LPS, "sagittal")])
def test_slice_mm_is_the_affine_applied_to_the_voxel_index(affine, axis):
    k = {"sagittal": 0, "coronal": 1, "axial": 2}[axis]
    picks = np.array([1, 5, 9])
    got = slice_mm(affine, SHAPE, axis, picks)
    # RAS index i along axis k is stored index i (positive column) or n - 1 - i (flipped).
    flipped = affine[k, k] < 0
    stored = SHAPE[k] - 1 - picks if flipped else picks
    want = []
    for s in stored:
        index = [0, 0, 0]
        index[k] = s
        want.append(_world(affine, index)[k])
    np.testing.assert_allclose(got, want)
    assert np.all(np.diff(got) > 0)  # RAS order: inferior -> superior etc.


def test_every_panel_shares_the_colour_limit_and_columns_state_their_mm():
    rng = np.random.default_rng(0)
    rows = {"P000 yes - no": rng.normal(0, 5, SHAPE), "P001 yes - no": rng.normal(9, 50, SHAPE)}
    picks = [2, 6, 10]
    fig = montage_figure(rows, RAS, picks, clim=(-20.0, 20.0), cmap="RdBu_r", label="Δ HU",
                         outlines={"P000 yes - no": rows["P000 yes - no"] > 0})
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 6
    assert {im.get_clim() for im in images} == {(-20.0, 20.0)}
    np.testing.assert_array_equal(images[4].get_array(),
                                  slice_stack(rows["P001 yes - no"], RAS, "axial", picks)[1])
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == [f"z = {-40 + 3 * k:.0f} mm" for k in picks]
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {"R", "L", "A", "P"}
    assert fig.axes[-1].get_ylabel() == "Δ HU"  # the colour bar


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rows": {}}, "rows: expected a non-empty mapping"),
    ({"clim": (5.0, 5.0)}, r"clim: expected \(low, high\) with low < high, got \(5.0, 5.0\)"),
    ({"indices": [0, 12]}, r"indices: slice positions must be in 0..11 along axial"),
    ({"axis": "oblique"}, "axis: expected one of axial, coronal, sagittal, got 'oblique'"),
    ({"rows": {"a": np.zeros(SHAPE), "b": np.zeros((4, 4, 4))}},
     r"rows\['b'\]: expected shape \(16, 16, 12\)"),
])
def test_montage_errors(kwargs, message):
    args = {"rows": {"a": np.zeros(SHAPE)}, "affine": RAS, "indices": [3], "clim": (0, 1)}
    with pytest.raises(ValueError, match=message):
        montage_figure(**(args | kwargs))
