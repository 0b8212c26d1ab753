import numpy as np
import pandas as pd
import pytest

from cfx.analysis.figures.forest import forest_figure, forest_rows


@pytest.fixture
def effects():
    rows = []
    for metric, unit in (("mean", "HU"), ("laa950", "%")):
        for k, region in enumerate(("lung", "lung-upper", "lung-lower")):
            rows.append({"value": "yes", "reference": "no", "region": region, "metric": metric,
                         "unit": unit, "estimate": 10.0 + k, "ci_low": 8.0 + k,
                         "ci_high": 12.0 + k, "noise_ci_low": -2.0 - k, "noise_ci_high": 2.0})
    return pd.DataFrame(rows)


def test_rows_follow_the_requested_metric_and_region_order(effects):
    rows = forest_rows(effects, metrics=["laa950", "mean"], regions=["lung-lower", "lung"])
    assert list(zip(rows.metric, rows.region, strict=True)) == [
        ("laa950", "lung-lower"), ("laa950", "lung"), ("mean", "lung-lower"), ("mean", "lung")]
    assert rows.label[0] == "yes vs no · lung-lower"
    labelled = forest_rows(effects.assign(attribute="smoking"))
    assert labelled.label[0] == "smoking yes vs no · lung"


def test_each_row_draws_its_interval_and_the_noise_floor_behind_it(effects):
    fig = forest_figure(effects)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    noise, ci = ax.collections[0], ax.collections[1]
    mean = effects[effects.metric == "mean"]
    top_down = np.array([s[:, 0] for s in ci.get_segments()])
    np.testing.assert_allclose(top_down, mean[["ci_low", "ci_high"]].to_numpy())
    np.testing.assert_allclose([s[:, 0] for s in noise.get_segments()],
                               mean[["noise_ci_low", "noise_ci_high"]].to_numpy())
    ys = [s[0, 1] for s in ci.get_segments()]
    assert ys == sorted(ys, reverse=True)  # first row on top
    assert [t.get_text() for t in ax.get_yticklabels()] == list(forest_rows(mean).label)
    assert ax.get_xlabel() == "Δ mean (HU)"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"metrics": ["volume"]}, r"metrics: expected some of \['mean', 'laa950'\], got \['volume'\]"),
    ({"regions": []}, "regions: expected some of"),
])
def test_forest_errors(effects, kwargs, message):
    with pytest.raises(ValueError, match=message):
        forest_figure(effects, **kwargs)


def test_forest_needs_the_effect_columns(effects):
    with pytest.raises(ValueError, match="effects: missing column"):
        forest_figure(effects.drop(columns="ci_low"))
