"""Hypothesis tests on region metrics: paired counterfactual effects, noise floor, cohort tests.

Modules: :mod:`~cfx.analysis.stats.grid` (the sweep's complete subject x seed x value grid),
:mod:`~cfx.analysis.stats.paired` (per-subject Delta statistics),
:mod:`~cfx.analysis.stats.noise_floor`, :mod:`~cfx.analysis.stats.mixed`,
:mod:`~cfx.analysis.stats.correction`, :mod:`~cfx.analysis.stats.effects` (the one-call effect table
of a sweep), :mod:`~cfx.analysis.stats.dose_response` (slopes and linearity of a numeric attribute
swept at 3 or more values) and :mod:`~cfx.analysis.stats.observational` (real cohorts).
"""
