"""Data shipped with cfx: the demo cohort ``cfx sweep`` uses when given no ``--cohort``/``--mask``.

``demo_cohort/`` is exactly what ``cfx phantom`` writes with :data:`DEMO_PHANTOM_ARGS` (8 subjects,
64³ voxels of 5 mm, default planted effects, seed 0); a test regenerates it and compares bytes.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_COHORT", "DEMO_PHANTOM_ARGS"]

DEMO_COHORT = Path(__file__).resolve().parent / "demo_cohort"
DEMO_PHANTOM_ARGS = ("--subjects", "8", "--shape", "64,64,64", "--spacing", "5", "--seed", "0",
                     "--effects", "default")
