"""A synthetic sweep table builder: subjects x values x seeds x regions x metrics."""

import itertools

import pandas as pd
import pytest


def build_sweep(rng, n_subjects=8, n_seeds=3, effects=None, seed_sd=3.0, item_sd=1.0,
                regions=("airway", "lung"), metrics=("mean", "pd15")):
    """Tidy table; estimate = subject level + seed noise + effect[value] + item noise."""
    effects = {"no": 0.0, "yes": 20.0} if effects is None else effects
    rows = []
    for s in range(n_subjects):
        base = rng.normal(-820, 25)
        for k in range(n_seeds):
            seed_shift = rng.normal(0, seed_sd)
            for value, effect in effects.items():
                for region, metric in itertools.product(regions, metrics):
                    estimate = base + seed_shift + effect + rng.normal(0, item_sd)
                    rows.append((f"sub{s:02d}", value, k, region, metric, estimate, "HU"))
    return pd.DataFrame(rows, columns=["subject", "value", "seed", "region", "metric",
                                       "estimate", "unit"])


@pytest.fixture
def sweep():
    return build_sweep
