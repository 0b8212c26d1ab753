import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cfx.analysis.stats.specificity import adjusted_table, specificity_table, verdict


@pytest.mark.parametrize(("target", "controls", "expected"), [
    ((20, 19, 21), [(0.5, -1, 2), (-1, -3, 1)], "specific"),       # bounds 2, 3 < 5
    ((20, 19, 21), [(0.5, -1, 2), (-1, -6, 4)], "leaky"),          # bound 6 >= 5
    ((-11.1, -12, -10), [(-11.8, -13, -10.6), (-13.1, -14, -12)], "global shift"),
    ((-11.1, -12, -10), [(-11.8, -13, -10.6), (13.1, 12, 14)], "leaky"),  # a control flips
    ((-11.1, -12, -10), [(-8.0, -9, -7), (-13.1, -14, -12)], "leaky"),    # 8 < 0.75 * 11.1
    ((-0.5, -1.5, 0.5), [(18, 15, 21), (0.1, -1, 1)], "leaky"),          # null target, air moves
    ((-0.5, -1.5, 0.5), [(0.2, -1, 1.4), (0.1, -1, 1)], "no effect"),
    ((20, 20, 20), [(0, 0, 0), (0, 0, 0)], "specific"),                  # exact oracle
    ((0, 0, 0), [(0, 0, 0), (0, 0, 0)], "no effect"),
    ((20, np.nan, np.nan), [(0, 0, 0)], "n/a"),
    ((20, 19, 21), [], "n/a"),
])
def test_verdict_rule(target, controls, expected):
    assert verdict(target, controls, ratio=0.25) == expected


def test_ratio_moves_the_boundary():
    case = ((20, 19, 21), [(0, -2.5, 2.5), (0, -1, 1)])
    assert verdict(*case, ratio=0.1) == "leaky"
    assert verdict(*case, ratio=0.2) == "specific"
    with pytest.raises(ValueError, match="ratio"):
        verdict(*case, ratio=1.5)


def _tables(n=6, target=20.0, body=0.0, outside=0.0, seed=0):
    """Tidy target and control tables of n subjects x values no/yes x one seed, metric mean."""
    rng = np.random.default_rng(seed)
    rows, controls = [], []
    for k in range(n):
        base = rng.normal(-850, 30)
        tissue, air = rng.normal(40, 5), -1000.0
        noise = rng.normal(0, 1, 3)
        for value, on in (("no", 0.0), ("yes", 1.0)):
            rows.append((f"S{k}", value, 0, "lung", "mean", base + on * (target + noise[0]), "HU"))
            controls.append((f"S{k}", value, 0, "body", "mean",
                             tissue + on * (body + noise[1]), "HU"))
            controls.append((f"S{k}", value, 0, "outside-body", "mean",
                             air + on * (outside + noise[2]), "HU"))
    columns = ["subject", "value", "seed", "region", "metric", "estimate", "unit"]
    return pd.DataFrame(rows, columns=columns), pd.DataFrame(controls, columns=columns)


def test_adjusted_table_subtracts_the_body_row_of_the_same_volume():
    table, controls = _tables()
    adjusted = adjusted_table(table, controls)
    body = controls[controls.region == "body"].set_index(["subject", "value"])["estimate"]
    expected = table.set_index(["subject", "value"])["estimate"] - body
    np.testing.assert_allclose(adjusted.set_index(["subject", "value"])["estimate"],
                               expected.loc[adjusted.set_index(["subject", "value"]).index])
    assert list(adjusted.columns) == list(table.columns) and len(adjusted) == len(table)


def test_specific_effect_with_controls_and_adjusted_ci_from_scipy():
    table, controls = _tables()
    effects, control_effects = specificity_table(table, controls, "no", n_bootstrap=200)
    row = effects.iloc[0]
    assert row.verdict == "specific" and row.specificity_ratio == 0.25
    delta = lambda frame: (frame[frame.value == "yes"].set_index("subject")["estimate"]  # noqa: E731
                           - frame[frame.value == "no"].set_index("subject")["estimate"])
    body = delta(controls[controls.region == "body"])
    per_subject = delta(table) - body
    low, high = stats.t.interval(0.95, len(per_subject) - 1, loc=per_subject.mean(),
                                 scale=stats.sem(per_subject))
    assert row.adjusted_estimate == pytest.approx(per_subject.mean())
    assert (row.adjusted_ci_low, row.adjusted_ci_high) == pytest.approx((low, high))
    assert row.body_estimate == pytest.approx(body.mean())
    assert set(control_effects.region) == {"body", "outside-body"}


def test_global_shift_and_its_adjusted_effect():
    table, controls = _tables(target=-11.0, body=-11.8, outside=-13.1)
    effects, _ = specificity_table(table, controls, "no", n_bootstrap=200)
    row = effects.iloc[0]
    assert row.verdict == "global shift"
    assert row.adjusted_estimate == pytest.approx(row.estimate - row.body_estimate)
    assert abs(row.adjusted_estimate) < 2


def test_leaky_when_only_the_air_moves():
    table, controls = _tables(target=20.0, outside=9.0)
    effects, _ = specificity_table(table, controls, "no", n_bootstrap=200)
    assert effects.iloc[0].verdict == "leaky"


def test_size_metrics_get_no_verdict_and_missing_outside_is_skipped():
    table, controls = _tables()
    shares = table.assign(metric="laa950", unit="%", estimate=table.estimate / 100)
    table = pd.concat([table, table.assign(metric="volume", unit="mL", estimate=10.0), shares])
    controls = controls[controls.region == "body"]
    controls = pd.concat([controls, controls.assign(metric="volume", unit="mL", estimate=5.0),
                          controls.assign(metric="laa950", unit="%", estimate=0.0)])
    effects, _ = specificity_table(table, controls, "no", n_bootstrap=200)
    verdicts = effects.set_index("metric")["verdict"]
    assert verdicts["mean"] == "specific"
    assert verdicts["volume"] == "n/a" and verdicts["laa950"] == "n/a"  # judged in HU only
    assert "outside_body_estimate" not in effects


def test_body_control_is_required():
    table, controls = _tables()
    with pytest.raises(ValueError, match="body"):
        specificity_table(table, controls[controls.region != "body"], "no")


def test_held_controls_turn_specific_into_by_construction_only():
    """Controls held to the input (keep-mask editing) are no evidence: what would be specific
    reads "by construction"; a leaky or null row keeps its verdict."""
    table, controls = _tables()
    held, _ = specificity_table(table, controls, "no", n_bootstrap=200, held=True)
    plain, _ = specificity_table(table, controls, "no", n_bootstrap=200)
    assert plain.iloc[0].verdict == "specific" and held.iloc[0].verdict == "by construction"
    assert held.drop(columns="verdict").equals(plain.drop(columns="verdict"))
    table, controls = _tables(target=20.0, outside=9.0)
    assert specificity_table(table, controls, "no", n_bootstrap=200,
                             held=True)[0].iloc[0].verdict == "leaky"
    table, controls = _tables(target=0.0)
    assert specificity_table(table, controls, "no", n_bootstrap=200,
                             held=True)[0].iloc[0].verdict == "no effect"
