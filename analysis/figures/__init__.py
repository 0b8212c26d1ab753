"""Print figures of a sweep's statistics: arrays and tables in, PNG + vector PDF out.

One module per figure kind, each returning a :class:`matplotlib.figure.Figure` built without
pyplot's global state (Agg canvas), which :func:`~cfx.analysis.figures.output.save_figure` writes at
print resolution:

- :mod:`~cfx.analysis.figures.paired` — region metric per attribute value, one line per subject,
  with violins and mean ± confidence interval;
- :mod:`~cfx.analysis.figures.histogram` — HU histograms per value on shared bins, -950 HU marked;
- :mod:`~cfx.analysis.figures.noise` — per-subject effects beside the seed-vs-seed noise floor;
- :mod:`~cfx.analysis.figures.dose_response` — a region metric against a numeric attribute: one line
  per subject, the cohort mean ± CI per value, the noise floor band and the cohort slope;
- :mod:`~cfx.analysis.figures.statmap` — a voxelwise t map on slices with FWE-significant voxels
  outlined;
- :mod:`~cfx.analysis.figures.difference` — difference maps on slices, diverging
  colours centred on 0;
- :mod:`~cfx.analysis.figures.forest` — effect sizes with CIs across values, regions and metrics.
"""
