"""The phantom's clinical attributes: their values, and a sampler that correlates them like an
ILD cohort so that naive observational comparisons are confounded.

Generative model (all draws from one seeded generator, subject by subject independent):

- age ~ Normal(62, 10) years, rounded, clipped to 35..90;
- sex: male with probability 0.55;
- smoking (ever): logit P(yes) = -0.2 + 0.08 (age - 62) + 0.6 [male] — smokers are older;
- diagnosis: multinomial logit with scores
  IPF = -0.3 + 0.08 (age - 62) + 1.0 [male] + 0.8 [smoker],
  CTD-ILD = 0.2 + 1.6 [female] - 0.04 (age - 62), UILD = 0 —
  IPF commoner in older male smokers, CTD-ILD commoner in women;
- mortality: logit P(dead) = -1.6 + 0.07 (age - 62) + 1.2 [IPF] — rising with age and IPF.

Each attribute is then missing completely at random with probability :data:`MISSING_RATE`
(the latent value is kept in ``truth.json``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ATTRIBUTES", "CATEGORIES", "NUMERIC", "NUMERIC_RANGE", "MISSING_RATE",
           "sample_attributes", "sample_missing"]

CATEGORIES: dict[str, tuple[str, ...]] = {
    "sex": ("male", "female"),
    "smoking": ("yes", "no"),
    "mortality": ("alive", "dead"),
    "diagnosis": ("CTD-ILD", "IPF", "UILD"),
}
NUMERIC: dict[str, str] = {"age": "years"}
# Values a render accepts (inclusive), as the default attribute vocabulary allows.
NUMERIC_RANGE: dict[str, tuple[float, float]] = {"age": (0.0, 120.0)}
ATTRIBUTES: tuple[str, ...] = ("age", "sex", "smoking", "mortality", "diagnosis")
MISSING_RATE = 0.10


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def sample_attributes(n: int, rng: np.random.Generator) -> list[dict]:
    """Draw the latent (complete) clinical attributes of ``n`` subjects.

    Parameters
    ----------
    n : int
        Number of subjects.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of dict
        One ``{"age": int, "sex": str, "smoking": str, "mortality": str, "diagnosis": str}``
        per subject.
    """
    age = np.clip(np.rint(rng.normal(62.0, 10.0, n)), 35, 90).astype(int)
    centred = age - 62.0
    male = rng.random(n) < 0.55
    smoker = rng.random(n) < _logistic(-0.2 + 0.08 * centred + 0.6 * male)
    scores = np.stack([0.2 + 1.6 * ~male - 0.04 * centred,
                       -0.3 + 0.08 * centred + 1.0 * male + 0.8 * smoker,
                       np.zeros(n)], axis=1)  # CTD-ILD, IPF, UILD
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    diagnosis = (rng.random((n, 1)) > np.cumsum(probabilities, axis=1)).sum(axis=1)
    diagnosis = np.minimum(diagnosis, 2)
    ipf = diagnosis == 1
    dead = rng.random(n) < _logistic(-1.6 + 0.07 * centred + 1.2 * ipf)
    return [{"age": int(age[i]),
             "sex": "male" if male[i] else "female",
             "smoking": "yes" if smoker[i] else "no",
             "mortality": "dead" if dead[i] else "alive",
             "diagnosis": CATEGORIES["diagnosis"][diagnosis[i]]}
            for i in range(n)]


def sample_missing(n: int, rng: np.random.Generator,
                   rate: float = MISSING_RATE) -> list[tuple[str, ...]]:
    """Which attributes of each subject are left out of ``clinical.csv`` (missing at random).

    Returns
    -------
    list of tuple of str
        Per subject, the names in :data:`ATTRIBUTES` whose cell is empty.
    """
    missing = rng.random((n, len(ATTRIBUTES))) < rate
    return [tuple(a for a, m in zip(ATTRIBUTES, row, strict=True) if m) for row in missing]
