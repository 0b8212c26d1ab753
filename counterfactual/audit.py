"""The counterfactual soundness audit of a run folder (``cfx audit``).

Following the axiomatic soundness criteria for counterfactual image models (Monteiro et al.,
ICLR 2023), adapted to mask-conditioned 3D generation, :func:`run_audit` reads a run made by
``cfx sweep``, regenerates what it needs with the run's model, and writes ``RUN/audit/``:

- ``audit.json``: the summary below;
- ``composition.csv``: one row per regenerated volume (subject, seed, value, source,
  mean_abs_hu, max_abs_hu);
- ``volumes.csv``: one row per counterfactual CT with the attribute predictor's output
  (subject, seed, value, predicted, and ``p_<class>`` columns or nothing more for a number);
- ``differences.csv``: one row per difference map (subject, seed, value, reference,
  share_inside, mean_inside_hu (signed), mean_abs_inside_hu, mean_abs_outside_hu,
  max_abs_outside_hu and, on a phantom, oracle_region_mean_hu, oracle_region_mean_error_hu,
  oracle_rmse_hu, oracle_correlation).

``audit.json`` schema (``format`` ``"cfx-audit/2"``)::

    {
      "format": "cfx-audit/2", "cfx_version": str, "created": ISO time,
      "run": path, "verified": bool (false with --no-verify), "attribute": str,
      "values": [...], "reference": value, "seeds": [int],
      "subjects": int, "model": {"name": str, "content_hash": str[, "folder": path]},
      "run_cohort": path, "predictor_cohort": path or null,
      "verdict": "pass" | "warn" | "fail",
      "verdict_reason": str,
      "criteria": {
        "<criterion>": {
          "status": "measured" | "skipped" | "not applicable",
          "verdict": "pass" | "warn" | "fail" | "not applicable",
          "reason": str,
          "key_metric": "<metric>" or null,
          "thresholds": [{"metric": "<metric>", "better": "higher" | "lower",
                          "pass": number, "fail": number or null, "unit": str}],
          "metrics": {"<metric>": {"value": number or null, "unit": str,
                                   ["chance": number]}},
          "notes": [str]
        }
      },
      "files": [str]
    }

Verdicts (thresholds and why: :mod:`cfx.analysis.audit.verdicts`): a ``measured`` criterion is
judged on its key metric (``thresholds[0]``; a value at least as good as ``pass`` passes, one
strictly worse than ``fail`` fails, else it warns; ``fail`` null: it never fails); a ``skipped`` one
warns (the audit could not look; its last note is the reason); a ``not applicable`` one is left out
of the overall ``verdict``: ``fail`` if any criterion fails, else ``warn`` if any warns, else
``pass``. ``cfx-audit/1`` had no verdicts and a ``bar`` beside two minimality metrics instead.

Criteria and their metrics (``null`` where undefined, with a note saying why):

============================ =============================================================
criterion / metric           meaning
============================ =============================================================
composition                  null intervention: each subject regenerated alone at its own
                             recorded value (the reference value when missing or not
                             swept), with the run's noise seed of its first sweep seed
  null_mean_abs (HU)         mean over subjects of mean ``|regenerated - run's volume|``; 0
                             for a deterministic pairing
  null_max_abs (HU)          largest voxel ``|regenerated - run's volume|``
  seed_to_seed_mean_abs (HU) scale: mean ``|volume(seed s) - volume(first seed)|`` at one
                             value, over subjects, values and seeds ``s``
  seed_to_seed_max_abs (HU)  largest voxel of the same
  null_to_seed_ratio (1)     null_mean_abs / seed_to_seed_mean_abs: the key metric (with one
                             seed: null_mean_abs)
  subjects_at_own_value,     how many subjects were regenerated at their own value and at
  subjects_at_reference      the reference
effectiveness                an attribute predictor (ridge logistic for a categorical
                             attribute, ridge linear for a numeric one, on the 24 lung HU
                             features of :mod:`cfx.analysis.audit.features`) trained on the real
                             CTs of the predictor cohort predicts the *intervened* value of
                             every counterfactual CT of the run
  accuracy, auc (1)          categorical, with ``chance`` (commonest value's share; 0.5);
                             auc is the key metric
  mae (attribute unit),      numeric, ``mae`` with ``chance`` (always guessing the training
  correlation (1)            mean)
  mae_to_chance_ratio (1)    numeric: mae / its chance, the key metric
  real_ct_cv_*               the same scores of the predictor on the real CTs it is trained
                             on, out of fold (5 interleaved folds): its ceiling
  training_subjects,         sample sizes
  counterfactual_volumes
minimality                   locality of each difference map (value minus reference) with
                             respect to the lungs, pooled over maps (sums of ``|d|`` add)
  off_lung_to_effect_ratio   the key metric: per contrast (value vs reference, maps pooled),
  (1)                        mean ``|d|`` outside the lungs over ``|mean d|`` inside them; the
                             largest (least specific) contrast's; null when only the outside
                             changed
  worst_contrast_mean_abs_   the largest per-contrast mean ``|d|`` outside the lungs (an
  outside_lung (HU)          absolute floor beside the ratio)
  share_inside_lung (1)      share of the total ``|d|`` inside the lungs
  mean_abs_outside_lung (HU) mean ``|d|`` outside the lungs
  max_abs_outside_lung (HU)  largest ``|d|`` outside the lungs
  mean_abs_inside_lung (HU)  mean ``|d|`` inside the lungs (the size of the edit)
  worst_share_inside_lung,   the least local map
  worst_mean_abs_outside_lung
reversibility                runs edited from real CTs (``cfx sweep --from-ct``): each CT is
                             edited to another value (the run's counterfactual) and back to its
                             own at the run's strength and noise; not applicable to generation
                             from a mask (no source CT)
  round_trip_mean_abs (HU)   mean ``|back - real CT|``
  own_edit_mean_abs (HU)     mean ``|edit to its own value - real CT|``: the floor a single edit
                             already costs
  round_trip_to_own_edit_ratio  near 1 when going there and back costs no more than one edit;
                             the key metric
oracle_agreement             on a phantom cohort (``truth.json``): every difference map
                             against the exact oracle map of the same change
                             (:func:`cfx.counterfactual.phantom.score_difference`, lungs as the
                             region, whole volume for RMSE and correlation)
  relative_region_error (1)  the key metric: region_mean_abs_error / oracle_region_mean_abs
                             (null when nothing was planted; region_mean_abs_error is judged)
  region_mean_error (HU)     mean over maps of (model - oracle) lung-mean difference
  region_mean_abs_error (HU) mean over maps of its absolute value
  oracle_region_mean (HU)    mean over maps of the oracle's lung-mean difference
  oracle_region_mean_abs     mean over maps of its absolute value (the scale)
  (HU)
  rmse (HU)                  mean over maps of the voxelwise RMSE
  correlation (1)            mean over maps of the Pearson correlation (maps where either is
                             constant are left out and counted); judged beside the key metric
  correlation_undefined      how many maps had no defined correlation
============================ =============================================================
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cfx.analysis.audit import (
    DEFAULT_SPECIFICITY_RATIO,
    Verdict,
    change_locality,
    classification_scores,
    classification_verdict,
    composition_verdict,
    cross_validated,
    feature_names,
    fit_linear,
    fit_logistic,
    lung_features,
    minimality_verdict,
    not_applicable,
    not_measured,
    oracle_verdict,
    overall_verdict,
    pool_locality,
    regression_scores,
    regression_verdict,
    reversibility_verdict,
    volume_distance,
)
from cfx.counterfactual import __version__
from cfx.counterfactual.atomic import staged_dir
from cfx.counterfactual.attributes import (
    AttributeVocabulary,
    NumericAttribute,
    canonicalize_record,
)
from cfx.counterfactual.attributes import edit as edit_record
from cfx.counterfactual.cohort import Cohort, load_cohort
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.grid import fit_run_generator
from cfx.counterfactual.labels import LabelVocabulary
from cfx.counterfactual.phantom import PhantomOracle, score_difference
from cfx.counterfactual.phantom.oracle import TRUTH_FILE
from cfx.counterfactual.progress import track
from cfx.counterfactual.prompts import PromptTemplate
from cfx.counterfactual.run_folder import RunFolder
from cfx.counterfactual.sweep.executors import DEVICES, configure
from cfx.counterfactual.sweep.generators import Request, SamplingOptions, resolve_generator
from cfx.counterfactual.sweep.manifest import write_json
from cfx.counterfactual.volume import check_same_grid, read_labels, read_volume, write_volume

__all__ = ["AUDIT_FORMAT", "AUDIT_FOLDER", "CRITERIA", "AuditConfig", "run_audit"]

AUDIT_FORMAT = "cfx-audit/2"
AUDIT_FOLDER = "audit"
CRITERIA = ("composition", "effectiveness", "minimality", "reversibility", "oracle_agreement")
_FOLDS = 5


@dataclass(frozen=True)
class AuditConfig:
    """What to audit (already parsed).

    Attributes
    ----------
    run : Path
        Run folder made by ``cfx sweep``.
    cohort : Path, optional
        Cohort with real CTs to train the effectiveness predictor on; ``None`` uses the run's
        cohort when it has CTs and skips effectiveness (with a note) when it has none.
    attributes : AttributeVocabulary, optional
        The attributes of the user's ``--attributes`` file alone, added to the run's (each the
        run defines must be defined the same way); default: the run's.
    labels : LabelVocabulary, optional
        The user's ``--labels`` (its labels must be the run's; the lungs are its region
        ``lung``); default: the run's.
    model : str, optional
        Where the run's model is (a checkpoint folder) when its recorded name does not resolve;
        its content hash must be the run's.
    template : PromptTemplate, optional
        The user's ``--template``, which must be the run's; by default the run's (its
        manifest's text, or for a run made before cfx recorded it, the file it names).
    penalty : float
        L2 penalty of the attribute predictor (standardised features).
    specificity_ratio : float
        Minimality passes when off-lung mean ``|Δ|`` is at most this fraction of the lung
        effect ``|mean Δ|`` (in (0, 1]; as ``cfx stats --specificity-ratio``).
    device : str
        ``auto``, ``cpu`` or ``cuda``, for a learned model's regeneration (another device than
        the run's may differ by floating-point rounding).
    verify : bool
        Check every run volume against the sha256 its manifest recorded before the audit reads
        it (``False``: ``--no-verify``, recorded as ``"verified": false`` in ``audit.json``).
    quiet : bool
        No progress or notes on stderr.
    """

    run: Path
    cohort: Path | None = None
    attributes: AttributeVocabulary | None = None
    labels: LabelVocabulary | None = None
    model: str | None = None
    template: PromptTemplate | None = None
    penalty: float = 1.0
    specificity_ratio: float = DEFAULT_SPECIFICITY_RATIO
    device: str = "auto"
    verify: bool = True
    quiet: bool = False


def _criterion(status: str, metrics: dict | None = None, notes: list | None = None,
               verdict: Verdict | None = None) -> dict:
    """A criterion's entry; a skipped one warns and a not applicable one is not judged, both
    with their (last) note as the reason."""
    notes = list(notes or [])
    if verdict is None:
        verdict = (not_applicable if status == "not applicable" else not_measured)(notes[-1])
    return {"status": status, **verdict.to_json(), "metrics": metrics or {}, "notes": notes}


def _metric(value, unit: str, **extra) -> dict:
    number = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
    return {"value": number, "unit": unit, **extra}


def _run_cohort(run: RunFolder) -> Cohort:
    """The cohort the run was made from (the audit regenerates from it)."""
    if not run.cohort.exists():
        raise UserInputError(f"{run.root}: the run's cohort {run.cohort} no longer exists; the "
                             "audit regenerates from it (put it back at that path)")
    return load_cohort(run.cohort)


def _run_files(run: RunFolder) -> list[Path]:
    """Every CT and difference map of the run: the criteria read them all."""
    keys = [(s, v, k) for s in run.subjects for k in run.seeds for v in run.values]
    return ([run.ct_path(*key) for key in keys]
            + [run.difference_path(*key) for key in keys if key[1] != run.reference])


def _own_value(record: dict, run: RunFolder, vocabulary: AttributeVocabulary):
    """The subject's canonical recorded value, or None when missing or not allowed."""
    if run.attribute not in record:
        return None
    try:
        return vocabulary.attribute(run.attribute).canonical(record[run.attribute])
    except UserInputError:
        return None


def _regenerator(run: RunFolder, cohort: Cohort, config: AuditConfig):
    """The run's model, loaded to regenerate with the run's sampling, or None and why not."""
    model = run.model
    where = config.model or model.get("folder") or model["name"]
    if where == model.get("folder") and not Path(where).is_dir():
        where = model["name"]  # the run was moved to another machine
    try:
        sampling = run.manifest["settings"].get("sampling")  # a diffusion run's, as it ran
        generator = resolve_generator(where, cohort, None if sampling is None else
                                      SamplingOptions(sampling["guidance"], sampling["steps"],
                                                      sampling["from_ct"], sampling["strength"],
                                                      sampling["eta"],
                                                      sampling.get("keep_outside")))
        generator.check(cohort, run.attribute)
    except UserInputError as exc:
        if config.model is not None:  # the model the user named must serve, or nothing runs
            raise
        return None, (f"the run's model {where!r} cannot be loaded here ({exc}); give its "
                      "checkpoint folder with --model")
    if generator.content_hash != model["content_hash"] and config.model is not None:
        raise UserInputError(f"--model: {config.model} has content hash "
                             f"{generator.content_hash}, the run used {model['content_hash']} "
                             f"({model['name']}); give the checkpoint the run was made with")
    if generator.content_hash != model["content_hash"]:
        return None, (f"model {model['name']!r} now has content hash {generator.content_hash}, "
                      f"the run used {model['content_hash']}; regenerating with another model "
                      "says nothing")
    generator = fit_run_generator(generator, run.manifest)  # on the model grid, as the run ran
    configure(generator, config.device, 1)
    return generator, ""


def _start_value(run: RunFolder, subject, config: AuditConfig):
    """The subject's own value when it was swept, else the reference; and which it is."""
    own = _own_value(subject.record, run, run.attributes)
    return (own, "own") if own in run.values else (run.reference, "reference")


def _composition(run: RunFolder, cohort: Cohort, config: AuditConfig,
                 generator) -> tuple[dict, list[dict]]:
    notes = []
    template = run.template(config.template)
    seed = run.seeds[0]
    rows = []
    for subject_id in track(run.subjects, "audit: composition", quiet=config.quiet):
        subject = cohort.subject(subject_id)
        value, source = _start_value(run, subject, config)
        item = run.item(subject_id, value, seed)
        record = edit_record(subject.record, run.attribute, value, run.attributes)
        prompt = template.render(record, f"subject {subject_id}")
        if prompt != item["prompt"]:
            raise UserInputError(f"{run.root}: subject {subject_id}'s prompt is now {prompt!r} "
                                 f"but the run used {item['prompt']!r}; give the run's "
                                 "--attributes and --template")
        mask = run.mask(subject_id)
        own = canonicalize_record(subject.record, run.attributes, f"subject {subject_id}")
        volume = generator.generate(subject, mask, run.attribute,
                                    [Request.build(value, record, template, source=own)],
                                    item["noise_seed"])[0]
        distance = volume_distance(np.asarray(volume, np.float32),
                                   run.ct(subject_id, value, seed).data)
        rows.append({"subject": subject_id, "seed": seed, "value": value,
                     "source": source,
                     "mean_abs_hu": distance.mean_abs, "max_abs_hu": distance.max_abs})
    null_mean = float(np.mean([r["mean_abs_hu"] for r in rows]))
    metrics = {"null_mean_abs": _metric(null_mean, "HU"),
               "null_max_abs": _metric(max(r["max_abs_hu"] for r in rows), "HU")}
    seed_scale = _seed_distances(run, config.quiet)
    scale = None
    if seed_scale:
        scale = float(np.mean([d.mean_abs for d in seed_scale]))
        metrics |= {"seed_to_seed_mean_abs": _metric(scale, "HU"),
                    "seed_to_seed_max_abs": _metric(max(d.max_abs for d in seed_scale), "HU"),
                    "null_to_seed_ratio": _metric(null_mean / scale if scale > 0 else None, "1")}
    else:
        notes.append("the run has one seed: no seed-to-seed distance to scale the null "
                     "distance by (sweep with --seeds 0,1 for one)")
    own_count = sum(r["source"] == "own" for r in rows)
    metrics |= {"subjects_at_own_value": _metric(own_count, "subjects"),
                "subjects_at_reference": _metric(len(rows) - own_count, "subjects")}
    if own_count < len(rows):
        notes.append(f"{len(rows) - own_count} subjects have no recorded {run.attribute} among "
                     f"the swept values; they were regenerated at the reference "
                     f"{run.reference!r}")
    return _criterion("measured", metrics, notes, composition_verdict(null_mean, scale)), rows


def _seed_distances(run: RunFolder, quiet: bool) -> list:
    distances = []
    if len(run.seeds) < 2:
        return distances
    for subject in track(run.subjects, "audit: seed-to-seed", quiet=quiet):
        for value in run.values:
            first = run.ct(subject, value, run.seeds[0]).data
            distances += [volume_distance(run.ct(subject, value, seed).data, first)
                          for seed in run.seeds[1:]]
    return distances


def _predictor_cohort(config: AuditConfig, cohort: Cohort) -> tuple[Cohort | None, str]:
    """The cohort to train on, or None with the reason effectiveness is skipped."""
    if config.cohort is not None:
        chosen = load_cohort(config.cohort)
        if not any(s.ct is not None for s in chosen):
            raise UserInputError(f"--cohort: {config.cohort} has no CTs (ct/<subject>.nii.gz); "
                                 "effectiveness trains its attribute predictor on real CTs")
        return chosen, ""
    if not any(s.ct is not None for s in cohort):
        return None, (f"effectiveness needs real CTs to train its attribute predictor and the "
                      f"run's cohort {cohort.source} has none; give --cohort DIR with CTs "
                      "(the other criteria are reported)")
    return cohort, ""


def _features(ct: np.ndarray, labels: np.ndarray, affine: np.ndarray, vocabulary: LabelVocabulary,
              source: str) -> np.ndarray:
    lung = vocabulary.region_mask(labels, "lung", source)
    try:
        return lung_features(ct, lung, affine)
    except ValueError as exc:
        raise UserInputError(f"{source}: {exc}") from None


def _training_set(cohort: Cohort, run: RunFolder, config: AuditConfig, classes) -> tuple:
    """Features and targets of the predictor cohort's real CTs, with notes on who was left out."""
    rows, targets, notes, unusable = [], [], [], 0
    for subject in track(list(cohort), "audit: predictor features", quiet=config.quiet):
        value = _own_value(subject.record, run, run.attributes)
        if subject.ct is None or value is None or (classes is not None and value not in classes):
            unusable += 1
            continue
        ct = read_volume(subject.ct)
        mask = read_labels(subject.mask, run.labels)
        check_same_grid(ct, mask)
        rows.append(_features(ct.data, mask.data, ct.affine, run.labels, str(subject.ct)))
        targets.append(value)
    if unusable:
        allowed = "" if classes is None else f" among {', '.join(map(str, classes))}"
        notes.append(f"{unusable} of {len(cohort)} predictor-cohort subjects were left out (no "
                     f"CT, or no {run.attribute}{allowed})")
    features = np.array(rows) if rows else np.zeros((0, len(feature_names())))
    return features, targets, notes


def _effectiveness(run: RunFolder, cohort: Cohort | None, skip_reason: str,
                   config: AuditConfig) -> tuple[dict, list[dict]]:
    if cohort is None:
        return _criterion("skipped", notes=[skip_reason]), []
    kind = run.attributes.attribute(run.attribute)
    numeric = isinstance(kind, NumericAttribute)
    classes = None if numeric else tuple(run.values)
    features, targets, notes = _training_set(cohort, run, config, classes)
    if numeric and (len(targets) < 3 or len(set(targets)) < 2):
        return _criterion("skipped", notes=notes + [
            f"the predictor needs at least 3 training subjects with differing {run.attribute}, "
            f"got {len(targets)}"]), []
    counts = {c: targets.count(c) for c in classes or ()}
    if not numeric and min(counts.values()) < 2:
        return _criterion("skipped", notes=notes + [
            f"the predictor needs at least 2 training subjects of every swept value, got "
            f"{', '.join(f'{c}: {n}' for c, n in counts.items())}"]), []
    # Out-of-fold skill on the real CTs, then the model of all of them.
    folds = min(_FOLDS, len(targets))
    cv = cross_validated(features, targets, classes, config.penalty, folds)
    model = (fit_linear(features, targets, config.penalty) if numeric else
             fit_logistic(features, targets, classes, config.penalty))
    keys, test = [], []
    for subject in track(run.subjects, "audit: effectiveness", quiet=config.quiet):
        mask = run.mask(subject)
        for seed in run.seeds:
            for value in run.values:
                ct = run.ct(subject, value, seed)
                test.append(_features(ct.data, mask.data, ct.affine, run.labels, ct.source))
                keys.append({"subject": subject, "seed": seed, "value": value})
    test = np.array(test)
    truth = [k["value"] for k in keys]
    size = {"training_subjects": _metric(len(targets), "subjects"),
            "counterfactual_volumes": _metric(len(keys), "volumes")}
    if numeric:
        baseline = float(np.mean(targets))
        predicted = model.predict(test)
        scores = regression_scores(predicted, np.asarray(truth, float), baseline)
        real = regression_scores(cv, np.asarray(targets, float), baseline)
        unit = kind.unit
        metrics = {"mae": _metric(scores.mae, unit, chance=scores.chance_mae),
                   "mae_to_chance_ratio": _metric(scores.mae / scores.chance_mae
                                                  if scores.chance_mae > 0 else None, "1"),
                   "correlation": _metric(scores.correlation, "1", chance=0.0),
                   "real_ct_cv_mae": _metric(real.mae, unit, chance=real.chance_mae),
                   "real_ct_cv_correlation": _metric(real.correlation, "1", chance=0.0)}
        rows = [k | {"predicted": float(p)} for k, p in zip(keys, predicted, strict=True)]
        verdict = regression_verdict(scores.mae, scores.chance_mae, real.mae, real.chance_mae)
    else:
        probabilities = model.predict_proba(test)
        scores = classification_scores(probabilities, truth, classes)
        real = classification_scores(cv, targets, classes)
        metrics = {"accuracy": _metric(scores.accuracy, "fraction", chance=scores.chance_accuracy),
                   "auc": _metric(scores.auc, "1", chance=scores.chance_auc),
                   "real_ct_cv_accuracy": _metric(real.accuracy, "fraction",
                                                  chance=real.chance_accuracy),
                   "real_ct_cv_auc": _metric(real.auc, "1", chance=real.chance_auc)}
        best = np.argmax(probabilities, axis=1)
        rows = [k | {"predicted": classes[b]} | {f"p_{c}": float(p) for c, p in
                                                  zip(classes, probs, strict=True)}
                for k, b, probs in zip(keys, best, probabilities, strict=True)]
        verdict = classification_verdict(scores.auc, real.auc)
    notes.append(f"predictor: ridge {'linear' if numeric else 'logistic'} regression (penalty "
                 f"{config.penalty:g}) on {len(feature_names())} lung HU features, trained on "
                 f"{cohort.source}")
    return _criterion("measured", metrics | size, notes, verdict), rows


def _differences(run: RunFolder, config: AuditConfig,
                 oracle: PhantomOracle | None) -> tuple[list, list[dict]]:
    """Locality (and oracle scores) of every difference map; the localities with their value."""
    parts, rows = [], []
    for subject in track(run.subjects, "audit: difference maps", quiet=config.quiet):
        mask = run.mask(subject)
        lung = run.labels.region_mask(mask.data, "lung", mask.source)
        for seed in run.seeds:
            for value in run.values:
                if value == run.reference:
                    continue
                difference = run.difference(subject, value, seed).data
                part = change_locality(difference, lung)
                parts.append((value, part))
                row = {"subject": subject, "seed": seed, "value": value,
                       "reference": run.reference, "share_inside": part.share_inside,
                       "mean_inside_hu": part.mean_inside,
                       "mean_abs_inside_hu": part.mean_abs_inside,
                       "mean_abs_outside_hu": part.mean_abs_outside,
                       "max_abs_outside_hu": part.max_abs_outside}
                if oracle is not None:
                    expected = oracle.expected_difference(subject, run.attribute, value,
                                                          run.reference)
                    score = score_difference(difference, expected, lung)
                    row |= {"oracle_region_mean_hu": score.region_mean_expected,
                            "oracle_region_mean_error_hu": score.region_mean_error,
                            "oracle_rmse_hu": score.rmse,
                            "oracle_correlation": score.correlation}
                rows.append(row)
    return parts, rows


def _minimality(run: RunFolder, parts: list, rows: list[dict], specificity_ratio: float) -> dict:
    pooled = pool_locality(part for _, part in parts)
    contrasts = [value for value in run.values if value != run.reference]
    per_contrast = [pool_locality(part for v, part in parts if v == value)
                    for value in contrasts]
    verdict = minimality_verdict([f"{value} vs {run.reference}" for value in contrasts],
                                 [c.mean_abs_outside for c in per_contrast],
                                 [c.mean_inside for c in per_contrast], specificity_ratio)
    shares = [r["share_inside"] for r in rows if not math.isnan(r["share_inside"])]
    notes = []
    held = (run.sampling or {}).get("keep_outside")
    if held is not None:  # measured, but no evidence: the sweep held the outside to the CT
        verdict = not_applicable(f"by construction: the sweep held every voxel outside {held!r} "
                                 f"to the subject's CT (--keep-outside {held}), so the change "
                                 "outside it is 0 by design, not a finding")
        notes.append(f"--keep-outside {held}: minimality holds by construction")
    if len(shares) < len(rows):
        notes.append(f"{len(rows) - len(shares)} of {len(rows)} difference maps are all zero "
                     "(the model changed nothing): no share of change to locate")
    return _criterion("measured", {
        "off_lung_to_effect_ratio": _metric(verdict.value, "1"),
        "worst_contrast_mean_abs_outside_lung": _metric(
            max(c.mean_abs_outside for c in per_contrast), "HU"),
        "share_inside_lung": _metric(pooled.share_inside, "fraction"),
        "mean_abs_outside_lung": _metric(pooled.mean_abs_outside, "HU"),
        "max_abs_outside_lung": _metric(pooled.max_abs_outside, "HU"),
        "mean_abs_inside_lung": _metric(pooled.mean_abs_inside, "HU"),
        "worst_share_inside_lung": _metric(min(shares) if shares else None, "fraction"),
        "worst_mean_abs_outside_lung": _metric(max(r["mean_abs_outside_hu"] for r in rows),
                                               "HU"),
        "difference_maps": _metric(len(rows), "maps")}, notes, verdict)


def _oracle(cohort: Cohort) -> PhantomOracle | None:
    folder = cohort.source if cohort.source.is_dir() else cohort.source.parent
    return PhantomOracle.from_cohort(folder) if (folder / TRUTH_FILE).exists() else None


def _oracle_agreement(oracle: PhantomOracle | None, rows: list[dict]) -> dict:
    if oracle is None:
        return _criterion("not applicable", notes=[
            "the run's cohort is not a phantom (no truth.json): there is no exact counterfactual "
            "to compare with"])
    errors = np.array([r["oracle_region_mean_error_hu"] for r in rows])
    planted = np.array([r["oracle_region_mean_hu"] for r in rows])
    correlations = np.array([r["oracle_correlation"] for r in rows])
    defined = correlations[~np.isnan(correlations)]
    notes = []
    if defined.size < correlations.size:
        notes.append(f"{correlations.size - defined.size} of {correlations.size} maps have no "
                     "defined correlation (the model's or the oracle's map is constant, e.g. a "
                     "model that changes nothing); the mean is over the others")
    correlation = float(defined.mean()) if defined.size else None
    verdict = oracle_verdict(float(np.abs(errors).mean()), float(np.abs(planted).mean()),
                             correlation)
    return _criterion("measured", {
        "relative_region_error": _metric(verdict.value if verdict.key_metric ==
                                         "relative_region_error" else None, "1"),
        "region_mean_error": _metric(float(errors.mean()), "HU"),
        "region_mean_abs_error": _metric(float(np.abs(errors).mean()), "HU"),
        "oracle_region_mean": _metric(float(planted.mean()), "HU"),
        "oracle_region_mean_abs": _metric(float(np.abs(planted).mean()), "HU"),
        "rmse": _metric(float(np.mean([r["oracle_rmse_hu"] for r in rows])), "HU"),
        "correlation": _metric(correlation, "1"),
        "correlation_undefined": _metric(int(correlations.size - defined.size), "maps")},
        notes, verdict)


def _reversibility(run: RunFolder, cohort: Cohort, config: AuditConfig,
                   generator) -> tuple[dict, list[dict]]:
    """Edit each real CT to another value (the run's counterfactual) and back to its own, at the
    run's strength and noise, against the edit of the real CT to its own value (the floor)."""
    sampling = run.manifest["settings"].get("sampling") or {}
    if not sampling.get("from_ct"):
        return _criterion("not applicable", notes=[
            "reversibility (edit a real CT to another value and back) applies to "
            f"counterfactuals edited from a source CT (cfx sweep --from-ct); {run.model['name']} "
            "generated from a mask and noise, so there is no source CT to return to"]), []
    if generator is None:
        return _criterion("skipped", notes=["the run's model cannot regenerate here (see "
                                            "composition)"]), []
    template = run.template(config.template)
    seed = run.seeds[0]
    rows = []
    for subject_id in track(run.subjects, "audit: reversibility", quiet=config.quiet):
        subject = cohort.subject(subject_id)
        start, _ = _start_value(run, subject, config)
        other = next(v for v in run.values if v != start)
        record = edit_record(subject.record, run.attribute, start, run.attributes)
        shown = edit_record(canonicalize_record(subject.record, run.attributes),
                            run.attribute, other, run.attributes)  # what the edited CT shows
        mask = run.mask(subject_id)
        with tempfile.TemporaryDirectory(prefix="cfx-audit-") as scratch:
            edited = write_volume(Path(scratch) / "edited.nii.gz",
                                  run.ct(subject_id, other, seed).data, mask.affine)
            back = generator.generate(dataclasses.replace(subject, ct=edited), mask,
                                      run.attribute,
                                      [Request.build(start, record, template, source=shown)],
                                      run.item(subject_id, start, seed)["noise_seed"])[0]
        real = read_volume(subject.ct).data
        round_trip = volume_distance(np.asarray(back, np.float32), real)
        floor = volume_distance(run.ct(subject_id, start, seed).data, real)
        rows.append({"subject": subject_id, "seed": seed, "start": start, "via": other,
                     "round_trip_mean_abs_hu": round_trip.mean_abs,
                     "own_edit_mean_abs_hu": floor.mean_abs})
    trip = float(np.mean([r["round_trip_mean_abs_hu"] for r in rows]))
    floor = float(np.mean([r["own_edit_mean_abs_hu"] for r in rows]))
    return _criterion("measured", {
        "round_trip_mean_abs": _metric(trip, "HU"),
        "own_edit_mean_abs": _metric(floor, "HU"),
        "round_trip_to_own_edit_ratio": _metric(trip / floor if floor > 0 else None, "1"),
        "strength": _metric(sampling.get("strength"), "1")}, [],
        reversibility_verdict(trip, floor)), rows


def _finite(value):
    """JSON has no NaN: undefined numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def run_audit(config: AuditConfig,
              note: Callable[[str], None] | None = None) -> dict:
    """Audit the run folder ``config.run`` and write ``config.run/audit/``.

    Parameters
    ----------
    config : AuditConfig
    note : callable, optional
        Called with each one-line note of a skipped criterion (the CLI prints them on stderr).

    Returns
    -------
    dict
        The content of ``audit.json`` (schema in the module docstring).

    Raises
    ------
    UserInputError
        A bad penalty or device; the run is missing, incomplete or damaged, its cohort is gone,
        ``--cohort`` has no CTs, a file cannot be read, or the run's prompts cannot be rebuilt.
    """
    # 1. Check inputs: the options, the run, its cohort and the predictor cohort.
    if not (isinstance(config.penalty, int | float) and math.isfinite(config.penalty)
            and config.penalty > 0):
        raise UserInputError(f"--penalty: must be a positive number, got {config.penalty}")
    if not (isinstance(config.specificity_ratio, int | float)
            and 0 < config.specificity_ratio <= 1):
        raise UserInputError(f"--specificity-ratio: must be in (0, 1], got "
                             f"{config.specificity_ratio}")
    if config.device not in DEVICES:
        raise UserInputError(f"--device: {config.device!r} is not one of {', '.join(DEVICES)}")
    run = RunFolder.open(config.run, config.labels, verify=config.verify,
                          attributes=config.attributes)
    run.require_complete(" before auditing it")
    run.check(_run_files(run))  # every volume the criteria read matches the manifest
    cohort = _run_cohort(run)
    predictor_cohort, skip_reason = _predictor_cohort(config, cohort)
    if skip_reason and note is not None:
        note(skip_reason)
    # 2. Composition: regenerate each subject at its own value; seed-to-seed as the scale.
    generator, unavailable = _regenerator(run, cohort, config)
    if generator is None:
        composition, composition_rows = _criterion("skipped", notes=[unavailable]), []
    else:
        composition, composition_rows = _composition(run, cohort, config, generator)
    reversibility, reversibility_rows = _reversibility(run, cohort, config, generator)
    # 3. Effectiveness: an attribute predictor trained on real CTs reads the counterfactuals.
    effectiveness, volume_rows = _effectiveness(run, predictor_cohort, skip_reason, config)
    # 4. Minimality and oracle agreement: one pass over the difference maps.
    oracle = _oracle(cohort)
    parts, difference_rows = _differences(run, config, oracle)
    criteria = {"composition": composition, "effectiveness": effectiveness,
                "minimality": _minimality(run, parts, difference_rows, config.specificity_ratio),
                "reversibility": reversibility,
                "oracle_agreement": _oracle_agreement(oracle, difference_rows)}
    verdict, reason = overall_verdict({name: c["verdict"] for name, c in criteria.items()})
    # 5. Write RUN/audit/ (replacing an earlier audit only once everything succeeded).
    tables = {"composition.csv": composition_rows, "volumes.csv": volume_rows,
              "differences.csv": difference_rows, "reversibility.csv": reversibility_rows}
    audit = {
        "format": AUDIT_FORMAT, "cfx_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": str(run.root), "verified": config.verify, "attribute": run.attribute,
        "values": list(run.values), "reference": run.reference, "seeds": list(run.seeds),
        "subjects": len(run.subjects),
        "model": run.model,
        "run_cohort": str(cohort.source),
        "predictor_cohort": None if predictor_cohort is None else str(predictor_cohort.source),
        "verdict": verdict, "verdict_reason": reason,
        "criteria": _finite(criteria),
        "files": ["audit.json", *(name for name, rows in tables.items() if rows)],
    }
    with staged_dir(run.root / AUDIT_FOLDER, replace=True) as out:
        for name, rows in tables.items():
            if rows:
                pd.DataFrame(rows).to_csv(out / name, index=False)
        write_json(out / "audit.json", audit)
    return audit
