import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cfx.analysis.figures.dose_response import (
    NOISE_BAND_LABEL,
    SLOPE_LABEL,
    dose_response_figure,
)
from cfx.analysis.figures.output import save_figure

AGES = (40, 60, 80)


@pytest.fixture
def age_table():
    """Tidy region metrics: 6 subjects x 2 seeds x ages 80, 40, 60 (unsorted), lung mean."""
    rng = np.random.default_rng(9)
    rows = []
    for s in range(6):
        base = -850 + 15 * s
        for seed in (0, 1):
            for age in (80, 40, 60):
                rows.append({"subject": f"S{s}", "value": age, "seed": seed, "region": "lung",
                             "metric": "mean", "unit": "HU",
                             "estimate": base - 0.4 * age + rng.normal(0, 2)})
    return pd.DataFrame(rows)


def _seed_means(table):
    return table.groupby(["subject", "value"])["estimate"].mean().unstack("value")[list(AGES)]


def _band(ax):
    (band,) = [p for p in ax.patches if p.get_label() == NOISE_BAND_LABEL]
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
    return ys.min(), ys.max()


def test_subject_lines_sit_at_the_numeric_values_and_hold_the_seed_means(age_table):
    ax = dose_response_figure(age_table, label="age (years)").axes[0]
    expected = _seed_means(age_table)
    lines = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(lines) == 6
    for line in lines:
        np.testing.assert_array_equal(line.get_xdata(), [40.0, 60.0, 80.0])
    np.testing.assert_allclose(sorted(tuple(line.get_ydata()) for line in lines),
                               sorted(tuple(row) for row in expected.to_numpy()))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["40", "60", "80"]
    assert ax.get_xlabel() == "age (years)" and ax.get_ylabel() == "lung mean (HU)"


def test_cohort_markers_are_means_with_student_t_intervals(age_table):
    ax = dose_response_figure(age_table, confidence=0.9).axes[0]
    expected = _seed_means(age_table)
    bars = ax.containers[-1]
    np.testing.assert_array_equal(bars.lines[0].get_xdata(), [40.0, 60.0, 80.0])
    np.testing.assert_allclose(bars.lines[0].get_ydata(), expected.mean().to_numpy())
    segments = bars.lines[2][0].get_segments()
    for position, age in enumerate(AGES):
        low, high = stats.t.interval(0.9, 5, loc=expected[age].mean(),
                                     scale=stats.sem(expected[age]))
        np.testing.assert_allclose(sorted(segments[position][:, 1]), [low, high])


def test_noise_band_is_anchored_at_the_reference_mean(age_table):
    expected = _seed_means(age_table).mean()
    ax = dose_response_figure(age_table, noise_band=(-1.5, 2.0)).axes[0]
    assert _band(ax) == pytest.approx((expected[40] - 1.5, expected[40] + 2.0))
    ax = dose_response_figure(age_table, noise_band=(-1.5, 2.0), reference=60).axes[0]
    assert _band(ax) == pytest.approx((expected[60] - 1.5, expected[60] + 2.0))
    assert not [p for p in dose_response_figure(age_table).axes[0].patches
                if p.get_label() == NOISE_BAND_LABEL]


def test_slope_line_has_the_given_slope_through_the_grand_mean(age_table):
    ax = dose_response_figure(age_table, slope=-0.4).axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == SLOPE_LABEL]
    xs, ys = line.get_xdata(), line.get_ydata()
    np.testing.assert_array_equal(xs, [40.0, 80.0])
    assert (ys[1] - ys[0]) / (xs[1] - xs[0]) == pytest.approx(-0.4)
    grand = _seed_means(age_table).to_numpy().mean()
    assert np.mean(ys) == pytest.approx(grand)


def test_string_values_and_a_value_subset_plot_the_same(age_table):
    as_text = age_table.assign(value=age_table.value.astype(str))
    ax = dose_response_figure(as_text, values=["60", "40"]).axes[0]
    np.testing.assert_allclose(ax.containers[-1].lines[0].get_ydata(),
                               _seed_means(age_table)[[40, 60]].mean().to_numpy())


def test_figure_saves_as_png_and_pdf(age_table, tmp_path):
    paths = save_figure(dose_response_figure(age_table, noise_band=(-1, 1), slope=-0.4),
                        tmp_path / "dose")
    assert [p.name for p in paths] == ["dose.png", "dose.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"region": "heart"}, "region: 'heart' is not in table; it has lung"),
    ({"values": [40]}, r"values: a dose-response figure needs at least 2 distinct numeric"),
    ({"noise_band": (2.0, -1.0)}, r"noise_band: expected finite \(ci_low, ci_high\)"),
    ({"noise_band": ("a", "b")}, r"noise_band: expected finite"),
    ({"reference": 50}, r"reference: 50 is not among the plotted values \[40.0, 60.0, 80.0\]"),
    ({"reference": "old"}, "reference: expected finite numbers"),
    ({"slope": np.nan}, "slope: expected a finite number, got nan"),
    ({"confidence": 0}, r"confidence: must be in \(0, 1\), got 0"),
])
def test_dose_response_figure_errors(age_table, kwargs, message):
    with pytest.raises(ValueError, match=message):
        dose_response_figure(age_table, **kwargs)


def test_non_numeric_values_are_refused(age_table):
    table = age_table.assign(value=age_table.value.map({40: "young", 60: "mid", 80: "old"}))
    with pytest.raises(ValueError, match="value: expected finite numbers for a dose-response, "
                                         "got 'old'"):
        dose_response_figure(table)
