"""The noise floor is the paired statistics of seed-vs-seed differences, computed by hand."""

import numpy as np
import pytest

from cfx.analysis.stats.grid import SweepGrid
from cfx.analysis.stats.noise_floor import noise_floor
from cfx.analysis.stats.paired import paired_test


def test_noise_floor_equals_paired_test_on_hand_seed_differences(rng, sweep):
    table = sweep(rng, n_subjects=7, n_seeds=3, seed_sd=4.0)
    grid = SweepGrid.from_table(table, ["no", "yes"])
    floor = noise_floor(grid, n_bootstrap=300, random_state=2)
    at = table.set_index(["subject", "value", "seed", "region", "metric"])["estimate"]
    hand = [np.mean([at[s, v, k, "lung", "pd15"] - at[s, v, 0, "lung", "pd15"]
                     for v in ("no", "yes") for k in (1, 2)]) for s in grid.subjects]
    expected = paired_test(hand, n_bootstrap=300, random_state=2)
    row = floor.loc[("lung", "pd15")]
    assert row["estimate"] == pytest.approx(expected.estimate)
    assert row["p_t"] == pytest.approx(expected.p_t)
    assert row["bca_high"] == pytest.approx(expected.bca_high)
    # the planted +20 effect does not reach the noise floor
    assert abs(row["estimate"]) < 10


def test_noise_floor_of_one_value(rng, sweep):
    table = sweep(rng, n_subjects=5, n_seeds=2)
    grid = SweepGrid.from_table(table, ["no", "yes"])
    only_no = noise_floor(grid, ["no"], n_bootstrap=200)
    assert only_no["estimate"].to_numpy() == pytest.approx(
        grid.seed_deltas(["no"]).mean().to_numpy())


def test_noise_floor_errors(rng, sweep):
    grid = SweepGrid.from_table(sweep(rng, n_subjects=3, n_seeds=2), ["no", "yes"])
    with pytest.raises(ValueError, match=r"values: expected values among the grid's \['no', "
                                         r"'yes'\], got \['maybe'\]"):
        noise_floor(grid, ["maybe"])
    single = SweepGrid.from_table(sweep(rng, n_subjects=3, n_seeds=1), ["no", "yes"])
    with pytest.raises(ValueError, match="seeds: the noise floor needs at least 2 seeds"):
        noise_floor(single)
