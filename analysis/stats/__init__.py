"""Hypothesis tests on region metrics: paired counterfactual effects, noise floor, cohort tests.

Modules: :mod:`~analysis.stats.grid` (the sweep's complete subject x seed x value grid),
:mod:`~analysis.stats.paired` (per-subject Delta statistics), :mod:`~analysis.stats.noise_floor`,
:mod:`~analysis.stats.mixed`, :mod:`~analysis.stats.correction`, :mod:`~analysis.stats.effects`
(the one-call effect table of a sweep), :mod:`~analysis.stats.dose_response` (slopes and linearity
of a numeric attribute swept at 3 or more values) and :mod:`~analysis.stats.observational` (real
cohorts).
"""
