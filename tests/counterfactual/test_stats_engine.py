"""cfx.counterfactual.stats: the stats recipe checks its options before it reads
or writes a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.stats import StatsConfig, run_stats

_RUN = Path("no-such-run")


@pytest.mark.parametrize(("changes", "message"), [
    ({"run": None}, r"^give a RUN folder made by cfx sweep, --cohort DIR, or both$"),
    ({"permutations": 0}, r"^--permutations: must be >= 1, got 0$"),
    ({"specificity_ratio": 1.0}, r"^--specificity-ratio: must be a fraction in \(0, 1\), got 1.0$"),
    ({"tail": "gumbel", "voxelwise": True}, r"^--tail: 'gumbel' is not one of none, gamma, gpd$"),
    ({"tfce": True}, r"^--tfce: TFCE maps are voxelwise; add --voxelwise$"),
    ({"tail": "gpd"}, r"^--tail: the tail fit is of the voxel maps' permutation maxima; add "),
    ({"run": None, "cohort": _RUN, "voxelwise": True},
     r"^--voxelwise: voxel maps compare the volumes of a run; give RUN$"),
    ({"run": None, "cohort": _RUN}, r"^--attribute: name the attribute to compare in --cohort"),
])
def test_options_are_refused_before_any_file_is_read(tmp_path, changes, message):
    config = StatsConfig(**{"run": _RUN, "out": tmp_path / "stats", **changes})
    with pytest.raises(UserInputError, match=message):
        run_stats(config)
    assert not (tmp_path / "stats").exists()


def test_a_missing_run_is_named_after_the_options_pass(tmp_path):
    with pytest.raises(UserInputError, match="no-such-run"):
        run_stats(StatsConfig(run=tmp_path / "no-such-run"))
