"""A sweep's projected time, said before the first group runs.

A learned model served on its training grid (:class:`cfx.counterfactual.grid.ResampledGenerator`)
projects each group from its network: the passes its runner makes over one volume on the model
grid (windows x sampler steps x guidance branches, counted as MONAI's sliding window lays them
out) times the seconds of one pass over one window, timed once per window size on the device
the model sits on (:meth:`cfx.counterfactual.sweep.learned.LearnedModel.projected_seconds`).
Resampling and writing the volumes come on top. Only CPU runs are projected: the model is
timed before the executor moves it, so a GPU run would be projected at CPU speed.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["projected_seconds", "projection_lines", "SAY_OVER_S", "WARN_OVER_S"]

SAY_OVER_S = 60.0  # a projection above this is printed
WARN_OVER_S = 600.0  # ... and above this on the CPU, warned about


def projected_seconds(plan, jobs: Sequence) -> float | None:
    """Projected seconds of ``jobs`` (:class:`~cfx.counterfactual.sweep.executors.GroupJob`) run one
    after another, or None when the model cannot say (no grid plan, or a generator without
    ``projected_seconds``, such as the phantom oracle).

    Parameters
    ----------
    plan : GridPlan or None
        How the sweep fits its cohort to the model's grid
        (:func:`cfx.counterfactual.grid.plan_grid`).
    jobs : sequence of GroupJob
        The groups still to generate.
    """
    if plan is None or not jobs:
        return None
    estimate = getattr(plan.generator.inner, "projected_seconds", None)
    if estimate is None:
        return None
    return float(sum(estimate(plan.fits[job.subject.id].model_shape, job.requests)
                     for job in jobs))


def projection_lines(seconds: float | None, groups: int, device: str) -> list[str]:
    """What to print before the sweep: nothing up to :data:`SAY_OVER_S`, the projected time
    above it, and a warning line above :data:`WARN_OVER_S` on the CPU."""
    if seconds is None or seconds <= SAY_OVER_S:
        return []
    lines = [f"projected time: about {_duration(seconds)} for {groups} subject x seed groups on "
             f"{device} (network passes x one timed window; resampling and writing add to it)"]
    if device == "cpu" and seconds > WARN_OVER_S:
        lines.append(f"warning: this sweep is projected to run over "
                     f"{WARN_OVER_S / 60:.0f} minutes on the CPU; a GPU (--device cuda), fewer "
                     "subjects or --seeds, or (diffusion) fewer --steps shorten it")
    return lines


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"
