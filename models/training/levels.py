"""Label levels fitted in closed form, before a run's first step, for either architecture.

A generator with label levels sets each label's level as a linear map of its record's design
vector (the GAN's whitened fields, the diffusion model's flattened context). Fitted by gradient
steps beside the network, the levels had not reached the cohort's least-squares fit after 1200
steps and the network learnt to undo part of them (issue 16), so a new run fits them once: for
each label, the weighted least-squares regression of its mean CT in a row (window units) on the
row's design vector and an intercept, weighted by the label's voxel count in the row, so the fit
is the voxelwise least squares of the level map on the rows drawn.

The rows are whole subjects where the batch source gives them (a source's ``whole(rng,
batch_size)``, as ``cfx train``'s do), training patches otherwise. Patches are drawn around lung
voxels, so they cover the middle of the lungs more often than their ends: on 200 phantom
subjects (32³ patches of 64³) the patch-weighted lung mean of the planted IPF - CTD-ILD effect
was -16.3 HU where the whole lungs' is -11.4, and a GAN whose levels were fitted on patches
moved the lungs by 1.50 of the planted effect (issue 16). A patch's label means also vary with
where it lies (a lung level's standard error was 1.5 HU from 2048 patch rows).

A whole subject comes with its record as recorded: no field is dropped as a training row drops
it. Where attributes go together, a linear map cannot stand in for a dropped field's
expectation given the others, and rows with dropped fields bend the fitted contrasts: on a
200-subject ``cfx phantom`` folder whose dead were mostly IPF and older (least squares of the
lungs' means on the records: smoking +21.2, mortality +8.2, IPF - CTD-ILD -12.8 HU), a fit on
rows with each field dropped at 0.2 gave +18.0 to +19.5, +7.0 to +8.2 and -9.8 to -10.6 over
three draws, with or without a presence flag per field, and every subject equally often with
no field dropped +21.0, +8.1 and -12.5 (issue 16).

A fixed cohort's subjects are read equally often (:func:`level_draw`): drawn with replacement,
as a training step draws them, 1024 rows of 200 subjects read some subjects 12 times and
others never, and on that folder such draws scattered a lung contrast by up to 1.3 HU
around the cohort's least-squares fit (issue 16).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["fit_levels", "level_draw", "LEVEL_ROWS"]

LEVEL_ROWS = 1024  # source rows (whole subjects) a new run fits its label levels on


@torch.no_grad()
def fit_levels(draw: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
               rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each label's level regressed on the design, over at least ``rows`` rows.

    Parameters
    ----------
    draw : callable
        ``draw() -> (design, labels, clean)``, one batch: ``design`` (N, K) float, ``labels``
        (N, L, X, Y, Z) one-hot and ``clean`` (N, 1, X, Y, Z) the CT in window units.
    rows : int
        Rows to draw (whole batches, so perhaps a few more).

    Returns
    -------
    weight : Tensor of float32, shape (L, K)
    bias : Tensor of float32, shape (L,)
        On the CPU; a label absent from every row gets 0.
    """
    design, means, counts = [], [], []
    while sum(len(d) for d in design) < rows:
        vectors, labels, clean = draw()
        count = labels.sum((2, 3, 4))
        design.append(vectors.double().cpu())
        means.append(((clean * labels).sum((2, 3, 4)) / count.clamp(min=1)).double().cpu())
        counts.append(count.double().cpu())
    design = torch.cat(design)
    design = torch.cat([design, torch.ones(len(design), 1, dtype=design.dtype)], dim=1)
    means, weights = torch.cat(means), torch.cat(counts).sqrt()
    fit = torch.stack([torch.linalg.lstsq(design * weights[:, [label]],
                                          means[:, label] * weights[:, label],
                                          driver="gelsd").solution
                       for label in range(means.shape[1])]).float()  # (L, K + 1), bias last
    return fit[:, :-1], fit[:, -1]


def level_draw(source, rng: np.random.Generator, rows: int,
               batch_size: int) -> tuple[Callable[[], object], int]:
    """The batches a level fit reads from a batch source, and how many rows they hold.

    A fixed cohort (a source with a ``cohort_size`` and ``whole_of(indices)``) is read in
    ``rows // n`` passes over its ``n`` subjects (one at least), each pass in a new random
    order, so every subject counts equally; a stream gives new whole subjects (its
    ``whole(rng, batch_size)``), and a source without ``whole`` training rows.

    Returns
    -------
    draw : callable
        ``draw() -> batch``, the next ``batch_size`` rows (fewer at a cohort's end).
    rows : int
        Rows to fit on: ``rows`` itself, or the passes' rows for a fixed cohort.
    """
    size = getattr(source, "cohort_size", None)
    if size is None:
        whole = getattr(source, "whole", source)
        return (lambda: whole(rng, batch_size)), rows
    order = np.concatenate([rng.permutation(size) for _ in range(max(1, rows // size))])
    batches = iter(np.split(order, range(batch_size, len(order), batch_size)))
    return (lambda: source.whole_of(next(batches))), len(order)
