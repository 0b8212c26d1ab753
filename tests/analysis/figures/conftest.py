import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def region_table():
    """Tidy region metrics: 5 subjects x 2 seeds x values no/yes, lung mean and pd15."""
    rng = np.random.default_rng(3)
    rows = []
    for s in range(5):
        base = -850 + 10 * s
        for seed in (0, 1):
            for value, shift in (("no", 0.0), ("yes", 20.0)):
                for metric in ("mean", "pd15"):
                    rows.append({"subject": f"S{s}", "value": value, "seed": seed,
                                 "region": "lung", "metric": metric, "unit": "HU",
                                 "estimate": base + shift + rng.normal(0, 3)})
    return pd.DataFrame(rows)
