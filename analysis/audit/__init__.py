"""Counterfactual soundness audit on plain arrays (Monteiro et al., ICLR 2023, adapted).

Modules
-------
composition
    Distance between two volumes (null intervention and seed-to-seed scale).
locality
    How much of a difference map's change falls inside a region (minimality).
features
    Lung HU features of one CT (lung and its zones) for the attribute predictor.
predictors
    Ridge-penalised logistic (categorical) and linear (numeric) attribute predictors.
scores
    Accuracy, Mann-Whitney AUC and MAE of a predictor, with their chance levels.
verdicts
    Pass / warn / fail / not applicable of each criterion against stated thresholds.

Nothing here reads files: :mod:`cfx.counterfactual.audit` feeds it arrays from a run folder.
"""

from cfx.analysis.audit.composition import VolumeDistance, volume_distance
from cfx.analysis.audit.features import FEATURE_METRICS, feature_names, lung_features
from cfx.analysis.audit.locality import ChangeLocality, change_locality, pool_locality
from cfx.analysis.audit.predictors import (
    LinearPredictor,
    LogisticPredictor,
    cross_validated,
    fit_linear,
    fit_logistic,
)
from cfx.analysis.audit.scores import (
    ClassificationScores,
    RegressionScores,
    classification_scores,
    regression_scores,
    roc_auc,
)
from cfx.analysis.audit.verdicts import (
    DEFAULT_SPECIFICITY_RATIO,
    FAIL,
    NOT_APPLICABLE,
    OFF_LUNG_BAR_HU,
    PASS,
    VERDICTS,
    WARN,
    Threshold,
    Verdict,
    classification_verdict,
    composition_verdict,
    minimality_verdict,
    not_applicable,
    not_measured,
    off_lung_ratios,
    oracle_verdict,
    overall_verdict,
    regression_verdict,
    reversibility_verdict,
)

__all__ = ["VolumeDistance", "volume_distance", "FEATURE_METRICS", "feature_names",
           "lung_features", "ChangeLocality", "change_locality", "pool_locality",
           "LinearPredictor", "LogisticPredictor", "cross_validated", "fit_linear",
           "fit_logistic", "ClassificationScores", "RegressionScores", "classification_scores",
           "regression_scores", "roc_auc", "DEFAULT_SPECIFICITY_RATIO", "FAIL", "NOT_APPLICABLE",
           "OFF_LUNG_BAR_HU", "PASS", "VERDICTS", "WARN", "Threshold", "Verdict",
           "classification_verdict", "composition_verdict", "minimality_verdict",
           "not_applicable", "not_measured", "off_lung_ratios", "oracle_verdict",
           "overall_verdict", "regression_verdict", "reversibility_verdict"]
