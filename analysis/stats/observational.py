"""Observational cohort tests on real CTs, and their concordance with counterfactual effects.

Two-sample comparisons of a region metric between the levels of a categorical attribute (Welch t,
Mann-Whitney U), ordinary least squares with covariates through a statsmodels formula for any
attribute, and a side-by-side table of a counterfactual effect and the observational one.
Rows missing the outcome, the attribute or a covariate are left out (complete cases) and the
number used is reported. :func:`cohort_effects` runs both kinds of test for every region x metric
of a tidy region table of real CTs.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import special, stats
from statsmodels.tools.sm_exceptions import SingularMatrixWarning

from cfx.analysis.stats.correction import adjust_pvalues

__all__ = [
    "group_tests",
    "ols_effect",
    "cohort_effects",
    "concordance",
    "scale_effects",
    "concordance_by_value",
    "EFFECT_COLUMNS",
]

EFFECT_COLUMNS = ("estimate", "ci_low", "ci_high")


def group_tests(
    frame: pd.DataFrame,
    outcome: str,
    attribute: str,
    reference: Hashable | None = None,
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Welch t-test and Mann-Whitney U of ``outcome`` between each level and the reference level.

    Parameters
    ----------
    frame : DataFrame
        One row per subject.
    outcome : str
        Numeric column, e.g. lung mean HU.
    attribute : str
        Categorical column (two levels, or several: each is compared with ``reference``).
    reference : hashable, optional
        Reference level; by default the first level in sorted order.
    confidence : float
        Level of the Welch CI of the difference, in (0, 1).

    Returns
    -------
    DataFrame
        One row per non-reference level: ``attribute``, ``level``, ``reference``, ``n_level``,
        ``n_reference``, ``mean_level``, ``mean_reference``, ``estimate`` (mean difference level -
        reference, in the outcome's unit), ``ci_low``, ``ci_high`` (Welch-Satterthwaite), ``t``,
        ``df``, ``p_welch``, ``u`` (Mann-Whitney U of the level's sample), ``p_mannwhitney``
        (two-sided).

    Raises
    ------
    ValueError
        If a column is missing or ``outcome`` is not numeric, fewer than two levels remain,
        ``reference`` is not a level, a level has fewer than 2 subjects, or the outcome is
        constant within both compared groups.
    """
    data = _complete(frame, [outcome, attribute])
    _check_numeric(data, outcome)
    _check_confidence(confidence)
    levels = sorted(pd.unique(data[attribute]).tolist())
    if len(levels) < 2:
        raise ValueError(f"attribute: {attribute!r} has levels {levels} in the complete rows; "
                         f"a comparison needs at least 2")
    reference = levels[0] if reference is None else reference
    if reference not in levels:
        raise ValueError(f"reference: {reference!r} is not a level of {attribute!r} {levels}")
    groups = {lv: data.loc[data[attribute] == lv, outcome].to_numpy(np.float64) for lv in levels}
    small = {lv: g.size for lv, g in groups.items() if g.size < 2}
    if small:
        raise ValueError(f"attribute: level(s) {small} of {attribute!r} have fewer than 2 "
                         f"subjects with an {outcome!r} value; each group needs at least 2")
    base = groups[reference]
    rows = []
    for level in (lv for lv in levels if lv != reference):
        sample = groups[level]
        if np.ptp(sample) == 0 and np.ptp(base) == 0:
            raise ValueError(f"outcome: {outcome!r} is constant within both {level!r} and "
                             f"{reference!r}; the Welch t-test is undefined")
        welch = stats.ttest_ind(sample, base, equal_var=False)
        interval = welch.confidence_interval(confidence)
        mwu = stats.mannwhitneyu(sample, base, alternative="two-sided")
        rows.append({
            "attribute": attribute, "level": level, "reference": reference,
            "n_level": sample.size, "n_reference": base.size,
            "mean_level": sample.mean(), "mean_reference": base.mean(),
            "estimate": sample.mean() - base.mean(),
            "ci_low": float(interval.low), "ci_high": float(interval.high),
            "t": float(welch.statistic), "df": float(welch.df), "p_welch": float(welch.pvalue),
            "u": float(mwu.statistic), "p_mannwhitney": float(mwu.pvalue),
        })
    return pd.DataFrame(rows)


def ols_effect(
    frame: pd.DataFrame,
    outcome: str,
    attribute: str,
    covariates: Sequence[str] = (),
    *,
    reference: Hashable | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Effect of an attribute on an outcome by OLS with covariates (statsmodels formula).

    The model is ``outcome ~ attribute + covariate_1 + ...``; a non-numeric (or boolean)
    attribute or covariate enters as ``C(...)`` (treatment coding). Columns are renamed
    internally, so any column name works.

    Parameters
    ----------
    frame : DataFrame
        One row per subject.
    outcome : str
        Numeric column.
    attribute : str
        Numeric (effect per unit of it) or categorical (effect of each level vs ``reference``).
    covariates : sequence of str
        Adjustment columns, e.g. ``("age", "sex")``.
    reference : hashable, optional
        Reference level of a categorical attribute; the first in sorted order by default.
    confidence : float
        Level of the CIs, in (0, 1).

    Returns
    -------
    DataFrame
        One row per attribute coefficient: ``attribute``, ``level`` (the level compared with
        ``reference``, or None for a numeric attribute), ``reference`` (None if numeric),
        ``estimate`` (in outcome units, per attribute unit if numeric), ``ci_low``, ``ci_high``
        (t-based), ``p``, ``n`` (complete rows used).

    Raises
    ------
    ValueError
        If a column is missing or repeated, ``outcome`` is not numeric, a categorical attribute
        has fewer than 2 levels or lacks ``reference``, there are no more complete rows than
        coefficients, or the attribute and covariates are collinear.
    """
    names = [outcome, attribute, *covariates]
    if len(set(names)) != len(names):
        raise ValueError(f"covariates: outcome, attribute and covariates must be distinct "
                         f"columns, got {names}")
    data = _complete(frame, names)
    _check_numeric(data, outcome)
    _check_confidence(confidence)
    safe = data.rename(columns={outcome: "y", attribute: "a",
                                **{c: f"c{i}" for i, c in enumerate(covariates)}})
    categorical = _is_categorical(safe["a"])
    if categorical:
        levels = sorted(pd.unique(safe["a"]).tolist())
        reference = levels[0] if reference is None else reference
        if len(levels) < 2 or reference not in levels:
            raise ValueError(f"reference: {reference!r} must be one of at least 2 levels of "
                             f"{attribute!r}, got levels {levels}")
        order = [reference, *(lv for lv in levels if lv != reference)]
        safe["a"] = pd.Categorical(safe["a"], categories=order)
    terms = ["C(a)" if categorical else "a"]
    terms += [f"C(c{i})" if _is_categorical(safe[f"c{i}"]) else f"c{i}"
              for i in range(len(covariates))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularMatrixWarning)  # raised as an error below
        fit = smf.ols("y ~ " + " + ".join(terms), safe).fit()
    n_coefficients = fit.model.exog.shape[1]
    if len(safe) <= n_coefficients:
        raise ValueError(f"frame: {len(safe)} complete rows for {n_coefficients} coefficients; "
                         f"OLS needs more rows than coefficients")
    if fit.model.rank < n_coefficients:
        raise ValueError(f"covariates: {attribute!r} and {list(covariates)} are collinear in the "
                         f"complete rows (design rank {fit.model.rank} < {n_coefficients} "
                         f"coefficients); drop a redundant covariate")
    interval = fit.conf_int(alpha=1.0 - confidence)
    if categorical:
        params = [p for p in fit.params.index if p.startswith("C(a)[")]
        labels = order[1:]
    else:
        params, labels = ["a"], [None]
    return pd.DataFrame({
        "attribute": attribute,
        "level": labels,
        "reference": reference if categorical else None,
        "estimate": fit.params[params].to_numpy(),
        "ci_low": interval.loc[params, 0].to_numpy(),
        "ci_high": interval.loc[params, 1].to_numpy(),
        "p": fit.pvalues[params].to_numpy(),
        "n": int(fit.nobs),
    })


def cohort_effects(
    table: pd.DataFrame,
    clinical: pd.DataFrame,
    attribute: str,
    covariates: Sequence[str] = (),
    *,
    reference: Hashable | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Observational effect of an attribute on every region x metric of a cohort's real CTs.

    For each region x metric: the naive comparison (Welch t and Mann-Whitney U of each level vs
    ``reference`` for a categorical attribute, plain OLS for a numeric one) and OLS adjusted for
    ``covariates``. Subjects missing the attribute or a covariate are left out (complete cases;
    ``n`` says how many remain). A metric for which a test is undefined (e.g. constant within
    both groups) gets NaN and the reason in ``note``.

    Parameters
    ----------
    table : DataFrame
        Tidy region metrics, one row per subject x region x metric: columns ``subject``,
        ``region``, ``metric``, ``estimate`` and optionally ``unit`` (as
        :func:`cfx.analysis.regions.region_table` returns, one volume per subject).
    clinical : DataFrame
        One row per subject: column ``subject``, ``attribute`` and the ``covariates``.
    attribute : str
        Categorical (level vs reference) or numeric (effect per unit) column of ``clinical``.
    covariates : sequence of str
        Adjustment columns of ``clinical`` (e.g. ``("age", "sex")``); none gives plain OLS.
    reference : hashable, optional
        Reference level of a categorical attribute; the first in sorted order by default.
    confidence : float
        Level of every CI, in (0, 1).

    Returns
    -------
    DataFrame
        One row per level (None for a numeric attribute) x region x metric, in the metric's
        unit (per attribute unit when numeric):

        ============================== ========================================================
        column                         meaning
        ============================== ========================================================
        level, reference, region,      what is compared (reference None when numeric)
        metric, unit
        n_level, n_reference           subjects in the compared groups (NaN when numeric)
        naive_estimate, naive_ci_low,  unadjusted: Welch difference of means and its CI
        naive_ci_high                  (categorical), OLS slope without covariates (numeric)
        p_welch, p_mannwhitney         two-sample tests (categorical only)
        estimate, ci_low, ci_high, p   OLS with ``covariates``
        p_holm                         ``p`` Holm-adjusted over the whole table
        n                              complete subjects in the adjusted OLS
        covariates                     the adjustment, comma-separated
        note                           why a statistic is undefined
        ============================== ========================================================

    Raises
    ------
    ValueError
        If a column is missing, a subject has two rows for one region x metric or is absent from
        ``clinical``, or the attribute cannot be compared at all (fewer than 2 levels, a level
        with fewer than 2 subjects, an unknown ``reference``, collinear covariates, too few
        subjects for the coefficients).
    """
    _check_confidence(confidence)
    missing = [c for c in ("subject", "region", "metric", "estimate") if c not in table.columns]
    missing += [c for c in ("subject", attribute, *covariates) if c not in clinical.columns]
    if missing:
        raise ValueError(f"table, clinical: missing column(s) {missing}")
    keys = ["subject", "region", "metric"]
    if table.duplicated(keys).any():
        raise ValueError("table: a subject has several rows for one region x metric; expected one "
                         "volume per subject")
    unknown = sorted(set(table["subject"]) - set(clinical["subject"]))
    if unknown:
        raise ValueError(f"clinical: no row for subject(s) {unknown[:5]} of the region table")
    units = (table.drop_duplicates(["region", "metric"]).set_index(["region", "metric"])["unit"]
             if "unit" in table.columns else None)
    wide = table.pivot(index="subject", columns=["region", "metric"], values="estimate")
    columns = list(table.drop_duplicates(["region", "metric"])[["region", "metric"]]
                   .itertuples(index=False, name=None))
    frame = clinical.set_index("subject").loc[wide.index, [attribute, *covariates]]
    categorical = _is_categorical(frame[attribute].dropna())
    if categorical:
        counts = frame[attribute].value_counts()
        small = {lv: int(n) for lv, n in counts.items() if n < 2}
        if small:
            raise ValueError(f"attribute: level(s) {small} of {attribute!r} have fewer than 2 "
                             f"subjects; each compared group needs at least 2")
        reference = sorted(counts.index)[0] if reference is None else reference
    # structural problems (levels, reference, collinearity, too few rows) are errors for every
    # outcome alike: checked once, on the first
    ols_effect(frame.assign(_y=wide[columns[0]].to_numpy()), "_y", attribute, covariates,
               reference=reference, confidence=confidence)
    blocks = []
    for region, metric in columns:
        data = frame.assign(_y=wide[(region, metric)].to_numpy())
        block, note = _one_outcome(data, attribute, covariates, reference, categorical,
                                   confidence)
        block.insert(0, "unit", "" if units is None else units[(region, metric)])
        block.insert(0, "metric", metric)
        block.insert(0, "region", region)
        block["covariates"] = ",".join(covariates)
        block["note"] = note
        blocks.append(block)
    result = pd.concat(blocks, ignore_index=True)
    result.insert(result.columns.get_loc("p") + 1, "p_holm", adjust_pvalues(result["p"], "holm"))
    front = ["level", "reference", "region", "metric", "unit"]
    return result[front + [c for c in result.columns if c not in front]]


def _one_outcome(data, attribute, covariates, reference, categorical, confidence):
    """Naive and adjusted rows of one outcome column ``_y``; NaN rows with a note if undefined."""
    notes = []
    try:
        adjusted = _by_level(ols_effect(data, "_y", attribute, covariates, reference=reference,
                                        confidence=confidence))
    except ValueError as exc:
        notes.append(f"OLS: {exc}")
        adjusted = {}
    try:
        naive = _by_level(group_tests(data, "_y", attribute, reference, confidence=confidence)
                          if categorical else ols_effect(data, "_y", attribute,
                                                         confidence=confidence))
    except ValueError as exc:
        notes.append(f"naive: {exc}")
        naive = {}
    rows = []
    for level in list(adjusted) or list(naive) or [None]:
        row = {"level": level, "reference": reference if categorical else None,
               "n_level": np.nan, "n_reference": np.nan,
               "naive_estimate": np.nan, "naive_ci_low": np.nan, "naive_ci_high": np.nan,
               "p_welch": np.nan, "p_mannwhitney": np.nan,
               "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n": 0}
        if level in naive:
            got = naive[level]
            row.update(naive_estimate=got["estimate"], naive_ci_low=got["ci_low"],
                       naive_ci_high=got["ci_high"])
            if categorical:
                row.update({k: got[k] for k in ("n_level", "n_reference", "p_welch",
                                                "p_mannwhitney")})
        if level in adjusted:
            got = adjusted[level]
            row.update({k: got[k] for k in ("estimate", "ci_low", "ci_high", "p")},
                       n=int(got["n"]))
        rows.append(row)
    return pd.DataFrame(rows), "; ".join(notes)


def _by_level(result: pd.DataFrame) -> dict:
    return dict(zip(result["level"], result.to_dict("records"), strict=True))


def concordance(
    counterfactual: pd.DataFrame,
    observational: pd.DataFrame,
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Counterfactual and observational effects side by side, with difference and ratio.

    Rows are matched on the index (e.g. ``(region, metric)`` or the attribute level); set the
    index of both tables to the same keys first.

    Parameters
    ----------
    counterfactual, observational : DataFrame
        Each with columns ``estimate``, ``ci_low``, ``ci_high`` (the same confidence level,
        the same unit), e.g. rows of :func:`cfx.analysis.stats.effects.effect_table` and of
        :func:`ols_effect`.
    confidence : float
        The level of both input CIs, used to recover standard errors, in (0, 1).

    Returns
    -------
    DataFrame
        Index: the shared keys. Columns ``cf_estimate``, ``cf_ci_low``, ``cf_ci_high``,
        ``obs_estimate``, ``obs_ci_low``, ``obs_ci_high``; ``difference`` (cf - obs) with
        ``difference_ci_low``/``difference_ci_high`` (normal approximation treating the two
        estimates as independent, each SE = CI width / (2 z)); ``ratio`` (cf / obs, unitless;
        NaN when the observational estimate is 0); ``cis_overlap`` (bool); ``note``.

    Raises
    ------
    ValueError
        If a table lacks a column or the two share no index entry.
    """
    _check_confidence(confidence)
    for name, table in (("counterfactual", counterfactual), ("observational", observational)):
        missing = [c for c in EFFECT_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{name}: missing column(s) {missing}; expected "
                             f"{list(EFFECT_COLUMNS)}")
    joined = (counterfactual[list(EFFECT_COLUMNS)].add_prefix("cf_")
              .join(observational[list(EFFECT_COLUMNS)].add_prefix("obs_"), how="inner"))
    if joined.empty:
        raise ValueError(f"observational: shares no index entry with counterfactual (indices "
                         f"{list(counterfactual.index)[:5]} and {list(observational.index)[:5]});"
                         f" set both indices to the same keys")
    z = special.ndtri(0.5 + confidence / 2.0)
    se_cf = (joined["cf_ci_high"] - joined["cf_ci_low"]) / (2.0 * z)
    se_obs = (joined["obs_ci_high"] - joined["obs_ci_low"]) / (2.0 * z)
    difference = joined["cf_estimate"] - joined["obs_estimate"]
    half = z * np.sqrt(se_cf ** 2 + se_obs ** 2)
    zero = joined["obs_estimate"] == 0
    joined["difference"] = difference
    joined["difference_ci_low"] = difference - half
    joined["difference_ci_high"] = difference + half
    joined["ratio"] = (joined["cf_estimate"] / joined["obs_estimate"].where(~zero)).astype(float)
    joined["cis_overlap"] = ((joined["cf_ci_low"] <= joined["obs_ci_high"])
                             & (joined["obs_ci_low"] <= joined["cf_ci_high"]))
    joined["note"] = np.where(zero, "observational estimate is 0: ratio undefined", "")
    return joined


def scale_effects(observed: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Per-unit effects times ``factor`` (a contrast in the attribute's unit), CIs kept ordered.

    Parameters
    ----------
    observed : DataFrame
        Rows of :func:`cohort_effects`: columns ``estimate``, ``ci_low``, ``ci_high`` and their
        ``naive_`` counterparts, each per unit of the attribute (e.g. HU per year).
    factor : float
        The contrast, e.g. ``value - reference`` = 20 years; negative flips each CI's ends.

    Returns
    -------
    DataFrame
        A copy with those six columns multiplied by ``factor`` (``ci_low <= ci_high`` kept);
        other columns unchanged.
    """
    scaled = observed.copy()
    for prefix in ("", "naive_"):
        low, high = scaled[f"{prefix}ci_low"] * factor, scaled[f"{prefix}ci_high"] * factor
        scaled[f"{prefix}estimate"] *= factor
        scaled[f"{prefix}ci_low"], scaled[f"{prefix}ci_high"] = (np.minimum(low, high),
                                                                 np.maximum(low, high))
    return scaled


def concordance_by_value(effects: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    """Counterfactual vs observational effect per swept value x region x metric.

    A numeric attribute's observational slope (every ``level`` NaN) is scaled to each value's
    contrast ``value - reference`` (:func:`scale_effects`); a categorical one is matched level by
    level (as text). Values without an observational row are left out.

    Parameters
    ----------
    effects : DataFrame
        Paired counterfactual effects, one row per value x region x metric: columns ``value``,
        ``reference``, ``region``, ``metric``, ``unit``, ``estimate``, ``ci_low``, ``ci_high``
        (e.g. :func:`cfx.analysis.stats.specificity.specificity_table`).
    observed : DataFrame
        Rows of :func:`cohort_effects`: ``level`` (NaN for a numeric attribute), ``region``,
        ``metric``, the adjusted and ``naive_`` estimates with their 95 % CIs.

    Returns
    -------
    DataFrame
        Columns ``value``, ``reference``, ``region``, ``metric``, ``unit``, then those of
        :func:`concordance` and ``naive_estimate``, ``naive_ci_low``, ``naive_ci_high`` (the
        observational unadjusted effect on the same contrast), one row per matched value x
        region x metric, in the order of ``effects``' values.

    Raises
    ------
    ValueError
        If no value of ``effects`` has an observational row.
    """
    blocks = []
    keys = ["region", "metric"]
    for value, cf in effects.groupby("value", sort=False):
        reference = cf["reference"].iloc[0]
        if observed["level"].isna().all():  # numeric attribute: effect per unit
            obs = scale_effects(observed, float(value) - float(reference))
        else:
            obs = observed[observed["level"].astype(str) == str(value)]
        if obs.empty:
            continue
        joined = concordance(cf.set_index(keys), obs.set_index(keys)).reset_index()
        joined.insert(2, "unit", cf.set_index(keys).loc[list(zip(joined["region"],
                                                                   joined["metric"],
                                                                   strict=True)), "unit"].values)
        naive = obs.set_index(keys)[["naive_estimate", "naive_ci_low", "naive_ci_high"]]
        joined = joined.join(naive, on=keys)
        joined.insert(0, "reference", reference)
        joined.insert(0, "value", value)
        blocks.append(joined)
    if not blocks:
        values = list(effects["value"].unique())
        raise ValueError(f"none of the run's values {values} is a level of the cohort's "
                         f"attribute {sorted(map(str, observed['level'].unique()))}")
    return pd.concat(blocks, ignore_index=True)


def _complete(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing column(s) {missing}; columns are {list(frame.columns)}")
    return frame[columns].dropna()


def _check_numeric(data: pd.DataFrame, outcome: str) -> None:
    if not pd.api.types.is_numeric_dtype(data[outcome]) or data[outcome].dtype == bool:
        raise ValueError(f"outcome: {outcome!r} has dtype {data[outcome].dtype}; expected a "
                         f"numeric column")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")


def _is_categorical(column: pd.Series) -> bool:
    return column.dtype == bool or not pd.api.types.is_numeric_dtype(column)
