"""The sweep grid: deltas by hand from the tidy table, and every pairing error."""

import numpy as np
import pandas as pd
import pytest

from cfx.analysis.stats.grid import SweepGrid


def test_deltas_and_seed_deltas_match_hand_computation(rng, sweep):
    table = sweep(rng, n_subjects=4, n_seeds=3)
    grid = SweepGrid.from_table(table, ["no", "yes"])
    assert grid.subjects == ("sub00", "sub01", "sub02", "sub03")
    assert grid.seeds == (0, 1, 2) and grid.units == ("HU",) * 4
    assert list(grid.columns) == [("airway", "mean"), ("airway", "pd15"), ("lung", "mean"),
                                  ("lung", "pd15")]
    at = table.set_index(["subject", "value", "seed", "region", "metric"])["estimate"]
    hand = np.mean([at["sub02", "yes", k, "lung", "pd15"] - at["sub02", "no", k, "lung", "pd15"]
                    for k in range(3)])
    assert grid.deltas("yes", "no").loc["sub02", ("lung", "pd15")] == pytest.approx(hand)
    noise = np.mean([at["sub01", v, k, "airway", "mean"] - at["sub01", v, 0, "airway", "mean"]
                     for v in ("no", "yes") for k in (1, 2)])
    got = grid.seed_deltas(["no", "yes"]).loc["sub01", ("airway", "mean")]
    assert got == pytest.approx(noise)


def test_row_order_does_not_matter(rng, sweep):
    table = sweep(rng, n_subjects=3, n_seeds=2)
    shuffled = table.sample(frac=1.0, random_state=1)
    a = SweepGrid.from_table(table, ["no", "yes"]).deltas("yes", "no")
    b = SweepGrid.from_table(shuffled, ["no", "yes"]).deltas("yes", "no")
    pd.testing.assert_frame_equal(a, b)


def test_grid_errors(rng, sweep):
    table = sweep(rng, n_subjects=3, n_seeds=1)
    with pytest.raises(ValueError, match=r"table: missing column\(s\) \['seed'\]"):
        SweepGrid.from_table(table.drop(columns="seed"), ["no", "yes"])
    with pytest.raises(ValueError, match=r"values: expected one or more distinct values, got "
                                         r"\['no', 'no'\]"):
        SweepGrid.from_table(table, ["no", "no"])
    with pytest.raises(ValueError, match=r"values: \['maybe'\] not in the table's values"):
        SweepGrid.from_table(table, ["no", "maybe"])
    with pytest.raises(ValueError, match=r"table: 1 row\(s\) repeat a subject/seed/value"):
        SweepGrid.from_table(pd.concat([table, table.iloc[[5]]]), ["no", "yes"])
    bad = table.copy()
    bad.loc[2, "estimate"] = np.nan
    with pytest.raises(ValueError, match=r"table: 1 estimate\(s\) are not finite"):
        SweepGrid.from_table(bad, ["no", "yes"])
    lacking = table[~((table.subject == "sub01") & (table.value == "yes"))]
    with pytest.raises(ValueError, match=r"table: mismatched pairing, 4 subject/seed/value/region/"
                                         r"metric combination\(s\) are missing, e.g. .*'sub01', 0, "
                                         r"'yes'"):
        SweepGrid.from_table(lacking, ["no", "yes"])
    grid = SweepGrid.from_table(table, ["no", "yes"])
    with pytest.raises(ValueError, match=r"seeds: the noise floor needs at least 2 seeds per "
                                         r"subject, the table has \[0\]"):
        grid.seed_deltas(["no"])
