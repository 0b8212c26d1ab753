"""The bundled demo cohort lets every command run: at least 3 subjects in each level of every
categorical attribute, counting only subjects whose age and sex are recorded (the covariates
``cfx stats --covariates age,sex`` adjusts for)."""

import pandas as pd

from cfx.counterfactual.data import DEMO_COHORT
from cfx.counterfactual.phantom.clinical import CATEGORIES


def test_every_level_of_every_categorical_attribute_has_three_subjects():
    clinical = pd.read_csv(DEMO_COHORT / "clinical.csv")
    assert set(CATEGORIES) <= set(clinical.columns)
    for attribute, levels in CATEGORIES.items():
        complete = clinical.dropna(subset=list({attribute, "age", "sex"}))
        counts = complete[attribute].value_counts()
        assert {level: int(counts.get(level, 0)) for level in levels} == {
            level: max(3, int(counts.get(level, 0))) for level in levels}, (attribute, counts)
