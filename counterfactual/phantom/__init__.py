"""Synthetic chest-CT phantom cohorts with planted attribute effects, and their exact oracle.

``cfx phantom`` writes a cohort (:func:`write_phantom`); :class:`PhantomOracle` re-renders any
subject with any attribute changed and the same noise; :func:`score_difference` scores a model's
difference map against the oracle's.
"""

from cfx.counterfactual.phantom.cohort import PhantomSettings, make_truth, write_phantom
from cfx.counterfactual.phantom.effects import DEFAULT_EFFECTS, NO_EFFECTS, Effects, load_effects
from cfx.counterfactual.phantom.oracle import PhantomOracle, phantom_affine
from cfx.counterfactual.phantom.scoring import DifferenceScore, score_difference

__all__ = ["PhantomSettings", "make_truth", "write_phantom", "DEFAULT_EFFECTS", "NO_EFFECTS",
           "Effects", "load_effects", "PhantomOracle", "phantom_affine", "DifferenceScore",
           "score_difference"]
