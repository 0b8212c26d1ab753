"""Verdicts of the counterfactual soundness audit: numbers in, ``pass`` / ``warn`` / ``fail`` /
``not applicable`` out, each with its thresholds and a one-line reason.

Every criterion is judged on a key metric against two stated thresholds: at least as good as
the *pass* threshold passes, strictly worse than the *fail* threshold fails, anything between
warns. A criterion that could not be measured (no CTs, a model that cannot be loaded) warns: an
audit that could not look is not a pass. The overall verdict is ``fail`` if any criterion fails,
else ``warn`` if any warns, else ``pass``; ``not applicable`` criteria are left out.

Thresholds and why
------------------
========================== ======================= ===== ===== ===================================
criterion                  key metric              pass  fail  why
========================== ======================= ===== ===== ===================================
composition                null_to_seed_ratio      ≤0.05 >0.25 Regenerating a subject at its own
                           (null_mean_abs /                    value with the run's noise must
                           seed_to_seed_mean_abs)              give the run's volume back; 5 % of
                                                               a new noise draw is rounding and
                                                               device arithmetic, more than a
                                                               quarter (the specificity ratio) is
                                                               a model that changes what it was
                                                               not asked to.
composition, one seed      null_mean_abs (HU)      ≤0.5  —     No seed-to-seed scale: half a HU is
                                                               the rounding of int16 HU storage;
                                                               above it the audit cannot judge
                                                               (warn), it never fails.
effectiveness, categorical auc (chance 0.5)        ≥0.75 <0.6  0.75 is halfway from chance to a
                                                               perfect read-back; below 0.6 the
                                                               predictor trained on real CTs
                                                               barely tells the intervened values
                                                               apart (within 0.1 of a coin).
effectiveness, numeric     mae_to_chance_ratio     ≤0.5  >0.9  The predictor's error on the
                           (mae / chance_mae)                  intervened values is at most half
                                                               of always guessing the training
                                                               mean; above 0.9 it is within 10 %
                                                               of guessing.
reversibility              round_trip_to_own_      ≤1.5  >2    Two edits whose errors are each the
                           edit_ratio                          single-edit floor and independent
                                                               cost about √2 ≈ 1.41 of one; more
                                                               than 2 (the two errors adding up)
                                                               means the way back cannot undo the
                                                               way there.
minimality                 off_lung_to_effect_     ≤0.25 >1    Mean ``|Δ|`` outside the lungs over
                           ratio (worst contrast)              ``|mean Δ|`` inside them: the
                                                               specificity ratio of ``cfx stats``
                                                               (``--specificity-ratio``, default
                                                               0.25); above 1 the change is no
                                                               larger where the attribute acts
                                                               than where it cannot.
minimality                 worst_contrast_mean_    ≤5    —     An absolute floor as well: more
                           abs_outside_lung (HU)               than 5 HU off the lungs warns even
                                                               beside a large effect.
oracle_agreement           relative_region_error   ≤0.25 >0.5  The lung-mean error against the
                           (region_mean_abs_error              exact oracle over the oracle's own
                           / oracle_region_                    ``|effect|``: a quarter (the
                           mean_abs)                           specificity ratio) passes; off by
                                                               more than half the effect fails.
oracle_agreement           correlation             ≥0.5  <0.2  Voxelwise agreement of the maps;
                                                               noise of a stochastic model caps
                                                               it below 1 (the bundled diffusion
                                                               model reaches 0.65), below 0.2 the
                                                               pattern is not the oracle's. The
                                                               verdict is the worse of the two.
oracle_agreement, no       region_mean_abs_error   ≤0.5  >5    A planted null: the lung mean must
planted effect             (HU)                                stay within rounding (0.5 HU); more
                                                               than 5 HU is an invented effect.
========================== ======================= ===== ===== ===================================

Everything here takes plain numbers; :mod:`cfx.counterfactual.audit` measures them on a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cfx.analysis.stats.specificity import DEFAULT_RATIO

__all__ = ["PASS", "WARN", "FAIL", "NOT_APPLICABLE", "VERDICTS", "DEFAULT_SPECIFICITY_RATIO",
           "OFF_LUNG_BAR_HU", "Threshold", "Verdict", "overall_verdict", "not_applicable",
           "not_measured", "composition_verdict", "classification_verdict",
           "regression_verdict", "reversibility_verdict", "off_lung_ratios",
           "minimality_verdict", "oracle_verdict"]

PASS, WARN, FAIL, NOT_APPLICABLE = "pass", "warn", "fail", "not applicable"
VERDICTS = (PASS, WARN, FAIL, NOT_APPLICABLE)
DEFAULT_SPECIFICITY_RATIO = DEFAULT_RATIO  # cfx stats --specificity-ratio's default
OFF_LUNG_BAR_HU = 5.0
_ROUNDING_HU = 0.5  # int16 HU storage rounds by at most half a HU
_SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True)
class Threshold:
    """Pass and fail thresholds of one metric.

    Attributes
    ----------
    metric : str
        The metric's name in ``audit.json``.
    better : {"higher", "lower"}
        Which direction is sound.
    pass_at : float
        At least this good passes (``>=`` for higher, ``<=`` for lower).
    fail_at : float or None
        Strictly worse than this fails; ``None``: never fails (only warns).
    unit : str
        The metric's unit (``"1"`` for a ratio).
    """

    metric: str
    better: str
    pass_at: float
    fail_at: float | None
    unit: str = "1"

    def judge(self, value: float | None) -> str:
        """``pass``, ``warn`` or ``fail`` for ``value``; an undefined value (None/NaN) warns."""
        if value is None or math.isnan(value):
            return WARN
        sign = 1.0 if self.better == "higher" else -1.0
        if sign * value >= sign * self.pass_at:
            return PASS
        if self.fail_at is not None and sign * value < sign * self.fail_at:
            return FAIL
        return WARN

    def text(self) -> str:
        """E.g. ``pass ≥ 0.75, fail < 0.6`` or ``pass ≤ 5 HU, else warn``."""
        good, bad = ("≥", "<") if self.better == "higher" else ("≤", ">")
        unit = "" if self.unit == "1" else f" {self.unit}"
        tail = "else warn" if self.fail_at is None else f"fail {bad} {self.fail_at:g}{unit}"
        return f"pass {good} {self.pass_at:g}{unit}, {tail}"

    def to_json(self) -> dict:
        """``{"metric", "better", "pass", "fail", "unit"}`` (``fail`` null: never fails)."""
        return {"metric": self.metric, "better": self.better, "pass": self.pass_at,
                "fail": self.fail_at, "unit": self.unit}

    @classmethod
    def from_json(cls, entry: Mapping) -> Threshold:
        """The threshold :meth:`to_json` wrote."""
        return cls(entry["metric"], entry["better"], entry["pass"], entry["fail"], entry["unit"])


@dataclass(frozen=True)
class Verdict:
    """One criterion's verdict.

    Attributes
    ----------
    verdict : str
        One of :data:`VERDICTS`.
    reason : str
        One line saying why, with the numbers.
    key_metric : str or None
        The metric the verdict rests on (None when nothing was measured).
    value : float or None
        Its value (None when undefined).
    thresholds : tuple of Threshold
        Every threshold that was applied, the key metric's first.
    """

    verdict: str
    reason: str
    key_metric: str | None = None
    value: float | None = None
    thresholds: tuple[Threshold, ...] = ()

    def to_json(self) -> dict:
        """``{"verdict", "reason", "key_metric", "thresholds": [...]}`` for ``audit.json``."""
        return {"verdict": self.verdict, "reason": self.reason, "key_metric": self.key_metric,
                "thresholds": [t.to_json() for t in self.thresholds]}


def _defined(value) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _worse(*verdicts: str) -> str:
    return max(verdicts, key=_SEVERITY.__getitem__)


def overall_verdict(verdicts: Mapping[str, str]) -> tuple[str, str]:
    """The audit's verdict from its criteria's: any fail fails, else any warn warns.

    Parameters
    ----------
    verdicts : mapping of str to str
        Criterion name to its verdict (one of :data:`VERDICTS`).

    Returns
    -------
    verdict : str
        ``pass``, ``warn`` or ``fail`` (``not applicable`` criteria are left out; with none
        judged at all it is ``pass``).
    reason : str
        One line naming the failing and warning criteria.

    Raises
    ------
    ValueError
        If a verdict is not one of :data:`VERDICTS`.
    """
    wrong = {name: v for name, v in verdicts.items() if v not in VERDICTS}
    if wrong:
        raise ValueError(f"verdicts: {wrong} is not one of {', '.join(VERDICTS)}")
    failing = [name for name, v in verdicts.items() if v == FAIL]
    warning = [name for name, v in verdicts.items() if v == WARN]
    judged = sum(v != NOT_APPLICABLE for v in verdicts.values())
    parts = [f"{label}: {', '.join(names)}" for label, names in
             (("fail", failing), ("warn", warning)) if names]
    if failing:
        return FAIL, "; ".join(parts)
    if warning:
        return WARN, "; ".join(parts)
    return PASS, f"all {judged} applicable criteria pass"


def not_applicable(reason: str) -> Verdict:
    """The verdict of a criterion that does not apply to the run (ignored overall)."""
    return Verdict(NOT_APPLICABLE, reason)


def not_measured(reason: str) -> Verdict:
    """The verdict of a criterion that applies but could not be measured: a warning."""
    return Verdict(WARN, f"not measured: {reason}")


def composition_verdict(null_mean_abs: float, seed_to_seed_mean_abs: float | None) -> Verdict:
    """Judge the null intervention by its distance to the seed-to-seed scale.

    Parameters
    ----------
    null_mean_abs : float
        Mean ``|regenerated - run's volume|`` at each subject's own value, in HU.
    seed_to_seed_mean_abs : float or None
        Mean ``|volume(seed s) - volume(first seed)|`` at one value, in HU; None for a run with
        one seed.

    Returns
    -------
    Verdict
        Key metric ``null_to_seed_ratio``; ``null_mean_abs`` with one seed (or a zero scale).
    """
    scale = _defined(seed_to_seed_mean_abs)
    if scale is None or scale <= 0:
        threshold = Threshold("null_mean_abs", "lower", _ROUNDING_HU, None, "HU")
        verdict = threshold.judge(null_mean_abs)
        reason = (f"the null intervention moves the volume by {null_mean_abs:.3g} HU "
                  f"({'within' if verdict == PASS else 'beyond'} int16 rounding, "
                  f"{_ROUNDING_HU:g} HU)")
        if verdict != PASS:
            reason += "; no seed-to-seed scale to judge it by (sweep with --seeds 0,1)"
        return Verdict(verdict, reason, "null_mean_abs", null_mean_abs, (threshold,))
    threshold = Threshold("null_to_seed_ratio", "lower", 0.05, 0.25)
    ratio = null_mean_abs / scale
    verdict = threshold.judge(ratio)
    meaning = {PASS: "the model gives the run's volume back",
               WARN: "regeneration drifts more than rounding",
               FAIL: "the model changes what it was not asked to"}[verdict]
    return Verdict(verdict, f"null intervention {null_mean_abs:.3g} HU is {ratio:.3g} of the "
                            f"seed-to-seed {scale:.3g} HU: {meaning}",
                   "null_to_seed_ratio", ratio, (threshold,))


def _blind(kind: str) -> str:
    return (f"the predictor is no better than chance on the real CTs it was trained on ({kind}, "
            "out of fold): the attribute may not show in lung HU, so effectiveness cannot be "
            "judged")


def classification_verdict(auc: float | None, real_auc: float | None) -> Verdict:
    """Judge a categorical attribute's read-back by the predictor's AUC on the counterfactuals.

    Parameters
    ----------
    auc : float or None
        AUC of the predictor on the counterfactual CTs' intervened values (chance 0.5).
    real_auc : float or None
        Its out-of-fold AUC on the real CTs it was trained on; at or below 0.5 the predictor is
        blind and the verdict is ``warn``.

    Returns
    -------
    Verdict
        Key metric ``auc``.
    """
    threshold = Threshold("auc", "higher", 0.75, 0.6)
    auc, real = _defined(auc), _defined(real_auc)
    if real is None or real <= 0.5:
        return Verdict(WARN, _blind(f"AUC {'undefined' if real is None else f'{real:.2f}'}"),
                       "auc", auc, (threshold,))
    if auc is None:
        return Verdict(WARN, "the counterfactuals' AUC is undefined", "auc", None, (threshold,))
    verdict = threshold.judge(auc)
    meaning = {PASS: "the intervened values are read back from the counterfactuals",
               WARN: "the intervened values are read back only weakly",
               FAIL: "the counterfactuals do not show the intervened values"}[verdict]
    return Verdict(verdict, f"AUC {auc:.2f} (chance 0.5, real-CT ceiling {real:.2f}): {meaning}",
                   "auc", auc, (threshold,))


def regression_verdict(mae: float | None, chance_mae: float, real_mae: float | None,
                       real_chance_mae: float) -> Verdict:
    """Judge a numeric attribute's read-back by the predictor's error beside chance.

    Parameters
    ----------
    mae, chance_mae : float
        Mean absolute error of the predictor on the counterfactuals' intervened values, and of
        always guessing the training mean, in the attribute's unit.
    real_mae, real_chance_mae : float
        The same out of fold on the real CTs it was trained on; ``real_mae >= real_chance_mae``
        is a blind predictor and the verdict is ``warn``.

    Returns
    -------
    Verdict
        Key metric ``mae_to_chance_ratio`` (``mae / chance_mae``).
    """
    threshold = Threshold("mae_to_chance_ratio", "lower", 0.5, 0.9)
    mae, real = _defined(mae), _defined(real_mae)
    ratio = None if mae is None or not chance_mae > 0 else mae / chance_mae
    if real is None or real >= real_chance_mae:
        shown = "undefined" if real is None else f"{real:.3g}"
        return Verdict(WARN, _blind(f"MAE {shown} vs chance {real_chance_mae:.3g}"),
                       "mae_to_chance_ratio", ratio, (threshold,))
    if ratio is None:
        return Verdict(WARN, "no chance error to scale the counterfactuals' MAE by (every "
                             "intervened value is the training mean)",
                       "mae_to_chance_ratio", None, (threshold,))
    verdict = threshold.judge(ratio)
    meaning = {PASS: "the intervened values are read back from the counterfactuals",
               WARN: "the intervened values are read back only weakly",
               FAIL: "the counterfactuals do not show the intervened values"}[verdict]
    return Verdict(verdict, f"MAE {mae:.3g} is {ratio:.2f} of chance {chance_mae:.3g}: {meaning}",
                   "mae_to_chance_ratio", ratio, (threshold,))


def reversibility_verdict(round_trip_mean_abs: float, own_edit_mean_abs: float) -> Verdict:
    """Judge an edit there and back against the cost of one edit.

    Parameters
    ----------
    round_trip_mean_abs : float
        Mean ``|back - real CT|`` after editing to another value and back, in HU.
    own_edit_mean_abs : float
        Mean ``|edit to its own value - real CT|``, in HU: the floor one edit costs.

    Returns
    -------
    Verdict
        Key metric ``round_trip_to_own_edit_ratio``.
    """
    threshold = Threshold("round_trip_to_own_edit_ratio", "lower", 1.5, 2.0)
    if not own_edit_mean_abs > 0:
        exact = round_trip_mean_abs <= _ROUNDING_HU
        return Verdict(PASS if exact else WARN,
                       f"one edit is exact (floor 0 HU) and the round trip costs "
                       f"{round_trip_mean_abs:.3g} HU" + ("" if exact else
                                                          ": no floor to scale it by"),
                       "round_trip_to_own_edit_ratio", None, (threshold,))
    ratio = round_trip_mean_abs / own_edit_mean_abs
    verdict = threshold.judge(ratio)
    meaning = {PASS: "going there and back costs about two independent edits",
               WARN: "the way back undoes the edit only in part",
               FAIL: "the way back does not undo the edit"}[verdict]
    return Verdict(verdict, f"round trip {round_trip_mean_abs:.3g} HU is {ratio:.2f}× one edit "
                            f"({own_edit_mean_abs:.3g} HU): {meaning}",
                   "round_trip_to_own_edit_ratio", ratio, (threshold,))


def off_lung_ratios(outside_mean_abs: np.ndarray, inside_mean: np.ndarray) -> np.ndarray:
    """Off-lung change relative to the effect, per contrast.

    Parameters
    ----------
    outside_mean_abs : ndarray of float, shape (n_contrasts,)
        Mean ``|Δ|`` outside the lungs, in HU.
    inside_mean : ndarray of float, shape (n_contrasts,)
        Mean ``Δ`` (signed) inside the lungs, in HU.

    Returns
    -------
    ndarray of float, shape (n_contrasts,)
        ``outside_mean_abs / |inside_mean|``: 0 where nothing changed anywhere, ``inf`` where
        only the outside changed.
    """
    outside = np.asarray(outside_mean_abs, dtype=float)
    effect = np.abs(np.asarray(inside_mean, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = outside / effect
    ratios[(outside == 0) & (effect == 0)] = 0.0
    return ratios


def minimality_verdict(contrasts: Sequence[str], outside_mean_abs: Sequence[float],
                       inside_mean: Sequence[float],
                       specificity_ratio: float = DEFAULT_SPECIFICITY_RATIO,
                       bar_hu: float = OFF_LUNG_BAR_HU) -> Verdict:
    """Judge off-lung change relative to the lung effect, on the least specific contrast.

    Parameters
    ----------
    contrasts : sequence of str, length n_contrasts
        Labels, e.g. ``"80 vs 60"``.
    outside_mean_abs : sequence of float, length n_contrasts
        Mean ``|Δ|`` outside the lungs per contrast (pooled over subjects and seeds), in HU.
    inside_mean : sequence of float, length n_contrasts
        Mean ``Δ`` (signed) inside the lungs per contrast, in HU: the effect.
    specificity_ratio : float
        Pass threshold of ``off_lung_to_effect_ratio`` (in (0, 1]); above 1 fails.
    bar_hu : float
        Off-lung mean ``|Δ|`` above this warns even when the ratio passes, in HU.

    Returns
    -------
    Verdict
        Key metric ``off_lung_to_effect_ratio`` of the worst contrast (``inf`` when only the
        outside changed: ``value`` None), then ``worst_contrast_mean_abs_outside_lung``.

    Raises
    ------
    ValueError
        If the lengths differ or there is no contrast, or ``specificity_ratio`` is not in (0, 1].
    """
    if not 0 < specificity_ratio <= 1:
        raise ValueError(f"specificity_ratio: must be in (0, 1], got {specificity_ratio}")
    if not len(contrasts) == len(outside_mean_abs) == len(inside_mean) or not len(contrasts):
        raise ValueError(f"contrasts, outside_mean_abs, inside_mean: expected equal non-zero "
                         f"lengths, got {len(contrasts)}, {len(outside_mean_abs)}, "
                         f"{len(inside_mean)}")
    ratio_threshold = Threshold("off_lung_to_effect_ratio", "lower", specificity_ratio, 1.0)
    bar = Threshold("worst_contrast_mean_abs_outside_lung", "lower", bar_hu, None, "HU")
    thresholds = (ratio_threshold, bar)
    outsides, effects = np.asarray(outside_mean_abs, float), np.asarray(inside_mean, float)
    if not (outsides > 0).any():
        largest = float(np.abs(effects).max())
        return Verdict(PASS, "no change outside the lungs" + (
            f" beside a lung effect of up to {largest:.3g} HU" if largest > 0 else
            " (nor inside: whether there should be is effectiveness's question)"),
            "off_lung_to_effect_ratio", 0.0, thresholds)
    ratios = off_lung_ratios(outsides, effects)
    worst = int(np.argmax(ratios))
    ratio, outside = float(ratios[worst]), float(outsides[worst])
    effect, label = float(effects[worst]), contrasts[worst]
    if math.isinf(ratio):
        return Verdict(FAIL, f"{label}: {outside:.3g} HU of change outside the lungs and none "
                             "inside", "off_lung_to_effect_ratio", None, thresholds)
    verdict = ratio_threshold.judge(ratio)
    worst_outside = float(outsides.max())
    meaning = {PASS: "the change is specific to the lungs",
               WARN: "the change leaks outside the lungs",
               FAIL: "the change is no larger in the lungs than outside them (a global shift or "
                     "a leak)"}[verdict]
    reason = (f"{label}: off-lung {outside:.3g} HU is {ratio:.2f} of the lung effect "
              f"{effect:+.3g} HU: {meaning}")
    if verdict == PASS and bar.judge(worst_outside) == WARN:
        verdict = WARN
        reason += f", but off-lung change reaches {worst_outside:.3g} HU (> {bar_hu:g} HU)"
    return Verdict(verdict, reason, "off_lung_to_effect_ratio", ratio, thresholds)


def oracle_verdict(region_mean_abs_error: float, oracle_region_mean_abs: float,
                   correlation: float | None) -> Verdict:
    """Judge the difference maps against the exact oracle's.

    Parameters
    ----------
    region_mean_abs_error : float
        Mean over maps of ``|model - oracle|`` lung-mean difference, in HU.
    oracle_region_mean_abs : float
        Mean over maps of ``|oracle lung-mean difference|``, in HU: the planted effect's size.
    correlation : float or None
        Mean voxelwise Pearson correlation of model and oracle maps (None when undefined, e.g.
        a model that changes nothing: judged on the region error alone).

    Returns
    -------
    Verdict
        Key metric ``relative_region_error`` (``region_mean_abs_error /
        oracle_region_mean_abs``) with ``correlation``; with no planted effect
        (``oracle_region_mean_abs`` 0), ``region_mean_abs_error`` in HU.
    """
    if not oracle_region_mean_abs > 0:
        threshold = Threshold("region_mean_abs_error", "lower", _ROUNDING_HU, OFF_LUNG_BAR_HU,
                              "HU")
        verdict = threshold.judge(region_mean_abs_error)
        return Verdict(verdict, f"no planted effect; the model's lung mean moves "
                                f"{region_mean_abs_error:.3g} HU",
                       "region_mean_abs_error", region_mean_abs_error, (threshold,))
    error = Threshold("relative_region_error", "lower", 0.25, 0.5)
    agreement = Threshold("correlation", "higher", 0.5, 0.2)
    relative = region_mean_abs_error / oracle_region_mean_abs
    correlation = _defined(correlation)
    verdict = error.judge(relative)
    reason = (f"lung-mean error {region_mean_abs_error:.3g} HU is {relative:.2f} of the planted "
              f"{oracle_region_mean_abs:.3g} HU")
    if correlation is None:
        reason += "; voxelwise correlation undefined (a constant map)"
    else:
        verdict = _worse(verdict, agreement.judge(correlation))
        reason += f"; voxelwise correlation {correlation:.2f}"
    return Verdict(verdict, reason, "relative_region_error", relative, (error, agreement))
