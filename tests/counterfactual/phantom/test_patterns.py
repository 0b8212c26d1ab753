import numpy as np
import pytest

from cfx.counterfactual.phantom.patterns import PATTERNS, SUBPLEURAL_MM, LungPatterns


def _slab(n_slices, first=2, nz=16):
    labels = np.zeros((10, 8, nz), np.int16)
    labels[1:5, 1:7, first:first + n_slices] = 1
    labels[5:9, 1:7, first:first + n_slices] = 2
    return labels


def _slices(mask):
    return np.flatnonzero(mask.any(axis=(0, 1))).tolist()


@pytest.mark.parametrize("n, lower, middle, upper", [(9, 3, 3, 3), (10, 3, 4, 3),
                                                     (11, 4, 3, 4)])
def test_thirds_follow_the_slice_centre_rule(n, lower, middle, upper):
    patterns = LungPatterns(_slab(n), (1.0, 1.0, 1.0))
    assert _slices(patterns.mask("lower-third")) == list(range(2, 2 + lower))
    assert _slices(patterns.mask("middle-third")) == list(range(2 + lower, 2 + lower + middle))
    assert _slices(patterns.mask("upper-third")) == list(range(2 + lower + middle, 2 + n))
    two = patterns.mask("lower-two-thirds")
    assert np.array_equal(two, patterns.mask("lower-third") | patterns.mask("middle-third"))


def test_halves_split_an_odd_extent_with_the_middle_slice_upper():
    patterns = LungPatterns(_slab(9), (1.0, 1.0, 1.0))
    assert _slices(patterns.mask("lower-half")) == [2, 3, 4, 5]
    assert _slices(patterns.mask("upper-half")) == [6, 7, 8, 9, 10]


def test_subpleural_band_matches_a_brute_force_distance():
    rng = np.random.default_rng(0)
    labels = np.zeros((14, 12, 10), np.int16)
    labels[1:7, 1:11, 1:9] = 1
    labels[7:13, 1:11, 1:9] = 2
    labels[6:8, 5:7, 4:10] = 3
    labels[rng.random(labels.shape) < 0.02] = 0
    spacing = (4.0, 3.0, 6.0)
    patterns = LungPatterns(labels, spacing)
    inside = labels > 0
    centres = np.argwhere(np.ones(labels.shape, bool)) * spacing
    outside = centres[~inside.ravel()]
    expected = np.zeros(labels.shape, bool)
    for idx in np.argwhere(np.isin(labels, (1, 2))):
        distance = np.sqrt(((outside - idx * spacing) ** 2).sum(axis=1)).min()
        expected[tuple(idx)] = distance <= SUBPLEURAL_MM
    assert np.array_equal(patterns.mask("subpleural"), expected)
    assert 0 < expected.sum() < np.isin(labels, (1, 2)).sum()


def test_every_pattern_is_inside_the_lungs():
    labels = _slab(9)
    labels[4:6, 3:5, 8:16] = 3
    patterns = LungPatterns(labels, (2.0, 2.0, 2.0))
    lung = np.isin(labels, (1, 2))
    for name in PATTERNS:
        mask = patterns.mask(name)
        assert mask.dtype == bool and not (mask & ~lung).any(), name
    assert np.array_equal(patterns.mask("lung"), lung)
    assert np.array_equal(patterns.mask("subpleural-lower-half"),
                          patterns.mask("subpleural") & patterns.mask("lower-half"))
