import numpy as np
import pytest

from cfx.analysis.figures.histogram import LAA_THRESHOLD, hu_histogram_figure, shared_bins


@pytest.fixture
def samples():
    rng = np.random.default_rng(1)
    return {"no": rng.normal(-860, 40, 3000), "yes": rng.normal(-830, 40, (30, 50))}


def test_shared_bins_put_the_threshold_on_an_edge_and_cover_the_data(samples):
    edges = shared_bins(samples, n_bins=40)
    assert np.any(edges == LAA_THRESHOLD)
    pooled = np.concatenate([v.ravel() for v in samples.values()])
    low, high = np.quantile(pooled, (0.005, 0.995))
    assert edges[0] <= low and edges[-1] >= high
    widths = np.diff(edges)
    np.testing.assert_allclose(widths, widths[0])
    assert 40 <= len(widths) <= 42


def test_histogram_heights_are_each_values_share_per_shared_bin(samples):
    fig = hu_histogram_figure(samples)
    ax = fig.axes[0]
    edges = shared_bins(samples)
    outlines = [p for p in ax.patches if not p.get_fill()]
    assert len(outlines) == 2
    for patch, (label, values) in zip(outlines, samples.items(), strict=True):
        expected = 100 * np.histogram(values.ravel(), edges)[0] / values.size
        np.testing.assert_allclose(patch.get_data().values, expected)
        np.testing.assert_allclose(patch.get_data().edges, edges)
        assert patch.get_label() == label
    threshold = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert threshold[0].get_xdata()[0] == LAA_THRESHOLD
    no = samples["no"]
    below = 100 * np.mean((no >= edges[0]) & (no < LAA_THRESHOLD))  # outside the bins: left out
    shares = outlines[0].get_data().values[edges[:-1] < LAA_THRESHOLD]
    assert shares.sum() == pytest.approx(below)  # the threshold splits the bins exactly


@pytest.mark.parametrize(("samples", "kwargs", "message"), [
    ({}, {}, "samples: expected a non-empty mapping"),
    ({"no": np.array([1.0, np.nan])}, {}, r"samples\['no'\]: expected finite HU values, got 2 "
                                          "values with 1 not finite"),
    ({"no": np.ones(4)}, {"bins": np.array([0.0, -1.0])}, "bins: expected at least 2 increasing"),
])
def test_histogram_errors(samples, kwargs, message):
    with pytest.raises(ValueError, match=message):
        hu_histogram_figure(samples, **kwargs)


def test_shared_bins_needs_a_positive_count(samples):
    with pytest.raises(ValueError, match="n_bins: must be >= 1, got 0"):
        shared_bins(samples, n_bins=0)
