import numpy as np
import pytest
from scipy import stats

from cfx.analysis.figures.paired import paired_values_figure, per_subject_values


def test_per_subject_values_average_seeds(region_table):
    wide = per_subject_values(region_table, "lung", "mean", ["yes", "no"])
    assert list(wide.columns) == ["yes", "no"]
    rows = region_table[(region_table.subject == "S2") & (region_table.metric == "mean")
                        & (region_table.value == "yes")]
    assert wide.loc["S2", "yes"] == pytest.approx(rows.estimate.mean())


def test_paired_figure_draws_subject_lines_and_student_t_intervals(region_table):
    fig = paired_values_figure(region_table, "lung", "mean", confidence=0.9)
    ax = fig.axes[0]
    wide = per_subject_values(region_table, "lung", "mean")
    subject_lines = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(subject_lines) == 5
    np.testing.assert_allclose(sorted(line.get_ydata()[1] for line in subject_lines),
                               sorted(wide["yes"]))
    bars = ax.containers[-1]
    means = bars.lines[0].get_ydata()
    segments = bars.lines[2][0].get_segments()
    for position, value in enumerate(["no", "yes"]):
        low, high = stats.t.interval(0.9, 4, loc=wide[value].mean(), scale=stats.sem(wide[value]))
        assert means[position] == pytest.approx(wide[value].mean())
        np.testing.assert_allclose(sorted(segments[position][:, 1]), [low, high])
    assert ax.get_ylabel() == "lung mean (HU)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["no", "yes"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"region": "heart"}, "region: 'heart' is not in table; it has lung"),
    ({"metric": "volume"}, "metric: 'volume' is not in table"),
    ({"values": ["maybe"]}, r"values: expected values among \['no', 'yes'\]"),
    ({"confidence": 1.0}, r"confidence: must be in \(0, 1\), got 1.0"),
])
def test_paired_figure_errors(region_table, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_values_figure(region_table, **kwargs)


def test_paired_figure_needs_the_tidy_columns(region_table):
    with pytest.raises(ValueError, match="table: missing column"):
        paired_values_figure(region_table.drop(columns="seed"))
