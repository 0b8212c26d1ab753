"""Data shipped with cfx: the demo cohort ``cfx sweep`` uses when given no ``--cohort``/``--mask``.

``demo_cohort/`` is exactly what ``cfx phantom`` writes with :data:`DEMO_PHANTOM_ARGS` (9 subjects,
64³ voxels of 5 mm, default planted effects, seed 3279); a test regenerates it and compares bytes.
Seed 3279 is one whose draw has at least 3 subjects in every level of every categorical attribute
(3 diagnoses need 9 subjects), counting only subjects whose age and sex are recorded, so that
``cfx stats --covariates age,sex`` and the audit's effectiveness run on every attribute (the
first such seed, 2467, was passed over: smoking and mortality coincide subject by subject there).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_COHORT", "DEMO_PHANTOM_ARGS"]

DEMO_COHORT = Path(__file__).resolve().parent / "demo_cohort"
DEMO_PHANTOM_ARGS = ("--subjects", "9", "--shape", "64,64,64", "--spacing", "5", "--seed", "3279",
                     "--effects", "default")
